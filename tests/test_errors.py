"""Catalogue of bad inputs: each gets one specific exception whose message names the
culprit (file, line, field or key), before data loading or training where it can; on the
command line each is one ``error:`` line, exit status 2 and no traceback.

The converters' cases are in tests/test_errors_convert.py; tests/test_bad_input.py,
test_checks.py, test_sequential.py and test_tune.py hold more bad model settings and search
spaces. Together these files are the catalogue.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
import torch

from recbole_diffrec import cli, run
from recbole_diffrec.config import Config
from recbole_diffrec.errors import BadInputError, MissingInputError
from recbole_diffrec.errors import UnknownSettingWarning
from recbole_diffrec.quick_start import load_model
from recbole_diffrec.tune import load_search_space, run_search

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
LOAD_ALL = {"inter": ["user_id", "item_id", "rating", "timestamp"]}


def good_rows(users: int = 12, items: int = 15) -> List[str]:
    rows = []
    for u in range(users):
        for k in range(6):
            rows.append(f"{u}\t{(u + 2 * k) % items}\t{1 + k % 5}\t{u * 10 + k}")
    return rows


def dataset(tmp: Path, inter: str = None, files: Dict[str, str] = None) -> Dict:
    """A tiny dataset ``tiny`` under ``tmp/data``; returns the settings that point at it."""
    folder = tmp / "data" / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    text = inter if inter is not None else "\n".join([HEADER] + good_rows()) + "\n"
    (folder / "tiny.inter").write_text(text)
    for suffix, body in (files or {}).items():
        (folder / f"tiny.{suffix}").write_bytes(body.encode())
    return {"data_path": str(tmp / "data"), "load_col": LOAD_ALL, "state": "WARNING"}


def inter_with(*bad: str) -> str:
    rows = good_rows()
    return "\n".join([HEADER] + rows[:5] + list(bad) + rows[5:]) + "\n"


# ------------------------------------------------------------------- atomic files
# (what the .inter file holds, extra files, words the message must hold)
ATOMIC_CASES: List[Tuple[str, str, Dict[str, str], List[str]]] = [
    ("missing field", inter_with("3\t4\t5"), {}, ["tiny.inter", "line 7", "missing"]),
    ("extra field", inter_with("3\t4\t5\t6\t7"), {}, ["tiny.inter", "line 7", "extra"]),
    (
        "word timestamp",
        inter_with("3\t4\t5\tyesterday"),
        {},
        ["line 7", "timestamp:float", "'yesterday'"],
    ),
    ("word rating", inter_with("3\t4\tfive\t9"), {}, ["line 7", "rating:float"]),
    (
        "no header",
        "\n".join(good_rows()) + "\n",
        {},
        ["tiny.inter", "line 1", "header"],
    ),
    (
        "unknown type",
        HEADER.replace("item_id:token", "item_id:int") + "\n1\t2\t3\t4\n",
        {},
        ["line 1", "item_id:int", "token_seq"],
    ),
    ("empty file", "", {}, ["tiny.inter", "no header"]),
    ("windows line ends", HEADER + "\r\n1\t2\t3\t4\r\n", {}, ["\\r", "line 1"]),
    (
        "float_seq word in .item",
        None,
        {"item": "item_id:token\tvec:float_seq\n1\t0.5 0.25\n2\t0.5 x\n"},
        ["tiny.item", "line 3", "vec:float_seq", "'x'"],
    ),
    (
        "short row in .user",
        None,
        {"user": "user_id:token\tage:float\tgender:token\n1\t20\tF\n2\t30\n"},
        ["tiny.user", "line 3", "missing"],
    ),
    ("not utf-8", HEADER + "\n1\t2\t3\t4\n\udcff", {}, ["tiny.inter", "line 3"]),
]


def _write_atomic_case(tmp: Path, inter, files) -> Dict:
    settings = dataset(tmp, "", files)
    path = tmp / "data" / "tiny" / "tiny.inter"
    if inter is None:
        inter = "\n".join([HEADER] + good_rows()) + "\n"
    path.write_bytes(inter.encode("utf-8", "surrogateescape"))
    if files:
        settings["load_col"] = None  # every column of every file
    return settings


@pytest.mark.parametrize(
    "inter, files, words",
    [c[1:] for c in ATOMIC_CASES],
    ids=[c[0] for c in ATOMIC_CASES],
)
def test_malformed_atomic_files_are_named_before_loading(workdir, inter, files, words):
    settings = _write_atomic_case(workdir, inter, files)
    with pytest.raises(BadInputError) as err:
        run("DiffRec", "tiny", config_dict=settings)
    for word in words:
        assert word in str(err.value)


def test_malformed_split_file_is_named(workdir):
    settings = dataset(workdir)
    folder = workdir / "data" / "tiny"
    good = "\n".join([HEADER] + good_rows()) + "\n"
    for split in ("train", "valid"):
        (folder / f"tiny.{split}.inter").write_text(good)
    (folder / "tiny.test.inter").write_text(HEADER + "\n1\t2\t3\n")
    settings["benchmark_filename"] = ["train", "valid", "test"]
    with pytest.raises(BadInputError, match=r"tiny\.test\.inter, line 2: a missing"):
        Config("DiffRec", "tiny", config_dict=settings)


def test_a_good_file_with_empty_values_passes(workdir):
    settings = dataset(workdir, inter_with("3\t4\t\t9", "3\t5\tNA\t10"))
    Config("DiffRec", "tiny", config_dict=settings)  # RecBole fills missing values


# ------------------------------------------------------------- settings and yaml
def _yaml(tmp: Path, text: str) -> str:
    path = tmp / "bad.yaml"
    path.write_text(text)
    return str(path)


RUNNER_CASES: List[Tuple[str, Callable[[Path], Dict], type, List[str]]] = [
    (
        "yaml syntax error",
        lambda t: {"config_file_list": [_yaml(t, "epochs: 2\nsteps: [5\nx: 1\n")]},
        BadInputError,
        ["bad.yaml", "line 3", "not valid yaml"],
    ),
    (
        "yaml tab indent",
        lambda t: {"config_file_list": [_yaml(t, "eval_args:\n\tmode: full\n")]},
        BadInputError,
        ["bad.yaml", "line 2"],
    ),
    (
        "yaml list",
        lambda t: {"config_file_list": [_yaml(t, "- epochs\n- 2\n")]},
        BadInputError,
        ["bad.yaml", "mapping"],
    ),
    (
        "missing config file",
        lambda t: {"config_file_list": [str(t / "nowhere.yaml")]},
        MissingInputError,
        ["config_files", "nowhere.yaml"],
    ),
    (
        "unknown model",
        lambda t: {"model": "DifRec"},
        ValueError,
        ["model", "DifRec"],
    ),
    (
        "release_path not a folder",
        lambda t: {
            "config_dict": {
                "release_path": str(t / "gone"),
                "benchmark_filename": ["train", "valid", "test"],
            }
        },
        MissingInputError,
        ["release_path", "gone"],
    ),
    (
        "release_path without the three splits",
        lambda t: {
            "config_dict": {"release_path": str(t), "benchmark_filename": ["a", "b"]}
        },
        BadInputError,
        ["benchmark_filename", "['a', 'b']"],
    ),
    (
        "sequence_file missing",
        lambda t: {
            "config_dict": {
                "sequence_file": str(t / "none.jsonl"),
                "data_path": str(t / "empty"),  # no converted file yet
            }
        },
        MissingInputError,
        ["sequence_file", "none.jsonl"],
    ),
    (
        "eval_history",
        lambda t: {"model": "DiffuRec", "config_dict": {"eval_history": "hidden"}},
        ValueError,
        ["eval_history", "'hidden'"],
    ),
]


def _runner_call(tmp: Path, make: Callable[[Path], Dict]):
    args = make(tmp)
    model = args.pop("model", "DiffRec")
    config_dict = {**dataset(tmp), **args.pop("config_dict", {})}
    return lambda: run(model, "tiny", config_dict=config_dict, **args)


@pytest.mark.parametrize(
    "make, kind, words",
    [c[1:] for c in RUNNER_CASES],
    ids=[c[0] for c in RUNNER_CASES],
)
def test_bad_runner_input_is_named(workdir, make, kind, words):
    with pytest.raises(kind) as err:
        _runner_call(workdir, make)()
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    "where, key, hint",
    [
        ("argv", "learning_rat", "learning_rate"),
        ("dict", "noise_scal", "noise_scale"),
        ("yaml", "eval_batch_user", "eval_batch_users"),
    ],
)
def test_unknown_settings_warn_with_the_closest_known_one(
    workdir, monkeypatch, where, key, hint
):
    settings, files = dataset(workdir), None
    if where == "argv":
        monkeypatch.setattr(sys, "argv", ["x", f"--{key}=0.1"])
    elif where == "dict":
        settings[key] = 0.1
    else:
        files = [_yaml(workdir, f"{key}: 100\n")]
    with pytest.warns(UnknownSettingWarning) as caught:
        Config("DiffRec", "tiny", files, settings)
    messages = [str(w.message) for w in caught]
    assert f"{key} is not a known setting; did you mean {hint}?" in messages


def test_known_settings_do_not_warn(workdir):
    settings = {**dataset(workdir), "release_path": None, "w_min": 0.1}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownSettingWarning)
        Config("TDiffRec", "tiny", config_dict=settings)


# ---------------------------------------------------------------------- drop-in API
def _built(workdir, model="DiffRec"):
    from recbole.data import create_dataset

    config = Config(model, "tiny", config_dict=dataset(workdir))
    return config, create_dataset(config)


@pytest.mark.parametrize(
    "key, value",
    [("noise_scale", 5.0), ("steps", -1), ("dims_dnn", [0]), ("w_min", 2.0)],
)
def test_dropin_model_constructor_names_the_key(workdir, key, value):
    model = "TDiffRec" if key == "w_min" else "DiffRec"
    config, data = _built(workdir, model)
    config[key] = value
    from recbole_diffrec.registry import get_model

    with pytest.raises(ValueError, match=f"{key}: got"):
        get_model(model)(config, data)


def test_dropin_data_preparation_names_the_key(workdir):
    from recbole_diffrec.data import data_preparation

    config, data = _built(workdir)
    config["eval_batch_users"] = -3
    with pytest.raises(ValueError, match="eval_batch_users: got -3"):
        data_preparation(config, data)


# ------------------------------------------------------------------------- Ray Tune
def without_ray(monkeypatch) -> None:
    """Any import of Ray from here on fails: an error raised "before Ray" must come
    first (an earlier test of the same process may have imported Ray already)."""
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)


def test_tune_space_file_errors_before_ray(workdir, monkeypatch):
    without_ray(monkeypatch)
    bad = workdir / "space.yaml"
    bad.write_text("space:\n  learning_rate: {choice: [0.1\n")
    with pytest.raises(ValueError, match="space.yaml.*not valid yaml"):
        load_search_space(str(bad))
    bad.write_text("- learning_rate\n")
    with pytest.raises(ValueError, match="space.yaml: expected a mapping"):
        load_search_space(str(bad))
    bad.write_text("space:\n  learning_rate: {choice: [0.1]}\ntrials: 3\n")
    with pytest.raises(ValueError, match=r"space.yaml: unknown top-level key.*trials"):
        load_search_space(str(bad))


@pytest.mark.parametrize(
    "fixed, kind, words",
    [
        ({"noise_scale": 4.0}, ValueError, "noise_scale: got 4.0"),
        ({"inter_bad": True}, BadInputError, "tiny.inter, line 7"),
        ({"config_files": ["missing.yaml"]}, FileNotFoundError, "missing.yaml"),
    ],
    ids=["bad fixed setting", "malformed dataset", "missing config file"],
)
def test_run_search_refuses_bad_input_before_ray(
    workdir, monkeypatch, fixed, kind, words
):
    without_ray(monkeypatch)
    space = workdir / "space.yaml"
    space.write_text("space:\n  learning_rate: {choice: [0.001, 0.01]}\n")
    settings = dataset(
        workdir, inter_with("1\t2") if fixed.pop("inter_bad", 0) else None
    )
    files = fixed.pop("config_files", [])
    with pytest.raises(kind, match=words):
        run_search("DiffRec", "tiny", str(space), files, {**settings, **fixed})


# ------------------------------------------------------------------------ load_model
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


def _torch_file(content) -> Callable[[Path], None]:
    return lambda p: torch.save(content, p)


class Foreign:  # a pickled object weights-only loading refuses
    pass


CHECKPOINT_CASES = [
    ("missing", None, MissingInputError, "does not exist"),
    ("empty", lambda p: p.write_bytes(b""), BadInputError, "not a torch checkpoint"),
    ("text", lambda p: p.write_text("weights\n"), BadInputError, "not a torch"),
    (
        "npy",
        lambda p: p.write_bytes(b"\x93NUMPY\x01\x00"),
        BadInputError,
        "not a torch",
    ),
    (
        "truncated",
        lambda p: (_torch_file({"a": torch.zeros(50)})(p), _truncate(p)),
        BadInputError,
        "truncated or not a torch checkpoint",
    ),
    ("foreign dict", _torch_file({"a": torch.zeros(2)}), BadInputError, "recognised"),
    ("a list", _torch_file([1, 2]), BadInputError, "not a recognised"),
    ("pickled object", _torch_file({"x": Foreign()}), BadInputError, "pickled Python"),
]


@pytest.mark.parametrize(
    "make, kind, words",
    [c[1:] for c in CHECKPOINT_CASES],
    ids=[c[0] for c in CHECKPOINT_CASES],
)
def test_load_model_names_a_bad_checkpoint(workdir, make, kind, words):
    path = workdir / "model.pth"
    if make is not None:
        make(path)
    with pytest.raises(kind, match=words) as err:
        load_model(str(path))
    assert str(path) in str(err.value)


# ---------------------------------------------------------------------- command line
def _cli(tmp: Path, model: str, settings: Dict, files=(), extra=()) -> List[str]:
    """The command for a case: settings travel in a yaml file (as a user's would)."""
    import yaml

    path = tmp / "case.yaml"
    path.write_text(yaml.safe_dump(settings))
    files = " ".join([*files, str(path)])
    return [f"--model={model}", "--dataset=tiny", f"--config_files={files}", *extra]


def _assert_one_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for word in words:
        assert word in err


@pytest.mark.parametrize(
    "inter, files, words",
    [c[1:] for c in ATOMIC_CASES],
    ids=[c[0] for c in ATOMIC_CASES],
)
def test_cli_atomic_file_errors(workdir, capsys, inter, files, words):
    settings = _write_atomic_case(workdir, inter, files)
    code = cli.main(_cli(workdir, "DiffRec", settings))
    _assert_one_error(code, capsys.readouterr().err, *words)


@pytest.mark.parametrize(
    "make, kind, words",
    [c[1:] for c in RUNNER_CASES],
    ids=[c[0] for c in RUNNER_CASES],
)
def test_cli_runner_errors(workdir, capsys, make, kind, words):
    args = make(workdir)
    settings = {**dataset(workdir), **args.get("config_dict", {})}
    argv = _cli(
        workdir,
        args.get("model", "DiffRec"),
        settings,
        args.get("config_file_list", ()),
    )
    _assert_one_error(cli.main(argv), capsys.readouterr().err, *words)


def test_cli_stray_argument_and_unknown_setting(workdir, capsys):
    argv = _cli(workdir, "DiffRec", dataset(workdir), extra=["epochs=3"])
    _assert_one_error(
        cli.main(argv), capsys.readouterr().err, "'epochs=3'", "--key=value"
    )
    argv = _cli(workdir, "DiffRec", dataset(workdir), extra=["--steps=0"])
    _assert_one_error(cli.main(argv), capsys.readouterr().err, "steps: got 0")


def test_cli_tune_space_error(workdir, capsys):
    space = workdir / "space.yaml"
    space.write_text("space:\n  learning_rate: {choice: [0.1\n")
    argv = _cli(workdir, "DiffRec", dataset(workdir), extra=[f"--tune={space}"])
    _assert_one_error(cli.main(argv), capsys.readouterr().err, "space.yaml")


def test_debug_flag_shows_the_traceback(workdir, monkeypatch):
    settings = _write_atomic_case(workdir, inter_with("1\t2"), {})
    with pytest.raises(BadInputError, match="tiny.inter"):
        cli.main(_cli(workdir, "DiffRec", settings, extra=["--debug"]))
    monkeypatch.setenv("RECBOLE_DIFFREC_DEBUG", "1")
    with pytest.raises(BadInputError, match="tiny.inter"):
        cli.main(_cli(workdir, "DiffRec", settings))


def _python(*args: str, cwd: Path, env=None):
    import subprocess

    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env
    )


@pytest.mark.slow
def test_the_real_command_prints_one_error_line(workdir):
    root = Path(__file__).resolve().parents[1]
    settings = _write_atomic_case(workdir, inter_with("3\t4\t5\tsoon"), {})
    done = _python(
        str(root / "run_recbole_diffrec.py"),
        *_cli(workdir, "DiffRec", settings, extra=["--learning_rat=0.1"]),
        cwd=workdir,
    )
    _assert_one_error(done.returncode, done.stderr, "tiny.inter, line 7", "timestamp")
    hint = "warning: learning_rat is not a known setting; did you mean learning_rate?"
    assert hint in done.stderr.splitlines()
