"""Helpers the benchmark workers share: tiny generated data for --quick, trainers that
record timings or stop on a budget, and the process's peak memory.

Every section's results depend on this module, so it is part of every section's code
hash (benchmarks/runner.py): keep report-only code out of it.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]

# --quick: tiny generated data and a couple of epochs, same pipeline.
QUICK_OVERRIDES = {
    "epochs": 2,
    "eval_step": 1,
    "steps": 5,
    "dims_dnn": [32],
    "in_dims": [16],
    "item_emb_lightgcn": {"epochs": 1},
    "embedding_size": 16,
}
QUICK_SEQUENTIAL_OVERRIDES = {
    "hidden_size": 16,
    "embedding_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 2,
    "steps": 21,
    "MAX_ITEM_LIST_LENGTH": 10,
    "train_batch_size": 64,
}


def quick_dataset(quick_dir: Path) -> Dict[str, Any]:
    """A tiny generated dataset in the DiffRec release format (per-user time split)."""
    from recbole_diffrec.synthetic import generate

    release = quick_dir / "release"
    if not (release / "test_list.npy").is_file():
        users, items = generate(120, 90, 2400, seed=0, min_per_user=8)
        order = np.lexsort((np.arange(len(users)), users))
        users, items = users[order], items[order]
        rank = np.arange(len(users)) - np.searchsorted(users, users)
        counts = np.bincount(users)[users]
        n_test = np.maximum(counts // 10, 1)
        n_valid = np.maximum(counts // 5, 1)
        split = np.where(
            rank >= counts - n_test,
            2,
            np.where(rank >= counts - n_test - n_valid, 1, 0),
        )
        release.mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(("train", "valid", "test")):
            pairs = np.column_stack([users[split == index], items[split == index]])
            np.save(release / f"{name}_list.npy", pairs.astype(np.int64))
    return {"release_path": str(release), "data_path": str(quick_dir / "data")}


def quick_sequences(quick_dir: Path) -> Dict[str, Any]:
    """A tiny generated sequence file (ordered, so sequential models can learn)."""
    from recbole_diffrec.synthetic import generate_sequences, write_sequences

    path = quick_dir / "quick-seq.jsonl"
    if not path.is_file():
        write_sequences(generate_sequences(150, 60, 5, 12, seed=0), path)
    return {"sequence_file": str(path), "data_path": str(quick_dir / "data")}


def dataset_name(spec: Dict[str, Any]) -> str:
    return "quick-synth" if spec["quick"] else spec["dataset"]


def copy_release_embeddings(spec: Dict[str, Any]) -> None:
    """RecBole's LDiffRec reads <data_path>/<dataset>/item_emb.npy by row position."""
    settings = yaml.safe_load((ROOT / spec["dataset_config"]).read_text())
    source = ROOT / settings["release_path"] / "item_emb.npy"
    target = ROOT / settings["data_path"] / spec["dataset"] / "item_emb.npy"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())


def run_settings(
    spec: Dict[str, Any], job: Dict[str, Any], results_dir: Path
) -> Dict[str, Any]:
    """A ml-1m_clean run's settings: the spec's common ones, the job's, its seed (and the
    tiny data and short training with --quick). Prepares the release embedding file
    RecBole's LDiffRec needs."""
    settings = {**spec["common"], **job["settings"], "seed": job["seed"]}
    if spec["quick"]:
        settings.update(quick_dataset(results_dir))
        settings.update(QUICK_OVERRIDES)
    elif job.get("model") == "recbole.LDiffRec":
        copy_release_embeddings(spec)
    return settings


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_trainer(model: str):
    """The model's trainer, recording seconds per training epoch and, per evaluation,
    ``(seconds, users evaluated)``. Returns ``(trainer class, epochs, evaluations)``."""
    from recbole_diffrec import get_model, get_trainer

    epoch_seconds: List[float] = []
    evaluations: List[tuple] = []

    class TimedTrainer(get_trainer(get_model(model))):
        def _train_epoch(self, *args, **kwargs):
            start = time.perf_counter()
            loss = super()._train_epoch(*args, **kwargs)
            epoch_seconds.append(time.perf_counter() - start)
            return loss

        def evaluate(self, eval_data, *args, **kwargs):
            start = time.perf_counter()
            result = super().evaluate(eval_data, *args, **kwargs)
            evaluations.append((time.perf_counter() - start, len(eval_data.uid_list)))
            return result

    return TimedTrainer, epoch_seconds, evaluations


class TrainingBudgetSpent(Exception):
    """Raised before a training batch once the run has used its budget."""


def budget_trainer(
    model: str, over_budget: Callable[[], bool], record: Dict[str, Any]
) -> type:
    """The model's trainer, whose ``fit`` ends before the first training batch for which
    ``over_budget()`` holds and then returns the best validation so far (as when it stops
    early). Counts ``record["batches"]`` and ``record["batches_per_epoch"]``, and sets
    ``record["budget_spent"]`` when the budget ended the run."""
    from recbole_diffrec import get_model, get_trainer

    class BudgetTrainer(get_trainer(get_model(model))):
        def _train_epoch(self, train_data, *args, **kwargs):
            record["batches_per_epoch"] = len(train_data)
            return super()._train_epoch(train_data, *args, **kwargs)

        def fit(self, *args, **kwargs):
            original = self.model.calculate_loss

            def calculate_loss(interaction):
                if over_budget():
                    raise TrainingBudgetSpent
                record["batches"] += 1
                return original(interaction)

            self.model.calculate_loss = calculate_loss
            try:
                return super().fit(*args, **kwargs)
            except TrainingBudgetSpent:
                record["budget_spent"] = True
                return self.best_valid_score, self.best_valid_result
            finally:
                del self.model.calculate_loss

    return BudgetTrainer
