"""The benchmark suite's --quick pipeline end to end, its result caching, its early-stopping
selection and its run locks."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_suite():
    spec = importlib.util.spec_from_file_location(
        "suite", ROOT / "benchmarks" / "suite.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def point(epoch, valid, test):
    return {"epoch": epoch, "valid": {"recall@20": valid}, "test": {"ndcg@20": test}}


def test_patience_selection_follows_recbole_early_stopping():
    suite = load_suite()
    curve = [
        point(5, 0.10, 0.01),
        point(10, 0.12, 0.02),
        point(15, 0.11, 0.03),
        point(
            20, 0.12, 0.04
        ),  # a tie is the new best (RecBole's >=) and resets the wait
        point(25, 0.11, 0.05),
        point(30, 0.11, 0.06),
        point(35, 0.11, 0.07),  # third worse validation in a row: patience 2 stops here
        point(40, 0.13, 0.08),
    ]
    chosen = [suite.select_by_patience(curve, "recall@20", p) for p in (0, 2, 3)]
    assert [c["epoch"] for c in chosen] == [10, 20, 40]
    assert chosen[1]["test"]["ndcg@20"] == 0.04


def test_a_run_locked_by_a_live_process_is_skipped_and_a_dead_ones_lock_is_taken(
    tmp_path,
):
    suite = load_suite()
    result = tmp_path / "run.json"
    lock = suite.claim(result)
    assert lock == tmp_path / "run.lock" and lock.read_text() == str(os.getpid())
    assert suite.claim(result) is None  # held by this (live) process
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    lock.write_text(dead)
    taken = suite.claim(result)
    assert taken == lock and lock.read_text() == str(os.getpid())
    lock.unlink()
    result.write_text("{}")  # already done: nothing to claim
    assert suite.claim(result) is None and not lock.exists()


def run_suite(results, *extra):
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "suite.py"),
            "--quick",
            "--results",
            str(results),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_quick_suite_writes_every_section_and_reuses_cached_runs(tmp_path):
    results = tmp_path / "quick"
    first = run_suite(results)
    assert first.returncode == 0, first.stderr[-3000:]
    report = (results / "RESULTS.md").read_text()
    for heading in (
        "## Accuracy",
        "## Speed and memory",
        "## Scale",
        "## Fewer reverse steps",
        "## Sequential recommenders",
        "## Early stopping",
    ):
        assert heading in report
    for figure in ("accuracy", "speed", "scale", "steps", "sequential", "stopping"):
        assert (results / "figures" / f"{figure}.png").stat().st_size > 1000
        assert f"figures/{figure}.png" in report
    assert "QUICK MODE" in report
    # Every model of the suite has a row, with mean +- std over the seeds.
    for model in (
        "BPR",
        "LightGCN",
        "MultiVAE",
        "CDAE",
        "EASE",
        "DiffRec",
        "LDiffRec",
        "TDiffRec",
        "LTDiffRec",
        "recbole.DiffRec",
    ):
        assert f"| {model} |" in report
    assert "±" in report
    for model in ("DiffuRec", "SeqDiffRec", "SASRec", "BERT4Rec", "GRU4Rec"):
        assert f"| quick-seq | {model} |" in report
    assert "**not masked**" in report  # the protocol is named
    # The long-patience reruns select what the accuracy runs kept under patience 2.
    assert "every curve selects the checkpoint its accuracy run kept" in report
    assert "| LDiffRec | " in report.split("## Early stopping")[1]

    runs = sorted(results.rglob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    second = run_suite(results)
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(results.rglob("*.json")) == runs
    assert all(p.stat().st_mtime_ns == stamps[p] for p in runs)  # nothing re-ran

    # --cached-only runs nothing: a missing run is reported as pending, not rerun.
    missing = next(p for p in runs if "sequential" in p.name and "GRU4Rec" in p.name)
    missing.unlink()
    third = run_suite(results, "--cached-only")
    assert third.returncode == 0, third.stderr[-3000:]
    assert not missing.exists()
    report = (results / "RESULTS.md").read_text()
    assert "**Pending: 1 of 5 runs not done yet** (quick-seq-GRU4Rec (2020))" in report
    assert "| quick-seq | GRU4Rec |" not in report
    assert "| quick-seq | SASRec |" in report and "## Scale" in report
