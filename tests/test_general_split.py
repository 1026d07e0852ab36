"""Sequence files as general datasets, split per user in time order (DiffRec's 7:1:2): the
exact counts of the rounding rule, time order within each split, disjoint splits that
together are the (deduplicated) sequence, ratio and input errors, the dataset yaml hook and
one RecBole run that loads the three files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from recbole_diffrec.convert import (
    convert_sequence_split,
    ensure_release_converted,
    main,
    split_counts,
    split_ratios,
)
from recbole_diffrec.errors import BadInputError, MissingInputError
from recbole_diffrec.synthetic import generate_sequences, write_sequences

GENERAL_YAML = str(ROOT / "properties" / "dataset" / "amazon-beauty-general.yaml")
SPLITS = ("train", "valid", "test")
# n -> (train, valid, test) under 7:1:2 with round half up and at least one of each.
EXPECTED = {5: (3, 1, 1), 6: (4, 1, 1), 10: (7, 1, 2), 11: (8, 1, 2), 23: (16, 2, 5)}


def _read(path: Path) -> np.ndarray:
    return np.loadtxt(path, dtype=np.int64, skiprows=1, ndmin=2)


def _split(tmp_path: Path, sequences, ratios=(0.7, 0.1, 0.2), name="ds"):
    source = write_sequences(sequences, tmp_path / "seq.jsonl")
    written, duplicates = convert_sequence_split(source, tmp_path / name, name, ratios)
    return {s: _read(written[s]) for s in SPLITS}, duplicates


def _by_user(table: np.ndarray) -> dict:
    users: dict = {}
    for user, item, _ in table:
        users.setdefault(int(user), []).append(int(item))
    return users


def test_counts_follow_the_rule():
    lengths = list(EXPECTED)
    assert [tuple(c) for c in split_counts(lengths)] == list(EXPECTED.values())
    # 0.1 * 5 = 0.5 and 0.1 * 15 = 1.5 round up (exact arithmetic, no float drift).
    assert tuple(split_counts([15])[0]) == (10, 2, 3)
    assert tuple(split_counts([25])[0]) == (17, 3, 5)
    # Ratios are normalised: 7:1:2 is 0.7:0.1:0.2.
    assert (split_counts(lengths, [7, 1, 2]) == split_counts(lengths)).all()
    # A test-heavy ratio still leaves one training and one validation item.
    assert [tuple(c) for c in split_counts([3, 5], [0.1, 0.1, 0.8])] == [
        (1, 1, 1),
        (1, 1, 3),
    ]


def test_files_hold_exact_counts_in_time_order(tmp_path):
    rng = np.random.default_rng(0)
    sequences = [rng.permutation(np.arange(1, 40))[:n].tolist() for n in EXPECTED]
    tables, duplicates = _split(tmp_path, sequences)
    assert duplicates == 0
    parts = {s: _by_user(tables[s]) for s in SPLITS}
    for user, (n, expected) in enumerate(EXPECTED.items(), 1):
        got = [parts[s][user] for s in SPLITS]
        assert tuple(map(len, got)) == expected
        # Each split is a consecutive stretch of the sequence, in its order: train first.
        assert got[0] + got[1] + got[2] == sequences[user - 1]
    # Timestamps: row positions, train then valid then test, so all increase.
    times = np.concatenate([tables[s][:, 2] for s in SPLITS])
    assert (times == np.arange(sum(EXPECTED))).all()
    # Rows of a split keep each user's rows together and in time order.
    for s in SPLITS:
        users = tables[s][:, 0]
        assert (np.diff(users) >= 0).all()


def test_splits_are_disjoint_and_cover_the_sequences(tmp_path):
    sequences = generate_sequences(60, 50, min_length=5, max_length=30, seed=3)
    sequences = [list(dict.fromkeys(s)) for s in sequences]  # no repeats here
    sequences = [s for s in sequences if len(s) >= 5]
    tables, _ = _split(tmp_path, sequences)
    pairs = [set(map(tuple, tables[s][:, :2].tolist())) for s in SPLITS]
    assert not (pairs[0] & pairs[1] or pairs[0] & pairs[2] or pairs[1] & pairs[2])
    everything = {(u, i) for u, seq in enumerate(sequences, 1) for i in seq}
    assert pairs[0] | pairs[1] | pairs[2] == everything
    assert sum(len(t) for t in tables.values()) == len(everything)
    counts = {s: _by_user(tables[s]) for s in SPLITS}
    for user, seq in enumerate(sequences, 1):
        assert tuple(len(counts[s][user]) for s in SPLITS) == tuple(
            split_counts([len(seq)])[0]
        )


def test_repeated_pairs_keep_their_first_occurrence(tmp_path):
    # User 1 repeats 7 (position 5) and 3 (position 8): 7 distinct items -> 5/1/1.
    sequences = [[3, 4, 7, 5, 6, 7, 8, 9, 3], [1, 2, 3, 4, 5]]
    tables, duplicates = _split(tmp_path, sequences)
    assert duplicates == 2
    parts = {s: _by_user(tables[s]) for s in SPLITS}
    assert [parts[s][1] for s in SPLITS] == [[3, 4, 7, 5, 6], [8], [9]]
    assert [parts[s][2] for s in SPLITS] == [[1, 2, 3], [4], [5]]


@pytest.mark.parametrize(
    "ratios",
    [
        [0.7, 0.1],
        [0.7, 0.1, 0.2, 0.0],
        [0.7, 0.0, 0.3],
        [0.7, -0.1, 0.4],
        [0.7, "0.1", 0.2],
        [0.7, True, 0.2],
        [0.7, float("nan"), 0.2],
        "0.7,0.1,0.2",
        0.7,
    ],
)
def test_bad_ratios_name_the_key(ratios):
    with pytest.raises(BadInputError, match=r"sequence_split: got .*three positive"):
        split_ratios(ratios)


def test_too_short_after_deduplication_is_named(tmp_path):
    source = write_sequences([[1, 2, 3, 4, 5], [6, 6, 7, 6, 7]], tmp_path / "s.jsonl")
    with pytest.raises(BadInputError, match=r"s.jsonl: user 2 has 2 distinct items"):
        convert_sequence_split(source, tmp_path / "out")
    assert not list(tmp_path.glob("out/*"))  # checked before anything is written


def _config(tmp_path: Path, **extra) -> dict:
    return {
        "sequence_file": str(tmp_path / "seq.jsonl"),
        "sequence_split": [0.7, 0.1, 0.2],
        "release_path": None,
        "data_path": str(tmp_path / "data"),
        "dataset": "gen",
        "benchmark_filename": ["train", "valid", "test"],
        **extra,
    }


@pytest.mark.parametrize(
    "extra, error, words",
    [
        ({"sequence_split": [1, 2]}, BadInputError, "sequence_split: got"),
        ({"sequence_file": None}, BadInputError, "sequence_split: needs sequence_file"),
        ({"release_path": "r"}, BadInputError, "sequence_split: got both"),
        (
            {"benchmark_filename": None},
            BadInputError,
            "benchmark_filename: got .*needs",
        ),
        ({"sequence_file": "nope.jsonl"}, MissingInputError, "sequence_file: nope"),
    ],
)
def test_hook_refuses_bad_settings(tmp_path, extra, error, words):
    write_sequences([[1, 2, 3, 4, 5]], tmp_path / "seq.jsonl")
    with pytest.raises(error, match=words):
        ensure_release_converted(_config(tmp_path, **extra))


def test_hook_converts_once_and_again_for_other_ratios(tmp_path):
    write_sequences([list(range(1, 11))], tmp_path / "seq.jsonl")
    ensure_release_converted(_config(tmp_path))
    train = tmp_path / "data" / "gen.train.inter"
    assert len(_read(train)) == 7
    stamp = train.stat().st_mtime_ns
    ensure_release_converted(_config(tmp_path))  # up to date: not rewritten
    assert train.stat().st_mtime_ns == stamp
    ensure_release_converted(_config(tmp_path, sequence_split=[0.6, 0.2, 0.2]))
    assert len(_read(train)) == 6


def test_command_line_split_and_its_errors(tmp_path, capsys):
    source = write_sequences([list(range(1, 24))], tmp_path / "seq.jsonl")
    out = tmp_path / "out"
    assert (
        main(["--input", str(source), "--output", str(out), "--split", "7", "1", "2"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "(16 interactions)" in printed and "duplicates dropped: 0" in printed
    assert [len(_read(out / f"out.{s}.inter")) for s in SPLITS] == [16, 2, 5]
    assert (
        main(["--input", str(source), "--output", str(out), "--split", "7", "x", "2"])
        == 2
    )
    assert "error: --split: got [7.0, 'x', 2.0]; allowed: three positive" in (
        capsys.readouterr().err
    )
    missing = str(tmp_path / "none.jsonl")
    assert (
        main(["--input", missing, "--output", str(out), "--split", "7", "1", "2"]) == 2
    )
    assert "error: sequence_file: " in capsys.readouterr().err


def test_recbole_loads_the_split_through_the_dataset_yaml(workdir):
    from recbole.utils import init_seed

    from recbole_diffrec import run
    from recbole_diffrec.config import Config
    from recbole_diffrec.quick_start import load_splits

    lengths = [5, 6, 10, 11, 23] * 8
    rng = np.random.default_rng(1)
    sequences = [rng.permutation(np.arange(1, 31))[:n].tolist() for n in lengths]
    source = write_sequences(sequences, workdir / "seq.jsonl")
    settings = {
        "sequence_file": str(source),
        "data_path": str(workdir / "data"),
        "state": "WARNING",
        "show_progress": False,
    }
    config = Config("Pop", "tiny-general", [GENERAL_YAML], settings)
    assert config["sequence_split"] == [0.7, 0.1, 0.2]
    init_seed(config["seed"], config["reproducibility"])
    _, train, valid, test = load_splits(config)
    counts = np.array([EXPECTED[n] for n in lengths]).sum(axis=0)
    assert [d.dataset.inter_num for d in (train, valid, test)] == list(counts)
    assert train.dataset.user_num - 1 == len(lengths)  # RecBole's [PAD] user
    quick = {**settings, "epochs": 1, "eval_step": 1}
    result = run("Pop", "tiny-general", [GENERAL_YAML], quick)
    assert set(result["test_result"]) == {
        "recall@10",
        "recall@20",
        "ndcg@10",
        "ndcg@20",
    }
    assert json.loads(
        (workdir / "data" / "tiny-general" / "tiny-general.split.json").read_text()
    )["ratios"] == ["7/10", "1/10", "1/5"]
