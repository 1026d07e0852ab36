"""Exact resume: a run SIGKILLed mid-training and resumed from its training-state file in
a new process ends with the validation curve and test metrics of an uninterrupted run,
bit for bit on CPU; a NaN loss stops the run with one clear error and keeps the files.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import (
    FAST,
    PAPER_PROTOCOL_YAML,
    SEQ_TINY,
    SEQUENCE_YAML,
    SVD,
    make_release,
    release_settings,
)
from recbole_diffrec.training_state import STATE_FORMAT

# Run trainings one after another in a fresh process. A run's "kill" = [epoch, batch]
# SIGKILLs the process when that batch's loss is computed (batch counted from 1), "test"
# when the test evaluation starts; each finished run's result is written as json.
SCRIPT = r"""
import json, os, signal, sys
from recbole_diffrec import run
from recbole_diffrec.registry import get_model
from recbole_diffrec.trainer import get_trainer

job = json.loads(os.environ["RESUME_JOB"])
sys.argv = sys.argv[:1]


def killing(kill):
    class Killing(get_trainer(get_model(job["model"]))):
        def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
            model, batches = self.model, iter(range(1, 10**9))
            original = model.calculate_loss

            def loss(interaction):
                if kill == [epoch_idx, next(batches)]:
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(interaction)

            model.calculate_loss = loss
            try:
                return super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
            finally:
                del model.calculate_loss

        def evaluate(self, eval_data, load_best_model=True, **kwargs):
            if kill == "test" and load_best_model:
                os.kill(os.getpid(), signal.SIGKILL)
            return super().evaluate(eval_data, load_best_model=load_best_model, **kwargs)

    return Killing


for one in job["runs"]:
    result = run(
        job["model"], job["dataset"], job["config_files"], one["settings"],
        trainer_class=killing(one.get("kill")),
    )
    keep = ("valid_curve", "best_valid_result", "test_result", "model_file", "state_file")
    with open(one["out"], "w") as f:
        json.dump({k: result[k] for k in keep}, f)
