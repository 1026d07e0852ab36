"""benchmarks.gpu rehearsed on the CPU with tiny generated data (`--device cpu --tiny`):
every part writes its JSON and the report; a deadline that expires mid-part stops it
cleanly and the next invocation continues it from its training state; finished runs are
skipped; bad arguments and a missing device fail at once with a clear message."""

import json
import sys
import types
from pathlib import Path

import pytest

from benchmarks import gpu


def kmeans_stand_in(monkeypatch):
    """RecBole's LDiffRec imports kmeans_pytorch (extra 'bench', not in the test
    environment): a stand-in that deals items round-robin when it is missing."""
    import importlib.util

    if importlib.util.find_spec("kmeans_pytorch") is None:
        import torch

        module = types.ModuleType("kmeans_pytorch")

        def kmeans(X, num_clusters, distance="euclidean", device=None):
            ids = torch.arange(len(X)) % num_clusters
            return ids, torch.stack([X[ids == c].mean(0) for c in range(num_clusters)])

        module.kmeans = kmeans
        monkeypatch.setitem(sys.modules, "kmeans_pytorch", module)


def read(folder: Path, name: str) -> dict:
    return json.loads((folder / f"{name}.json").read_text())


# parallel 2: the second invocation's sequential runs in worker processes, as on a GPU
@pytest.mark.slow
@pytest.mark.parametrize("parallel", [1, 2])
def test_rehearsal_cut_resumed_and_reported(tmp_path, monkeypatch, parallel):
    kmeans_stand_in(monkeypatch)
    results = tmp_path / "results"
    common = ["--device", "cpu", "--tiny", "--seeds", "2020", "--minutes", "30"]
    common += ["--results", str(results), "--commit", "test"]

    # First invocation: the DiffuRec run's first validation moves the clock past every
    # deadline, so the sequential part is cut mid-run and the curve is left for later.
    offset = {"seconds": 0.0}
    real_clock = gpu.clock
    monkeypatch.setattr(gpu, "clock", lambda: real_clock() + offset["seconds"])

    def jump(run, epoch, score):
        if run == "DiffuRec-2020":
            offset["seconds"] = 1e6

    monkeypatch.setattr(gpu, "on_validation", jump)
    assert gpu.main(common) == 0
    assert read(results, "selfcheck")["status"] == "passed"
    speed = {n: results / f"speed-{n}.json" for n in gpu.SPEED_RUNS}
    assert all(p.is_file() for p in speed.values())
    first = read(results, "speed-DiffRec")
    assert first["device"] == "cpu" and first["tiny"] and first["peak_gpu_mb"] is None
    assert first["epoch_seconds"] and first["test"]["recall@20"] >= 0
    cut = read(results, "sequential-DiffuRec-2020")
    assert cut["status"] == "budget" and cut["epochs_total"] == 1
    assert not (results / "sequential-SASRec-2020.json").exists()
    assert not (results / "curve-DiffuRec.json").exists()
    report = (results / "gpu.md").read_text()
    assert "REHEARSAL" in report
    assert "sequential DiffuRec seed 2020 (cut at 1 epochs)" in report
    stamps = {n: p.stat().st_mtime_ns for n, p in speed.items()}

    # Second invocation, on time (with parallel 2, its sequential runs in worker
    # processes, as on a GPU): finished runs are skipped, the cut run continues from its
    # training state, the others run, the curve is measured.
    offset["seconds"] = 0.0
    monkeypatch.setattr(gpu, "on_validation", lambda *a: None)
    again = common + ["--parts", "speed", "sequential", "curve"]
    again += ["--parallel", str(parallel)]
    assert gpu.main(again) == 0
    assert {n: p.stat().st_mtime_ns for n, p in speed.items()} == stamps
    resumed = read(results, "sequential-DiffuRec-2020")
    assert resumed["status"] == "done" and resumed["epochs_total"] == 2
    assert [s["start_epoch"] for s in resumed["segments"]] == [0, 1]
    assert [v["epoch"] for v in resumed["validations"]] == [0, 1]
    assert read(results, "sequential-SASRec-2020")["status"] == "done"
    curve = read(results, "curve-DiffuRec")
    assert curve["points"][0]["inference_steps"] == "full"
    assert curve["points"][0]["ndcg@10"] >= 0
    assert [p["inference_steps"] for p in curve["points"]] == ["full", 16, 8, 4, 2, 1]
    report = (results / "gpu.md").read_text()
    assert "| DiffuRec | 2020 | cpu (tiny data) | stopped early | 2 |" in report

    # --report-only regenerates the same report from the JSONs alone.
    (results / "gpu.md").unlink()
    assert gpu.main(common + ["--report-only"]) == 0
    assert (results / "gpu.md").read_text() == report


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--minutes", "0"], "--minutes: got 0.0"),
        (["--parts", "speed", "warp"], "--parts: unknown warp"),
        (["--parallel", "0"], "--parallel: got 0"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        gpu.parse(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_no_cuda_or_no_data_stops_at_the_self_check(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    results = tmp_path / "results"
    argv = ["--results", str(results), "--data", str(tmp_path), "--commit", "test"]
    assert gpu.main(argv) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().out
    kmeans_stand_in(monkeypatch)
    assert gpu.main(argv + ["--device", "cpu"]) == 2
    out = capsys.readouterr().out
    assert "data missing" in out and "--prepare" in out
    assert not list(results.glob("*.json"))
    assert "no run on a GPU yet" in (results / "gpu.md").read_text()


def test_deadlines_are_cumulative_shares():
    ends = gpu.deadlines(list(gpu.PARTS), 0.0, 10)
    assert [round(ends[p]) for p in gpu.PARTS] == [30, 210, 510, 600]
    ends = gpu.deadlines(["sequential", "curve"], 0.0, 13)
    assert round(ends["sequential"]) == 600 and round(ends["curve"]) == 780
