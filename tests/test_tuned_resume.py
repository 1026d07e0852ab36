"""The tuned head-to-head's seed and rerun runs survive the end of a session: an
interrupted run continues from its last training state and gives the result an
uninterrupted run gives, with the epochs and time before the interruption counted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.sections import tuned
from benchmarks.sections.tuned_report import users_file


class Killed(Exception):
    """Stands for the session ending in the middle of a run."""


def quick_runner(results):
    from benchmarks.runner import Options, Runner
    from benchmarks.sections import registry

    return Runner(
        {"quick": True},
        Options(quick=True, results=results),
        registry(),
        code_versions={"tuned": "new"},
    )


SEED_JOB = {
    "section": "tuned",
    "name": "quick-synth-DiffRec",
    "dataset": "quick-synth",
    "model": "DiffRec",
    "phase": "seed",
    "settings": {"learning_rate": 1.0e-3, "steps": 5},
    "common": {"show_progress": False},
    "per_user_metric": "ndcg@20",
    "seed": 2021,
}


def test_an_interrupted_seed_run_resumes_to_the_uninterrupted_result(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # RecBole's saved/ and log/ folders
    whole_runner = quick_runner(tmp_path / "whole")
    whole = tuned.seed_worker(whole_runner, dict(SEED_JOB))
    assert whole["epochs"] == 4  # the --quick training length, no early stop

    runner = quick_runner(tmp_path / "cut")
    progress = tuned.progress_file(runner, SEED_JOB)
    made = tuned.per_user_trainer

    def killed_in_epoch_3(model, captured):
        base, epoch_seconds, evaluations = made(model, captured)

        class Killing(base):
            def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
                if epoch_idx == 3:
                    raise Killed
                return super()._train_epoch(train_data, epoch_idx, *args, **kwargs)

        return Killing, epoch_seconds, evaluations

    monkeypatch.setattr(tuned, "per_user_trainer", killed_in_epoch_3)
    with pytest.raises(Killed):
        tuned.seed_worker(runner, dict(SEED_JOB))
    record = json.loads(progress.read_text())
    # The state written as epoch 2 began, and the one before it (a kill between a
    # record and its state file leaves that one).
    assert [r["epochs_done"] for r in record["records"]] == [1, 2]
    assert len(record["records"][-1]["epoch_seconds"]) == 2
    spent = record["records"][-1]["seconds"]
    assert spent > 0 and (tmp_path / "saved").is_dir()
    state = record["state_file"]

    trained = []

    def recording(model, captured):
        base, epoch_seconds, evaluations = made(model, captured)

        class Recording(base):
            def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
                trained.append(epoch_idx)
                return super()._train_epoch(train_data, epoch_idx, *args, **kwargs)

        return Recording, epoch_seconds, evaluations

    monkeypatch.setattr(tuned, "per_user_trainer", recording)
    resumed = tuned.seed_worker(runner, dict(SEED_JOB))
    assert trained == [2, 3]  # continued from the state, not started over
    for key in ("test", "valid", "epochs", "parameters"):
        assert resumed[key] == whole[key], key
    assert resumed["time_to_result"] > spent  # the first session's time counts
    ours = np.load(users_file(runner.result_path(SEED_JOB)))
    theirs = np.load(users_file(whole_runner.result_path(SEED_JOB)))
    assert np.array_equal(ours["users"], theirs["users"])
    assert np.array_equal(ours["scores"], theirs["scores"])
    # Done: nothing of the run is left behind.
    assert not progress.exists()
    assert not (tmp_path / state).exists()
    assert not list((tmp_path / "saved").glob("DiffRec-*"))


def test_a_recorded_state_that_is_gone_means_a_fresh_start(tmp_path):
    progress = tmp_path / "progress" / "job.json"
    assert tuned.recorded_state(progress) is None
    progress.parent.mkdir()
    state = tmp_path / "DiffRec-x.pth.state"
    state.write_bytes(b"")
    progress.write_text(json.dumps({"state_file": str(state), "records": []}))
    assert tuned.recorded_state(progress) == str(state)
    state.unlink()  # its machine was replaced
    assert tuned.recorded_state(progress) is None
    assert not progress.exists()


def test_an_interrupted_rerun_of_best_yaml_resumes_to_the_uninterrupted_result(
    tmp_path, monkeypatch
):
    import yaml

    import recbole_diffrec

    monkeypatch.chdir(tmp_path)

    def rerun_job(runner):
        # best.yaml as a search writes it: the dataset's settings, the fixed ones and
        # the chosen point, with the trial's seed.
        with open(tuned.dataset_files(runner, "quick-synth")[0]) as handle:
            settings = yaml.safe_load(handle)
        settings.update(tuned.dataset_settings(runner))
        settings.update(show_progress=False, learning_rate=1.0e-3, seed=2024)
        return {
            "section": "tuned",
            "name": "quick-synth-DiffRec",
            "dataset": "quick-synth",
            "model": "DiffRec",
            "phase": "rerun",
            "best_yaml": yaml.safe_dump(settings),
            "seed": "rerun",
        }

    whole_runner = quick_runner(tmp_path / "whole")
    whole = tuned.rerun_worker(whole_runner, rerun_job(whole_runner))

    runner = quick_runner(tmp_path / "cut")
    job = rerun_job(runner)
    made = recbole_diffrec.get_trainer
    trained = []

    def trainer_of(model_class, killing):
        class Trainer(made(model_class)):
            def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
                if killing and epoch_idx == 3:
                    raise Killed
                trained.append(epoch_idx)
                return super()._train_epoch(train_data, epoch_idx, *args, **kwargs)

        return Trainer

    monkeypatch.setattr(recbole_diffrec, "get_trainer", lambda m: trainer_of(m, True))
    with pytest.raises(Killed):
        tuned.rerun_worker(runner, job)
    assert tuned.progress_file(runner, job).is_file()
    trained.clear()
    monkeypatch.setattr(recbole_diffrec, "get_trainer", lambda m: trainer_of(m, False))
    resumed = tuned.rerun_worker(runner, job)
    assert trained == [2, 3]
    assert resumed == whole
    assert not tuned.progress_file(runner, job).exists()
