"""Converters refuse bad input naming the file and line, and are atomic: one killed
half-way (mid-file or between files) leaves no file a later run takes as finished, and the
next run redoes the conversion to the same files. Part of the bad-input catalogue (see
tests/test_errors.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recbole_diffrec.convert import convert_release, convert_sequences
from recbole_diffrec.errors import BadInputError, MissingInputError


def _python(*args: str, cwd: Path):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True
    )


# ------------------------------------------------------------------------ converters
def _release(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pairs = np.array([[u, (u + k) % 9] for u in range(6) for k in range(3)], np.int64)
    for split in ("train", "valid", "test"):
        np.save(folder / f"{split}_list.npy", pairs)
    return folder


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


RELEASE_CASES = [
    ("truncated npy", _truncate, "not a readable .npy"),
    ("text as npy", lambda p: p.write_text("0 1\n1 2\n"), "not a readable .npy"),
    (
        "object array",
        lambda p: np.save(p, np.array([[0, "a"]], dtype=object), allow_pickle=True),
        "not a readable .npy",
    ),
]


@pytest.mark.parametrize(
    "spoil, words", [c[1:] for c in RELEASE_CASES], ids=[c[0] for c in RELEASE_CASES]
)
def test_bad_release_file_is_named(tmp_path, spoil, words):
    folder = _release(tmp_path / "release")
    spoil(folder / "test_list.npy")
    with pytest.raises(BadInputError, match=words) as err:
        convert_release(folder, tmp_path / "out")
    assert "test_list.npy" in str(err.value)
    assert not (tmp_path / "out" / "out.train.inter").exists()  # checked before writing


SEQUENCE_CASES = [
    (
        "not json",
        '{"user": 1, "items": [1, 2]}\n{"user": 2, items}\n',
        ":2",
        "expected",
    ),
    ("no items", '{"user": 1, "items": [1, 2]}\n{"user": 2}\n', ":2", "expected"),
    ("user a word", '{"user": "ann", "items": [1, 2]}\n', ":1", "user: got 'ann'"),
    ("items a word", '{"user": 1, "items": "1 2"}\n', ":1", "integer ids"),
    ("float item", '{"user": 1, "items": [1, 2.5]}\n', ":1", "integer ids"),
    ("one item", '{"user": 1, "items": [3]}\n', ":1", "length >= 2"),
    ("item 0", '{"user": 1, "items": [0, 3]}\n', ":1", "padding"),
    (
        "repeated user",
        '{"user": 1, "items": [1, 2]}\n\n{"user": 1, "items": [3, 4]}\n',
        ":3",
        "more than one line",
    ),
    ("empty", "\n\n", "", "holds no sequences"),
    ("latin-1", '{"user": 1, "items": [1, 2]}\n{"user": 2, "\xe9"}\n', ":2", "UTF-8"),
]


@pytest.mark.parametrize(
    "text, line, words",
    [c[1:] for c in SEQUENCE_CASES],
    ids=[c[0] for c in SEQUENCE_CASES],
)
def test_bad_sequence_file_is_named_with_its_line(tmp_path, text, line, words):
    path = tmp_path / "seq.jsonl"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(BadInputError) as err:
        convert_sequences(path, tmp_path / "out")
    assert f"seq.jsonl{line}" in str(err.value) and words in str(err.value)


def test_missing_sequence_file(tmp_path):
    with pytest.raises(MissingInputError, match="sequence_file: .*nope.jsonl"):
        convert_sequences(tmp_path / "nope.jsonl", tmp_path / "out")


# --------------------------------------------------------- converters are atomic
KILLER = """
import os, signal, sys
import numpy as np
import recbole_diffrec.convert as convert
mode, release, out = sys.argv[1:]
real_savetxt = np.savetxt
calls = []
def savetxt(handle, table, **kwargs):
    calls.append(1)
    if mode == "mid-file" and len(calls) == 2:
        real_savetxt(handle, table[: len(table) // 2], **kwargs)
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # half of valid written
    if mode == "between-files" and len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # train renamed, valid not begun
    real_savetxt(handle, table, **kwargs)
convert.np.savetxt = savetxt
convert.ensure_release_converted(
    {"release_path": release, "data_path": out, "dataset": "ds",
     "benchmark_filename": ["train", "valid", "test"], "sequence_file": None}
)
"""


@pytest.mark.parametrize("mode", ["mid-file", "between-files"])
def test_killed_converter_is_redone_not_half_read(tmp_path, mode):
    from recbole_diffrec.convert import ensure_release_converted

    release = _release(tmp_path / "release")
    out = tmp_path / "out"
    done = _python("-c", KILLER, mode, str(release), str(out), cwd=tmp_path)
    assert done.returncode == -9, done.stderr
    finished = sorted(p.name for p in out.glob("*.inter"))
    assert finished == ["ds.train.inter"]  # valid never appears half-written
    ensure_release_converted(
        {
            "release_path": str(release),
            "data_path": str(out),
            "dataset": "ds",
            "benchmark_filename": ["train", "valid", "test"],
            "sequence_file": None,
        }
    )
    clean = convert_release(release, tmp_path / "clean", "ds")
    for split, path in clean.items():
        assert (out / path.name).read_text() == path.read_text()


@pytest.mark.parametrize(
    "text, line, words",
    [c[1:] for c in SEQUENCE_CASES],
    ids=[c[0] for c in SEQUENCE_CASES],
)
def test_converter_command_prints_one_error_line(tmp_path, capsys, text, line, words):
    from recbole_diffrec.convert import main

    path = tmp_path / "seq.jsonl"
    path.write_bytes(text.encode("latin-1"))
    code = main(["--input", str(path), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert f"seq.jsonl{line}" in err and words in err


@pytest.mark.parametrize(
    "spoil, words", [c[1:] for c in RELEASE_CASES], ids=[c[0] for c in RELEASE_CASES]
)
def test_release_converter_command_prints_one_error_line(
    tmp_path, capsys, spoil, words
):
    from recbole_diffrec.convert import main

    folder = _release(tmp_path / "release")
    spoil(folder / "test_list.npy")
    code = main(["--input", str(folder), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: ") and "test_list.npy" in err and words in err


def test_converter_debug_flag_shows_the_traceback(tmp_path):
    from recbole_diffrec.convert import main

    path = tmp_path / "seq.jsonl"
    path.write_text('{"user": 1, "items": [0, 2]}\n')
    with pytest.raises(BadInputError, match="padding"):
        main(["--input", str(path), "--output", str(tmp_path / "out"), "--debug"])
