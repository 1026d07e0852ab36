"""benchmarks.bench_sequential_gpu on the CPU with generated sequences: a run trains with
validation, stops early, writes its result and report; a run that cannot start stops the
whole job at once."""

import json
from pathlib import Path

import pytest
import yaml

from recbole_diffrec.synthetic import generate_sequences, write_sequences

ROOT = Path(__file__).resolve().parents[1]

from benchmarks import bench_sequential_gpu as bench  # noqa: E402
from benchmarks.sections.sequential import SEQUENTIAL_METRICS  # noqa: E402


def tiny_dataset(tmp_path: Path) -> Path:
    sequences = tmp_path / "tiny-seq.jsonl"
    write_sequences(generate_sequences(120, 40, 5, 12, seed=1), sequences)
    config = yaml.safe_load(
        (ROOT / "properties/dataset/amazon-beauty.yaml").read_text()
    )
    config.update(sequence_file=str(sequences), data_path=str(tmp_path / "data"))
    path = tmp_path / "tiny-seq.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_a_run_is_selected_on_validation_and_reported(tmp_path):
    out = tmp_path / "out"
    args = ["--dataset", "tiny-seq", "--dataset-config", str(tiny_dataset(tmp_path))]
    args += ["--models", "GRU4Rec", "--minutes", "2", "--out", str(out)]
    args += ["--eval-step", "1", "--stopping-step", "2", "--commit", "test"]
    with pytest.raises(SystemExit) as exit_info:
        bench.main(args)
    assert exit_info.value.code == 0
    (path,) = out.glob("tiny-seq-GRU4Rec-*.json")
    run = json.loads(path.read_text())
    assert run["ran_with"] == ["GRU4Rec"] and "--models GRU4Rec" in run["command"]
    assert run["settings"]["eval_step"] == 1 and run["settings"]["stopping_step"] == 2
    assert all(0.0 <= run["test"][m] <= 1.0 for m in SEQUENTIAL_METRICS)
    assert run["test"]["hit@10"] >= run["test"]["ndcg@10"] > 0.0
    scores = [v["ndcg@10"] for v in run["validations"]]
    assert [v["epoch"] for v in run["validations"]] == list(range(1, len(scores) + 1))
    # the selected checkpoint is the best validation, one of three that stopped the run
    assert run["best_valid"]["ndcg@10"] == pytest.approx(max(scores))
    assert run["best_epoch"] == len(scores) - scores[::-1].index(max(scores))
    if run["stopped_by"] != "wall-clock budget":
        assert len(scores) - run["best_epoch"] >= 2
    text = bench.report(out, tmp_path / "figures" / "curves.png")
    assert "| tiny-seq | GRU4Rec | alone |" in text
    assert (tmp_path / "figures" / "curves.png").stat().st_size > 0


def test_a_run_that_cannot_start_stops_the_whole_job(tmp_path):
    out = tmp_path / "out"
    args = ["--dataset", "tiny-seq", "--dataset-config", str(tiny_dataset(tmp_path))]
    args += ["--models", "NoSuchModel", "GRU4Rec", "--minutes", "5", "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        bench.main(args)
    assert exit_info.value.code == 1
    assert not list(out.glob("*.json"))  # GRU4Rec was stopped, not left to its budget
    assert "NoSuchModel" in (out / "logs.txt").read_text()
