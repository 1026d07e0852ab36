"""Snapshots of the tuned suite's searches (benchmarks/sections/tuned_folders.py): what a
snapshot keeps and leaves out, when the suite takes, restores and drops one. A real search
resumed from one after its Tune folder was lost: tests/test_tune.py, on a Ray cluster.
"""

import json
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from benchmarks.runner import Options, Runner, cache_key, job_digest
from benchmarks.sections import tuned_folders
from benchmarks.sections.tuned_folders import (
    finished_trials,
    keep_snapshots,
    restore_snapshots,
    snapshot_finished_trials,
    snapshot_path,
    unpack_snapshot,
    write_snapshot,
)

CODE = "abcdef123456"  # the toy runner's code version


def trial_entry(trial_id: str, status: str) -> dict:
    return {"trial_id": trial_id, "status": status, "config": {"x": 1}}


def experiment_state(trials, new_ray: bool) -> dict:
    """An experiment_state json as Ray 2.6 writes it (trial json strings under
    ``checkpoints``) or as current Ray does (``[trial, runtime]`` pairs)."""
    if new_ray:
        return {"trial_data": [[json.dumps(t), "{}"] for t in trials]}
    return {"checkpoints": [json.dumps(t) for t in trials], "runner_data": {}}


def make_folder(folder: Path, statuses, new_ray=False) -> Path:
    """A Tune folder with one trial folder per status: results, a checkpoint, a log."""
    folder.mkdir(parents=True)
    trials = [trial_entry(f"aaaaa_0000{i}", s) for i, s in enumerate(statuses)]
    state = experiment_state(trials, new_ray)
    (folder / "experiment_state-2026-12-06_01-00-00.json").write_text(json.dumps(state))
    (folder / "search.json").write_text("{}")
    (folder / "tuner.pkl").write_bytes(b"pickled")
    for i, trial in enumerate(trials):
        trial_dir = folder / f"run_trial_{trial['trial_id']}_{i}_x=1_2026-12-06"
        (trial_dir / "checkpoints").mkdir(parents=True)
        (trial_dir / "checkpoints" / "EASE-1.pth").write_bytes(b"weights" * 100)
        (trial_dir / "checkpoints" / "EASE-1.pth.state").write_bytes(b"state" * 100)
        (trial_dir / "result.json").write_text('{"valid_score": 0.1}\n')
        (trial_dir / "starts.log").write_text("1.0\n")
        (trial_dir / "log").mkdir()
        (trial_dir / "log" / "run.log").write_text("log\n")
    return folder


def names_in(snapshot: Path):
    with tarfile.open(snapshot) as tar:
        return sorted(tar.getnames())


@pytest.mark.parametrize("new_ray", [False, True])
def test_a_snapshot_keeps_finished_trials_without_checkpoints_and_drops_the_others(
    tmp_path, new_ray
):
    folder = tmp_path / "tuned" / "tune" / "data-EASE-0123456789-abcdef123456"
    make_folder(folder, ["TERMINATED", "RUNNING", "ERROR"], new_ray)
    assert finished_trials(folder) == ["aaaaa_00000"]
    snapshot = write_snapshot(folder)
    assert snapshot == snapshot_path(folder)
    assert snapshot == tmp_path / "tuned" / "snapshots" / f"{folder.name}.tar.gz"
    name = folder.name
    done = f"{name}/run_trial_aaaaa_00000_0_x=1_2026-12-06"
    assert names_in(snapshot) == sorted(
        [
            f"{name}/experiment_state-2026-12-06_01-00-00.json",
            f"{name}/search.json",
            f"{name}/tuner.pkl",
            f"{done}/log/run.log",
            f"{done}/result.json",
            f"{done}/starts.log",
        ]
    )
    assert not list(snapshot.parent.glob("*.partial"))
    assert snapshot_finished_trials(snapshot) == ["aaaaa_00000"]  # read in place

    # Unpacked, it is the folder less what it left out, byte for byte.
    restored = tmp_path / "restored" / name
    unpack_snapshot(snapshot, restored)
    for path in restored.rglob("*"):
        if path.is_file():
            original = folder / path.relative_to(restored)
            assert path.read_bytes() == original.read_bytes()
    assert finished_trials(restored) == ["aaaaa_00000"]
    assert sorted(p.name for p in restored.parent.iterdir()) == [name]  # no temp left


