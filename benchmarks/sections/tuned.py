"""Tuned head-to-head: every model, diffusion or not, gets the same Ray Tune budget
through the plugin's own search (``trials`` random draws from its space in
``properties/hyper/<model>.yaml``, one scheduler for all, selection on validation only);
the chosen setting then runs with five seeds, and the search's ``best.yaml`` is rerun once
to check it reproduces the chosen trial. Per-user test NDCG@20 of every seed run is kept
for paired tests over users (benchmarks/stats.py). Settings:
properties/experiment/tuned_suite.yaml.

Jobs per dataset and model, in the spec's order: ``search`` (the whole Tune search, in
``<results>/tuned/tune/``, which resumes an interrupted search), then one ``seed`` job per
seed and one ``rerun`` job, both built from the search's result. A seed or rerun job
interrupted with its machine's session continues from its last training state
(``progress_file``), so runs longer than a session finish.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from ..runner import ROOT, Runner, job_digest, write_atomically
from ..training import QUICK_OVERRIDES, peak_rss_mb, quick_dataset, timed_trainer
from . import Section
from .tuned_report import render, users_file

SPEC_FILE = ROOT / "properties" / "experiment" / "tuned_suite.yaml"
METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
# Options the suite sets for every model, over each space file's own ``tune:`` block.
SHARED_TUNE_OPTIONS = (
    "scheduler",
    "grace_period",
    "reduction_factor",
    "search",
    "search_seed",
    "cpus_per_trial",
)


def quick(spec: Dict[str, Any]) -> None:
    """Two trials of two models (one of each family) on the tiny generated dataset, two
    seeds."""
    tuned = spec["tuned"]
    tuned.update(trials=2, seeds=[2020, 2021])
    tuned["tune"]["grace_period"] = 1
    tuned["datasets"] = {"quick-synth": None}
    tuned["models"] = ["EASE", "DiffRec"]


def space_file(model: str) -> Path:
    return ROOT / "properties" / "hyper" / f"{model}.yaml"


def check_space(model: str) -> None:
    """A ``grid`` distribution would multiply the trials: refuse it before any run."""
    from recbole_diffrec.tune.space import load_search_space

    path = space_file(model)
    spec = load_search_space(str(path))
    grids = [k for k, (dist, _) in spec.space.items() if dist == "grid"]
    if grids:
        raise ValueError(
            f"{path}: {grids} use `grid`, which multiplies the tuned suite's equal trial "
            "budget; use choice (or a continuous distribution)"
        )


def jobs(runner: Runner, needed: Mapping[str, Any]) -> Dict[str, Any]:
    """Dataset by dataset, model by model: the search, then its seeds and rerun (so an
    interrupted suite has whole models done)."""
    tuned = runner.spec["tuned"]
    searches: Dict[tuple, Dict[str, Any]] = {}
    seeds: Dict[tuple, List[Dict[str, Any]]] = {}
    reruns: Dict[tuple, Dict[str, Any]] = {}
    for model in tuned["models"]:
        check_space(model)
    for dataset in tuned["datasets"]:
        for model in tuned["models"]:
            key = (dataset, model)
            search = {
                "section": "tuned",
                "name": f"{dataset}-{model}",
                "phase": "search",
                "dataset": dataset,
                "model": model,
                "trials": tuned["trials"],
                "tune": tuned["tune"],
                "common": tuned["common"],
                "space": space_file(model).read_text(),
            }
            searches[key] = search
            runner.execute([search], f"{dataset} {model} search")
            if not runner.cached(search):  # --cached-only, or not run yet
                continue
            found = runner.read(search)
            base = {k: search[k] for k in ("section", "name", "dataset", "model")}
            seeds[key] = [
                {
                    **base,
                    "phase": "seed",
                    "settings": found["best_settings"],
                    "common": tuned["common"],
                    "per_user_metric": tuned["per_user_metric"],
                    "seed": seed,
                }
                for seed in tuned["seeds"]
            ]
            reruns[key] = {
                **base,
                "phase": "rerun",
                "best_yaml": found["best_yaml"],
                "seed": "rerun",
            }
            runner.execute(seeds[key] + [reruns[key]], f"{dataset} {model} seeds")
    return {"searches": searches, "seeds": seeds, "reruns": reruns}


# ---------------------------------------------------------------------------- workers
def dataset_files(runner: Runner, dataset: str) -> List[str]:
    if runner.spec["quick"]:
        return [str(ROOT / "properties" / "dataset" / "ml-1m_clean.yaml")]
    return [str(ROOT / runner.spec["tuned"]["datasets"][dataset])]


def dataset_settings(runner: Runner) -> Dict[str, Any]:
    """The tiny generated data and short training of --quick; nothing otherwise."""
    if not runner.spec["quick"]:
        return {}
    return {
        **quick_dataset(runner.results_dir),
        **{
            k: v for k, v in QUICK_OVERRIDES.items() if k not in ("epochs", "eval_step")
        },
        "epochs": 4,
        "eval_step": 1,
    }


def run_name(runner: Runner, job: Dict[str, Any]) -> str:
    return "quick-synth" if runner.spec["quick"] else job["dataset"]


def search_worker(runner: Runner, job: Dict[str, Any]) -> Dict[str, Any]:
    from recbole_diffrec.tune import run_search

    from recbole_diffrec.tune.space import load_search_space

    own = load_search_space(str(space_file(job["model"]))).space
    fixed = {**job["common"], **dataset_settings(runner)}
    fixed = {k: v for k, v in fixed.items() if k not in own}  # the space's keys vary
    options = {
        **job["tune"],
        "num_samples": job["trials"],
        # The code version too: a search rerun for new code must not resume the trials
        # an older version finished.
        "name": f"{job['name']}-{job_digest(job)}-{runner.code_version(job)}",
        "tune_dir": str(runner.results_dir / "tuned" / "tune"),
    }
    start = time.perf_counter()
    summary = run_search(
        job["model"],
        run_name(runner, job),
        str(space_file(job["model"])),
        config_files=dataset_files(runner, job["dataset"]),
        fixed=fixed,
        options=options,
    )
    seconds = time.perf_counter() - start
    if summary["interrupted"] or summary["best"] is None:
        raise RuntimeError(
            f"{job['name']}: the search ended without a finished best trial "
            f"(see {summary['exp_dir']}); rerun the suite to resume it"
        )
    best = summary["best"]
    exp_dir = Path(summary["exp_dir"])
    return {
        "best_settings": summary["best_settings"],
        "best_trial": best["trial"],
        "best_trial_test": {k[5:]: v for k, v in best.items() if k.startswith("test_")},
        "best_yaml": (exp_dir / "best.yaml").read_text(),
        "trials": [
            {k: v for k, v in row.items() if k not in ("path", "model_file")}
            for row in summary["trials"]
        ],
        "search_seconds": seconds,
        "exp_dir": os.path.relpath(exp_dir, ROOT),
    }


def per_user_trainer(model: str, captured: Dict[str, Any]):
    """The timed trainer, also keeping the last evaluation's per-user top-k hits (RecBole's
    ``rec.topk``: hits in the first k columns, the user's number of positives last)."""
    Timed, epoch_seconds, evaluations = timed_trainer(model)

    class PerUserTrainer(Timed):
        def evaluate(self, eval_data, *args, **kwargs):
            evaluator = self.evaluator.evaluate

            def keep(struct):
                captured["topk"] = struct.get("rec.topk").cpu().numpy()
                return evaluator(struct)

            self.evaluator.evaluate = keep
            try:
                result = super().evaluate(eval_data, *args, **kwargs)
            finally:
                self.evaluator.evaluate = evaluator
            captured["users"] = np.asarray(eval_data.uid_list)
            return result

    return PerUserTrainer, epoch_seconds, evaluations


