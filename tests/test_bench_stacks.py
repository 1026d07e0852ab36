"""benchmarks.bench_stacks: the figures its report gives against the issue's targets."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

from benchmarks import bench_stacks  # noqa: E402


def fake_run(python, round_index, ndcg, seconds, numpy="1.26.4"):
    return {
        "python": python,
        "round": round_index,
        "stack": {
            "python": "3.11.7" if python == "a" else "3.13.0",
            "numpy": numpy,
            "pandas": "2.3.3",
            "scipy": "1.17.1",
            "ray": "2.6.3",
            "torch": "2.15.0",
        },
        "test": {"ndcg@20": ndcg, "recall@20": 2 * ndcg},
        "epochs": 30,
        "epoch_seconds": seconds,
        "test_eval_seconds": 8.0,
    }


def test_differences_and_ratios_are_against_the_first_stack():
    runs = [
        fake_run("a", 1, 0.1100, 2.0),
        fake_run("b", 1, 0.1110, 2.2, numpy="2.5.5"),
        fake_run("b", 2, 0.1110, 2.0, numpy="2.5.5"),
        fake_run("a", 2, 0.1100, 2.2),
    ]
    rows = bench_stacks.summarize(runs, ["a", "b"])
    assert [r["rounds"] for r in rows] == [2, 2]
    assert rows[0]["ndcg_diff"] == 0 and rows[0]["epoch_ratio"] == 1
    assert rows[1]["ndcg_diff"] == pytest.approx(0.001)
    assert rows[1]["epoch_ratio"] == pytest.approx(1.0)  # mean 2.1 s on both
    text = bench_stacks.report(runs, rows, "python -m benchmarks.bench_stacks")
    assert (
        "| 3.13.0 / 2.5.5 / 2.3.3 / 1.17.1 / 2.6.3 / 2.15.0 | 2 | 0.1110 | +0.0010 |"
        in text
    )
    assert "same results, no slower" in text


def test_a_slower_or_different_stack_is_called_out():
    runs = [fake_run("a", 1, 0.1100, 2.0), fake_run("b", 1, 0.1130, 2.2)]
    rows = bench_stacks.summarize(runs, ["a", "b"])
    assert rows[1]["epoch_ratio"] == pytest.approx(1.1)
    assert "RESULTS DIFFER, SLOWER" in bench_stacks.report(runs, rows, "cmd")


def test_bad_arguments_are_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_stacks.main(["--python", str(tmp_path / "nope")])
    assert "--python: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_stacks.main(["--python", sys.executable, "--rounds", "0"])
    assert "--rounds: got 0" in capsys.readouterr().err