def test_no_snapshot_before_a_trial_has_finished(tmp_path):
    folder = make_folder(tmp_path / "tune" / "x", ["RUNNING", "PENDING"])
    assert write_snapshot(folder) is None
    assert not snapshot_path(folder).exists()


def search_job(name="data-EASE"):
    return {"section": "tuned", "name": name, "phase": "search", "model": "EASE"}


def toy_runner(tmp_path, code=CODE):
    return Runner({}, Options(results=tmp_path), {}, code_versions={"tuned": code})


def job_folder(tmp_path, job, code=CODE):
    return tmp_path / "tuned" / "tune" / f"{job['name']}-{job_digest(job)}-{code}"


def test_the_suite_restores_a_lost_folder_keeps_a_present_one_and_drops_done_ones(
    tmp_path,
):
    runner, job = toy_runner(tmp_path), search_job()
    folder = job_folder(tmp_path, job)
    make_folder(folder, ["TERMINATED", "RUNNING"])
    snapshot = write_snapshot(folder)
    kept = (folder / "search.json").read_bytes()

    # The folder is there: nothing is touched.
    (folder / "search.json").write_text('{"newer": true}')
    restore_snapshots(runner, job)
    assert (folder / "search.json").read_text() == '{"newer": true}'

    # The machine was lost: the folder comes back from the snapshot.
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    folder.rmdir()
    restore_snapshots(runner, job)
    assert (folder / "search.json").read_bytes() == kept
    assert finished_trials(folder) == ["aaaaa_00000"]
    assert not (folder / "run_trial_aaaaa_00001_1_x=1_2026-12-06").exists()

    # Other jobs' snapshots are not its own; seeds have none.
    other = search_job("data-BPR")
    restore_snapshots(runner, other)
    restore_snapshots(runner, {**job, "phase": "seed", "seed": 2020})
    assert not job_folder(tmp_path, other).exists()

    # Once the search's result is written, its snapshot is dropped, not restored.
    (tmp_path / "tuned" / f"{cache_key(job, CODE)}.json").write_text("{}")
    folder.rename(folder.with_name("elsewhere"))
    restore_snapshots(runner, job)
    assert not snapshot.exists() and not folder.exists()


def test_a_running_search_refreshes_its_snapshot_as_trials_finish(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(tuned_folders, "SNAPSHOT_EVERY_SECONDS", 0.05)
    runner, job = toy_runner(tmp_path), search_job()
    folder = job_folder(tmp_path, job)
    snapshot = snapshot_path(folder)

    def wait_for(condition):
        deadline = time.time() + 30
        while not condition() and time.time() < deadline:
            time.sleep(0.05)
        assert condition()

    def finished_in_snapshot():
        if not snapshot.exists():
            return []
        restored = tmp_path / "check" / folder.name
        if restored.exists():
            shutil.rmtree(restored)
        unpack_snapshot(snapshot, restored)
        return finished_trials(restored)

    # A search that finishes its trials one by one, then writes its result.
    with keep_snapshots(runner, job, CODE):
        time.sleep(0.2)
        assert not snapshot.exists()  # no folder yet, then no finished trial
        make_folder(folder, ["TERMINATED", "RUNNING"])
        wait_for(lambda: finished_in_snapshot() == ["aaaaa_00000"])
        state = folder / "experiment_state-2026-12-06_01-00-00.json"
        trials = [trial_entry(f"aaaaa_0000{i}", "TERMINATED") for i in range(2)]
        state.write_text(json.dumps(experiment_state(trials, new_ray=False)))
        wait_for(lambda: len(finished_in_snapshot()) == 2)
    assert not snapshot.exists()  # the result is written: the snapshot is dropped

    # An interrupted search leaves its newest snapshot, even between two rounds.
    monkeypatch.setattr(tuned_folders, "SNAPSHOT_EVERY_SECONDS", 3600)
    with pytest.raises(KeyboardInterrupt):
        with keep_snapshots(runner, job, CODE):
            raise KeyboardInterrupt
    assert len(finished_in_snapshot()) == 2

    # Other phases run without a keeper.
    snapshot.unlink()
    with keep_snapshots(runner, {**job, "phase": "seed", "seed": 2020}, CODE):
        pass
    assert not snapshot.exists()
