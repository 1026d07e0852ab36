"""The benchmark suite's --quick pipeline end to end, and its result caching."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
    ):
        assert heading in report
    for figure in ("accuracy", "speed", "scale", "steps", "sequential"):
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