def per_user_ndcg(topk: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k per user with binary gains, IDCG over min(positives, k) positions (RecBole's
    definition)."""
    hits = topk[:, :k].astype(float)
    positives = topk[:, -1].astype(int)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discounts
    ideal = np.cumsum(discounts)[np.minimum(positives, k) - 1]
    return dcg / ideal


def progress_file(runner: Runner, job: Dict[str, Any]) -> Path:
    """Where a seed or rerun job records its training-state file between sessions, with
    the wall seconds and epoch times behind it (git-ignored: the state files it names
    are on this machine only)."""
    name = runner.result_path(job).stem + ".json"
    return runner.results_dir / "tuned" / "progress" / name


def recorded_state(progress: Path) -> Optional[str]:
    """The training-state file an interrupted run of this job left, or None (none
    recorded, or it is gone with its machine: the run starts afresh)."""
    if not progress.is_file():
        return None
    state = json.loads(progress.read_text()).get("state_file")
    if state and os.path.isfile(state):
        return state
    progress.unlink()
    return None


def resumable(
    base: type, progress: Path, epoch_seconds: List[float], clock: Dict[str, float]
) -> type:
    """``base`` recording in ``progress``, just before each training-state file it writes,
    the wall seconds since the job started (over every session) and the epoch times so
    far; resumed from such a file, it takes both back (``clock["offset"]``,
    ``epoch_seconds``), so the result counts the time and epochs before the
    interruption. The last two records are kept: a kill between the record and its state
    file leaves the previous state, whose record is still there."""

    class Resumable(base):
        def _write_training_state(self, epochs_done: int) -> None:
            if not self._writes_files():
                return super()._write_training_state(epochs_done)
            record = {
                "epochs_done": int(epochs_done),
                "seconds": clock["offset"] + time.perf_counter() - clock["start"],
                "epoch_seconds": list(epoch_seconds[:epochs_done]),
            }
            earlier = [r for r in _records(progress) if r["epochs_done"] < epochs_done]
            progress.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(
                progress,
                {"state_file": self.state_file, "records": [*earlier[-1:], record]},
            )
            super()._write_training_state(epochs_done)

        def resume_training(self, state_file: str) -> None:
            super().resume_training(state_file)
            done = [
                r for r in _records(progress) if r["epochs_done"] == self.start_epoch
            ]
            if not done:
                raise RuntimeError(
                    f"{progress}: no record for the {self.start_epoch} epochs of "
                    f"{state_file}; delete both to start the run afresh"
                )
            clock["offset"] = done[-1]["seconds"]
            epoch_seconds[:] = done[-1]["epoch_seconds"]

    return Resumable


def _records(progress: Path) -> List[Dict[str, Any]]:
    return json.loads(progress.read_text())["records"] if progress.is_file() else []


def run_resumably(
    runner: Runner,
    job: Dict[str, Any],
    base: type,
    run_kwargs: Dict[str, Any],
    epoch_seconds: Optional[List[float]] = None,
) -> tuple:
    """``recbole_diffrec.run`` for a seed or rerun job with a trainer made from ``base``
    by :func:`resumable`, continuing from the training state an interrupted run of the
    job left. Returns ``(result, seconds to result over every session)``; the run's
    files are removed once its numbers are in."""
    from recbole_diffrec import run

    progress = progress_file(runner, job)
    clock = {"start": time.perf_counter(), "offset": 0.0}
    epochs = [] if epoch_seconds is None else epoch_seconds
    trainer = resumable(base, progress, epochs, clock)
    state = recorded_state(progress)
    if state is not None:
        # Only then: a fresh run's settings stay exactly what they were before resuming.
        extra = {**(run_kwargs.pop("config_dict", None) or {}), "resume": state}
        run_kwargs["config_dict"] = extra
    result = run(
        job["model"],
        run_name(runner, job),
        saved=True,
        trainer_class=trainer,
        **run_kwargs,
    )
    seconds = clock["offset"] + time.perf_counter() - clock["start"]
    for name in (result["model_file"], result.get("state_file")):
        if name:  # the numbers are what is kept
            Path(name).unlink(missing_ok=True)
    progress.unlink(missing_ok=True)
    return result, seconds


def seed_worker(runner: Runner, job: Dict[str, Any]) -> Dict[str, Any]:
    captured: Dict[str, Any] = {}
    trainer, epoch_seconds, evaluations = per_user_trainer(job["model"], captured)
    settings = {
        **job["common"],
        **dataset_settings(runner),
        **job["settings"],
        "seed": job["seed"],
    }
    result, seconds = run_resumably(
        runner,
        job,
        trainer,
        {
            "config_file_list": dataset_files(runner, job["dataset"]),
            "config_dict": settings,
        },
        epoch_seconds,
    )
    metric = job["per_user_metric"]
    k = int(metric.split("@")[1])
    scores = per_user_ndcg(captured["topk"], k)
    mean = float(result["test_result"][metric])
    if (
        abs(scores.mean() - mean) > 1e-4
    ):  # the per-user scores must average to RecBole's
        raise RuntimeError(f"per-user {metric} averages {scores.mean()} vs {mean}")
    np.savez_compressed(
        users_file(runner.result_path(job)),
        users=captured["users"].astype(np.int64),
        scores=scores.astype(np.float32),
    )
    return {
        "test": result["test_result"],
        "valid": result["best_valid_result"],
        "parameters": result["parameters"],
        "epochs": len(epoch_seconds),
        "epoch_seconds": float(np.mean(epoch_seconds)) if epoch_seconds else 0.0,
        "test_eval_seconds": evaluations[-1][0],
        "time_to_result": seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def rerun_worker(runner: Runner, job: Dict[str, Any]) -> Dict[str, Any]:
    """The search's best.yaml run as it is, as a user would rerun it."""
    from recbole_diffrec import get_model, get_trainer

    with tempfile.TemporaryDirectory() as folder:
        best = Path(folder) / "best.yaml"
        best.write_text(job["best_yaml"])
        base = get_trainer(get_model(job["model"]))
        result, _ = run_resumably(runner, job, base, {"config_file_list": [str(best)]})
    return {"test": result["test_result"], "valid": result["best_valid_result"]}


WORKERS = {"search": search_worker, "seed": seed_worker, "rerun": rerun_worker}


def worker(runner: Runner, job: Dict[str, Any]) -> Dict[str, Any]:
    return WORKERS[job["phase"]](runner, job)


# ---------------------------------------------------------------------------- report
# (the report code is in tuned_report.py, the Tune folders' bookkeeping in tuned_folders.py)
from .tuned_folders import (  # noqa: E402
    annotate,
    keep_snapshots,
    restore_snapshots,
    unfinished,
)
from .tuned_report import differ, recorded_witnesses, witnesses  # noqa: E402

SECTION = Section(
    name="tuned",
    order=5,
    jobs=jobs,
    render=render,
    worker=worker,
    quick=quick,
    spec_file=SPEC_FILE,
    witnesses=witnesses,
    differ=differ,
    recorded_witnesses=recorded_witnesses,
    hash_by_model=True,
    unfinished=unfinished,
    annotate=annotate,
    prepare=restore_snapshots,
    safeguard=keep_snapshots,
)
