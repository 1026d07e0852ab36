import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


def usable_cpus() -> int:
    """The CPUs this process may run on (a container or taskset may allow fewer than
    the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


# Under pytest-xdist (setup.cfg's `-n auto`) the workers share the cores: each worker's
# torch pool gets its share instead of every core, which oversubscribes them.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(
        max(1, usable_cpus() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    )


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per usable CPU (xdist's own count is of physical cores:
    one on a machine of two hyper-threads), at most 8: each worker holds torch and
    RecBole and some start Ray, and the longest test bounds the run anyway.
    PYTEST_XDIST_AUTO_NUM_WORKERS still sets the number: xdist's own hook reads it."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # the next implementation of this first-result hook, xdist's
    return min(usable_cpus(), 8)


def pytest_collection_modifyitems(items):
    """Slow tests first (a stable sort keeps their order otherwise): the workers then
    finish together instead of one running a long test after the other is done."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


ROOT = Path(__file__).resolve().parents[1]
PAPER_PROTOCOL_YAML = str(ROOT / "properties" / "dataset" / "ml-1m_clean.yaml")
SEQUENCE_YAML = str(ROOT / "properties" / "dataset" / "amazon-beauty.yaml")
# Settings that keep the sequential models' runs to seconds (no dropout: exact comparisons).
SEQ_TINY = {
    "state": "WARNING",
    "show_progress": False,
    "hidden_size": 32,
    "n_layers": 1,
    "n_heads": 2,
    "dropout": 0.0,
    "emb_dropout": 0.0,
    "MAX_ITEM_LIST_LENGTH": 10,
    "train_batch_size": 64,
    "eval_batch_size": 256,
    "steps": 24,
}
# L-DiffRec's clusters from a quick SVD instead of a LightGCN training.
SVD = {"item_emb_source": "svd", "item_emb_svd_dim": 16}


def release_settings(folder, workdir, **extra):
    """config_dict for a release-format fixture run with the ml-1m_clean protocol yaml."""
    return {
        "release_path": str(folder),
        "data_path": str(workdir / "data"),
        "state": "WARNING",
        **extra,
    }


# Command-line settings for tiny DiffRec searches on ml-100k: a few seconds per trial.
TINY_SEARCH = [
    "--epochs=3",
    "--eval_step=1",
    "--steps=5",
    "--dims_dnn=[64]",
    "--train_batch_size=64",
    "--state=WARNING",
    "--show_progress=False",
]

# Settings that keep end-to-end runs on ml-100k to a few seconds.
FAST = {
    "epochs": 2,
    "eval_step": 1,
    "show_progress": False,
    "state": "WARNING",
    "steps": 5,
    "dims_dnn": [64],
    "train_batch_size": 64,
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a temporary folder (RecBole writes log/ and saved/ there) with a clean argv
    (RecBole's Config reads --key=value from sys.argv)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    return tmp_path


def make_release(folder, users=40, items=60, seed=0):
    """A small dataset in the DiffRec release format; every user has train, valid and
    test items, each user's rows in time order."""
    rng = np.random.default_rng(seed)
    splits = {"train": [], "valid": [], "test": []}
    for u in range(users):
        # Two taste groups, so models have something to learn.
        pool = np.arange(items // 2) if u % 2 == 0 else np.arange(items // 2, items)
        chosen = rng.choice(pool, size=int(rng.integers(8, 14)), replace=False)
        n_test, n_valid = 2, 2
        splits["train"] += [(u, i) for i in chosen[: -n_test - n_valid]]
        splits["valid"] += [(u, i) for i in chosen[-n_test - n_valid : -n_test]]
        splits["test"] += [(u, i) for i in chosen[-n_test:]]
    folder.mkdir(parents=True, exist_ok=True)
    for name, pairs in splits.items():
        np.save(folder / f"{name}_list.npy", np.array(pairs, dtype=np.int64))
    return splits


@pytest.fixture
def release(tmp_path):
    folder = tmp_path / "release"
    return folder, make_release(folder)


def interrupt_once_started(command, cwd, trial_dirs: str, timeout: float = 400):
    """Run a search command and send it Ctrl+C as soon as a trial whose folder matches
    the glob ``trial_dirs`` has started (its ``starts.log``, which the trial writes
    itself, appears): a search interrupted mid-way, on a fast machine or a loaded one.
    Returns ``(returncode, output)``."""
    import glob
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + timeout
    while not glob.glob(f"{trial_dirs}/starts.log"):
        if proc.poll() is not None or time.time() > deadline:
            output, _ = proc.communicate(timeout=120)
            raise AssertionError(f"no {trial_dirs} started:\n{output[-3000:]}")
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    return proc.returncode, output