"""


def train(workdir, model, dataset, config_files, runs, killed):
    """Run SCRIPT for ``runs`` ([{"settings", "kill"}]) in one new process; their
    results (None for a killed one)."""
    for i, one in enumerate(runs):
        one["out"] = str(workdir / f"result{i}.json")
    job = {
        "model": model,
        "dataset": dataset,
        "config_files": config_files,
        "runs": runs,
    }
    env = {**os.environ, "RESUME_JOB": json.dumps(job), "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=workdir, env=env, capture_output=True
    )
    expected = -9 if killed else 0
    assert proc.returncode == expected, proc.stderr.decode()[-3000:]
    return [
        json.loads(open(one["out"]).read()) if os.path.exists(one["out"]) else None
        for one in runs
    ]


def general_job(workdir):
    """A generated dataset in the DiffRec release format, small enough for seconds."""
    folder = workdir / "release"
    make_release(folder, users=200, items=120)
    return "toy", release_settings(folder, workdir, **FAST), [PAPER_PROTOCOL_YAML]


def sequence_job(workdir):
    from recbole_diffrec.synthetic import generate_sequences, write_sequences

    path = write_sequences(
        generate_sequences(60, 30, 6, 12, follow=0.9, seed=0), workdir / "gen.jsonl"
    )
    settings = {
        **SEQ_TINY,
        "sequence_file": str(path),
        "data_path": str(workdir / "data"),
    }
    return "gen-seq", settings, [SEQUENCE_YAML]


EPOCHS = 3
# Kill points: right after a state file was written (the first batch of epoch 1), in the
# middle of an epoch, and after training ended (the test evaluation).
KILLS = {"first-batch": [1, 1], "mid-epoch": [2, 2], "test": "test"}
MODELS = {"DiffRec": {}, "LDiffRec": SVD, "TDiffRec": {}, "DiffuRec": {}, "BPR": {}}
# Each case starts Python three times (about a minute on a busy 2-core machine), so the
# default suite kills two; RECBOLE_DIFFREC_SLOW=1 runs the whole matrix.
QUICK = {("DiffRec", "mid-epoch"), ("BPR", "first-batch")}
SLOW = os.environ.get("RECBOLE_DIFFREC_SLOW") == "1"
CASES = [
    pytest.param(
        model,
        point,
        id=f"{model}-{point}",
        marks=(
            []
            if SLOW or (model, point) in QUICK
            else [pytest.mark.skip(reason="set RECBOLE_DIFFREC_SLOW=1")]
        ),
    )
    for model in MODELS
    for point in KILLS
]


@pytest.mark.slow
@pytest.mark.parametrize("model, point", CASES)
def test_killed_run_resumes_bit_for_bit(workdir, model, point):
    extra, kill, epochs = MODELS[model], KILLS[point], EPOCHS
    job = sequence_job if model == "DiffuRec" else general_job
    dataset, base, files = job(workdir)
    settings = {**base, **extra, "epochs": epochs, "stopping_step": 10}
    # The uninterrupted run, then the same run killed (own folders: names have seconds).
    whole, _ = train(
        workdir,
        model,
        dataset,
        files,
        [
            {"settings": {**settings, "checkpoint_dir": str(workdir / "whole")}},
            {"settings": {**settings, "checkpoint_dir": "saved"}, "kill": kill},
        ],
        killed=True,
    )
    (state,) = sorted((workdir / "saved").glob("*.state"))
    saved = torch.load(state, weights_only=True)
    assert saved["format"] == STATE_FORMAT
    assert saved["epochs_done"] == (epochs if kill == "test" else kill[0])

    # Resumed in a new process.
    resume = {**settings, "checkpoint_dir": "saved", "resume": str(state)}
    (resumed,) = train(
        workdir, model, dataset, files, [{"settings": resume}], killed=False
    )
    assert len(resumed["valid_curve"]) == epochs
    assert resumed["valid_curve"] == whole["valid_curve"]
    assert resumed["best_valid_result"] == whole["best_valid_result"]
    assert resumed["test_result"] == whole["test_result"]
    assert resumed["state_file"] == str(state)


def test_nan_loss_stops_with_one_error_and_keeps_a_resumable_state(workdir):
    from recbole_diffrec import run
    from recbole_diffrec.registry import get_model
    from recbole_diffrec.trainer import NonFiniteLossError, get_trainer

    dataset, base, files = general_job(workdir)
    settings = {**base, "epochs": 4}

    class NaNAtEpoch2Batch3(get_trainer(get_model("DiffRec"))):
        def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
            model, batches = self.model, iter(range(1, 10**9))
            original = model.calculate_loss

            def loss(interaction):
                value = original(interaction)
                if (epoch_idx, next(batches)) == (2, 3):
                    return value * float("nan")
                return value

            model.calculate_loss = loss
            try:
                return super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
            finally:
                del model.calculate_loss

    with pytest.raises(NonFiniteLossError) as err:
        run("DiffRec", dataset, files, settings, trainer_class=NaNAtEpoch2Batch3)
    message = str(err.value)
    (state,) = sorted((workdir / "saved").glob("*.state"))
    assert "epoch 2, batch 3 (of 4)" in message and "learning rate" in message
    assert str(state) in message or os.path.basename(state) in message
    saved = torch.load(state, weights_only=True)
    assert saved["epochs_done"] == 2 and len(saved["valid_curve"]) == 2
    assert os.path.exists(saved["best_model_file"])

    resumed = run("DiffRec", dataset, files, {**settings, "resume": "auto"})
    assert resumed["state_file"].endswith(state.name)
    assert [e["epoch"] for e in resumed["valid_curve"]] == [0, 1, 2, 3]


def test_a_resumed_trial_counts_the_evaluations_before_the_interruption():
    from recbole_diffrec.tune.trial import _Reporter

    sent = []
    reporter = _Reporter("ndcg@10", True, 7, sent.append)
    reporter.replay(
        [
            {"epoch": 0, "score": 0.2, "ndcg@10": 0.2},
            {"epoch": 1, "score": 0.1, "ndcg@10": 0.1},
        ]
    )
    assert sent == []  # Ray already has these reports
    assert (reporter.best, reporter.best_epoch, reporter.epoch) == (0.2, 1, 2)
    assert reporter.last["valid_score"] == 0.1


def test_resuming_a_finished_run_only_tests_again(workdir):
    from recbole_diffrec import run

    dataset, base, files = general_job(workdir)
    settings = {**base, "epochs": 4, "stopping_step": 0}
    first = run("DiffRec", dataset, files, settings)
    written = os.path.getmtime(first["model_file"])
    again = run("DiffRec", dataset, files, {**settings, "resume": "auto"})
    assert again["valid_curve"] == first["valid_curve"]
    assert again["test_result"] == first["test_result"]
    # RecBole's fit would have overwritten the best model with the last one.
    assert again["model_file"] == first["model_file"]
    assert os.path.getmtime(first["model_file"]) == written

    other = {**settings, "checkpoint_every": 0, "checkpoint_dir": "other"}
    result = run("DiffRec", dataset, files, other)
    assert result["valid_curve"] and result["state_file"] is None
    assert not list((workdir / "other").glob("*.state"))


def test_checkpoint_dir_exists_before_recboles_check_then_create(workdir, monkeypatch):
    # RecBole's Trainer creates checkpoint_dir with "if not exists: makedirs": ranks of a
    # data-parallel run starting together raced there (FileExistsError on one of them).
    # The plugin's trainer creates it first, so RecBole's check always finds it.
    import recbole.trainer.trainer as recbole_trainer

    from recbole_diffrec import run

    found = []
    real = recbole_trainer.ensure_dir
    monkeypatch.setattr(
        recbole_trainer,
        "ensure_dir",
        lambda path: (found.append(os.path.isdir(path)), real(path))[1],
    )
    dataset, base, files = general_job(workdir)
    nested = str(workdir / "deep" / "saved")
    result = run(
        "DiffRec", dataset, files, {**base, "epochs": 1, "checkpoint_dir": nested}
    )
    assert found and all(found)
    assert os.path.dirname(result["model_file"]) == nested
