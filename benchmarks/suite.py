"""The benchmark suite: regenerates benchmarks/RESULTS.md and its plots.

    python benchmarks/suite.py                 # everything, reusing cached results
    python benchmarks/suite.py --quick         # the whole pipeline on tiny generated data
    python benchmarks/suite.py --sections accuracy steps
    python benchmarks/suite.py --cached-only   # report from cached runs only; missing = pending

Sections (settings in properties/experiment/ml1m_clean_suite.yaml):
- accuracy: plugin diffusion models vs RecBole baselines on ml-1m_clean under the paper
  protocol; baselines get a small grid on validation Recall@20, then every model runs with
  every seed; test metrics as mean +- std.
- speed: plugin vs RecBole built-in on the same settings (taken from the accuracy runs).
- scale: DiffRec vs L-DiffRec on generated catalogues of growing size.
- steps: DiffRec inference on respaced chains of fewer reverse steps.
- stopping: the accuracy runs again with a longer early-stopping patience, the test set
  scored at every validation, so one run per model and seed gives the validation-selected
  result under each patience listed in the spec (the reference code's 20 epochs included).
- sequential: DiffuRec and SeqDiffRec vs SASRec, BERT4Rec and GRU4Rec on amazon-beauty and
  amazon-toys, leave-one-out, full ranking, each model on the same CPU-time budget
  (settings in properties/experiment/sequential_suite.yaml).

Every run is a subprocess writing one JSON file under the results folder (so its peak
memory is its own); with --quick the runs go in the suite's own process instead, which
saves one start-up of RecBole and torch per run (10-15 s each here) in a rehearsal whose
numbers mean nothing anyway. A run whose file exists is skipped, so an interrupted suite
resumes where it stopped. Several suite processes may share the work (e.g. two with
OMP_NUM_THREADS=1 on a 2-core machine): a run being done by a live process is locked and
skipped by the others. With --cached-only nothing runs: every section reports the runs cached so far and lists the ones still pending.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "properties" / "experiment" / "ml1m_clean_suite.yaml"
SEQUENTIAL_SPEC = ROOT / "properties" / "experiment" / "sequential_suite.yaml"
SECTIONS = ("accuracy", "speed", "stopping", "scale", "steps", "sequential")
SEQUENTIAL_METRICS = ("hit@10", "hit@20", "ndcg@10", "ndcg@20")
METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")

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


# ---------------------------------------------------------------------------- spec
def load_spec(quick: bool) -> Dict[str, Any]:
    spec = yaml.safe_load(SPEC.read_text())
    spec["quick"] = quick
    spec["sequential"] = yaml.safe_load(SEQUENTIAL_SPEC.read_text())
    if quick:
        spec["seeds"] = spec["seeds"][:2]
        spec["inference_steps"] = [1, 2, 5]
        spec["scale"].update(items=[500, 1000], batches=2, seconds_limit=120)
        # RecBole's LDiffRec needs the undeclared kmeans_pytorch and a release embedding
        # file; runs clustering a release file cannot run on generated data either.
        spec["models"] = {
            name: entry
            for name, entry in spec["models"].items()
            if name != "recbole.LDiffRec"
            and entry.get("settings", {}).get("item_emb_source") != "file"
        }
        two_points = True  # the first grid keeps two points, to exercise the selection
        for model in spec["models"].values():
            grid = model.get("grid")
            if grid:
                small = {k: v[:1] for k, v in grid.items()}
                if two_points:
                    key = next(k for k, v in grid.items() if len(v) > 1)
                    small[key] = grid[key][:2]
                    two_points = False
                model["grid"] = small
        sequential = spec["sequential"]
        sequential.update(cpu_minutes=0.05, max_epochs=2)
        sequential["datasets"] = {"quick-seq": None}
        for settings in sequential["models"].values():
            settings.update(QUICK_SEQUENTIAL_OVERRIDES)
    return spec


RESULTS_OVERRIDE: Optional[Path] = None  # --results
CACHED_ONLY = False  # --cached-only


def results_dir(quick: bool) -> Path:
    if RESULTS_OVERRIDE is not None:
        return RESULTS_OVERRIDE
    return ROOT / "benchmarks" / ("out/quick" if quick else "results")


def job_file(quick: bool, job: Dict[str, Any]) -> Path:
    digest = hashlib.sha1(json.dumps(job, sort_keys=True).encode()).hexdigest()[:10]
    label = "-".join(str(job[k]) for k in ("section", "name") if k in job)
    extra = job.get("seed", job.get("items", ""))
    return (
        results_dir(quick)
        / job["section"]
        / f"{label}-{extra}-{digest}.json".replace("/", "_")
    )


# ---------------------------------------------------------------------------- data
def quick_dataset(quick_dir: Path) -> Dict[str, Any]:
    """A tiny generated dataset in the DiffRec release format (per-user time split)."""
    sys.path.insert(0, str(ROOT))
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
    sys.path.insert(0, str(ROOT))
    from recbole_diffrec.synthetic import generate_sequences, write_sequences

    path = quick_dir / "quick-seq.jsonl"
    if not path.is_file():
        write_sequences(generate_sequences(150, 60, 5, 12, seed=0), path)
    return {"sequence_file": str(path), "data_path": str(quick_dir / "data")}


# ---------------------------------------------------------------------------- workers
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_config(spec: Dict[str, Any], job: Dict[str, Any]) -> Dict[str, Any]:
    settings = {**spec["common"], **job["settings"], "seed": job["seed"]}
    if spec["quick"]:
        settings.update(quick_dataset(results_dir(True)))
        settings.update(QUICK_OVERRIDES)
    return settings


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


def accuracy_worker(spec, job) -> Dict[str, Any]:
    from recbole_diffrec import run

    TimedTrainer, epoch_seconds, evaluations = timed_trainer(job["model"])
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    result = run(
        job["model"],
        spec["dataset"] if not spec["quick"] else "quick-synth",
        config_file_list=[str(ROOT / spec["dataset_config"])],
        config_dict=run_config(spec, job),
        saved=True,
        trainer_class=TimedTrainer,
    )
    return {
        "test": result["test_result"],
        "valid": result["best_valid_result"],
        "parameters": result["parameters"],
        "epochs": len(epoch_seconds),
        "epoch_seconds": float(np.mean(epoch_seconds)) if epoch_seconds else 0.0,
        "test_eval_seconds": evaluations[-1][0],
        "time_to_result": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),
        "model_file": result["model_file"],
        # 1-minute load averages: above the core count, other work shared the machine.
        "load_average": [load_start, os.getloadavg()[0]],
    }


def select_by_patience(
    curve: List[Dict[str, Any]], metric: str, patience: int
) -> Dict[str, Any]:
    """The validation point RecBole's early stopping keeps with ``stopping_step=patience``:
    a score >= the best so far becomes the best; the run stops once ``patience + 1``
    validations in a row fall below it."""
    best, chosen, waited = -np.inf, curve[0], 0
    for point in curve:
        if point["valid"][metric] >= best:
            best, chosen, waited = point["valid"][metric], point, 0
        else:
            waited += 1
            if waited > patience:
                break
    return chosen


def stopping_worker(spec, job) -> Dict[str, Any]:
    """One long-patience run; the test set is scored at every validation (reported only at
    the points the validation metric selects)."""
    from unittest import mock

    from recbole_diffrec import quick_start, run

    loaders: Dict[str, Any] = {}
    curve: List[Dict[str, Any]] = []
    TimedTrainer, epoch_seconds, _ = timed_trainer(job["model"])
    prepare = quick_start.data_preparation

    def capture(*args, **kwargs):  # run() builds the loaders; keep the test one
        train, valid, loaders["test"] = prepare(*args, **kwargs)
        return train, valid, loaders["test"]

    class CurveTrainer(TimedTrainer):
        def _valid_epoch(self, valid_data, show_progress=False):
            score, result = super()._valid_epoch(valid_data, show_progress)
            test = self.evaluate(loaders["test"], load_best_model=False)
            curve.append(
                {"epoch": len(epoch_seconds), "valid": dict(result), "test": dict(test)}
            )
            return score, result

    settings = {**run_config(spec, job), "stopping_step": job["stopping_step"]}
    start = time.perf_counter()
    with mock.patch.object(quick_start, "data_preparation", capture):
        run(
            job["model"],
            spec["dataset"] if not spec["quick"] else "quick-synth",
            config_file_list=[str(ROOT / spec["dataset_config"])],
            config_dict=settings,
            saved=False,
            trainer_class=CurveTrainer,
        )
    return {
        "curve": curve,
        "epochs": len(epoch_seconds),
        "epoch_seconds": float(np.mean(epoch_seconds)) if epoch_seconds else 0.0,
        "time_to_result": time.perf_counter() - start,
    }


def steps_worker(spec, job) -> Dict[str, Any]:
    from recbole_diffrec import get_trainer, load_model, run

    trained = run(
        "DiffRec",
        spec["dataset"] if not spec["quick"] else "quick-synth",
        config_file_list=[str(ROOT / spec["dataset_config"])],
        config_dict=run_config(spec, job),
        saved=True,
    )
    config, model, _, _, _, test_data = load_model(trained["model_file"])
    trainer = get_trainer(type(model))(config, model)
    points = []
    for count in job["counts"]:
        count = min(count, model.diffusion.steps)
        model.respaced_diffusion = (
            None if count == model.diffusion.steps else model.diffusion.respaced(count)
        )
        start = time.perf_counter()
        result = trainer.evaluate(test_data, load_best_model=False)
        points.append(
            {
                "steps": count,
                "seconds": time.perf_counter() - start,
                "test": dict(result),
            }
        )
    return {"points": points, "trained_steps": model.diffusion.steps}


def scale_worker(spec, job) -> Dict[str, Any]:
    """Parameters, peak memory and training time per epoch on a generated catalogue."""
    import torch

    from recbole_diffrec.clustering import cluster_items, svd_embeddings
    from recbole_diffrec.diffusion import GaussianDiffusion, MLPDenoiser
    from recbole_diffrec.models.autoencoder import ClusteredVAE, multinomial_nll
    from recbole_diffrec.models.base import SparseUserRows
    from recbole_diffrec.synthetic import amazon_book_like, generate
    import scipy.sparse as sp

    scale = spec["scale"]
    n_items = job["items"]
    n_users, n_inter = amazon_book_like(n_items)
    settings = scale[job["name"]]
    batch = 400

    # Parameter count and a memory estimate before allocating anything.
    with torch.device("meta"):
        if job["name"] == "DiffRec":
            params = sum(
                p.numel()
                for p in MLPDenoiser.mirrored(
                    n_items, settings["dims_dnn"], 10
                ).parameters()
            )
        else:
            labels = np.arange(n_items) % settings["n_cate"]
            vae = ClusteredVAE(labels, settings["in_dims"][::-1], [])
            params = sum(p.numel() for p in vae.parameters()) + sum(
                p.numel()
                for p in MLPDenoiser.mirrored(
                    vae.latent_size, settings["dims_dnn"], 10
                ).parameters()
            )
    # weights, gradients, two Adam moments, plus a few (batch x items) activations
    estimate_gb = (params * 4 * 4 + batch * n_items * 4 * 8) / 1024**3
    out = {
        "items": n_items,
        "users": n_users,
        "interactions": n_inter,
        "parameters": params,
        "estimated_gb": estimate_gb,
    }
    if estimate_gb > scale["memory_limit_gb"]:
        out.update(fits=False, reason=f"needs about {estimate_gb:.1f} GB (estimated)")
        return out

    limit = int(scale["memory_limit_gb"] * 1024**3)
    resource.setrlimit(
        resource.RLIMIT_AS, (limit + 8 * 1024**3, resource.RLIM_INFINITY)
    )
    try:
        start = time.perf_counter()
        users, items = generate(n_users, n_items, n_inter, seed=0)
        matrix = sp.csr_matrix(
            (np.ones(len(users), dtype=np.float32), (users, items)),
            shape=(n_users, n_items),
        )
        out["generate_seconds"] = time.perf_counter() - start
        rows = SparseUserRows(matrix)
        diffusion = GaussianDiffusion("x0", "linear-var", 0.005, 0.005, 0.01, 40)
        if job["name"] == "DiffRec":
            denoiser = MLPDenoiser.mirrored(n_items, settings["dims_dnn"], 10)
            modules = [denoiser]
        else:
            start = time.perf_counter()
            labels = cluster_items(
                svd_embeddings(matrix, 64, 0), settings["n_cate"], 0, n_init=1
            )
            out["cluster_seconds"] = time.perf_counter() - start
            vae = ClusteredVAE(labels, settings["in_dims"][::-1], [])
            denoiser = MLPDenoiser.mirrored(vae.latent_size, settings["dims_dnn"], 10)
            modules = [vae, denoiser]
        optimizer = torch.optim.AdamW(
            [p for m in modules for p in m.parameters()], lr=1e-3, fused=True
        )
        generator = torch.Generator().manual_seed(0)
        times = []
        for step in range(scale["batches"] + 1):
            users_batch = torch.randint(0, n_users, (batch,), generator=generator)
            start = time.perf_counter()
            optimizer.zero_grad()
            x = rows(users_batch)
            if job["name"] == "DiffRec":
                loss = diffusion.training_losses(denoiser, x)["loss"].mean()
            else:
                grouped, latent, kl = vae.encode(x)
                terms = diffusion.training_losses(denoiser, latent)
                loss = (
                    0.03 * terms["loss"].mean()
                    + multinomial_nll(vae.decode(terms["pred_xstart"]), grouped)
                    + 0.2 * kl
                )
            loss.backward()
            optimizer.step()
            if step > 0:  # the first batch pays one-off allocation costs
                times.append(time.perf_counter() - start)
            if sum(times) > scale["seconds_limit"]:
                break
        out.update(
            fits=True,
            seconds_per_batch=float(np.mean(times)),
            seconds_per_epoch=float(np.mean(times)) * -(-n_users // batch),
            timed_batches=len(times),
            peak_rss_gb=peak_rss_mb() / 1024,
        )
    except (MemoryError, RuntimeError) as err:
        if "memory" not in str(err).lower() and not isinstance(err, MemoryError):
            raise
        out.update(
            fits=False,
            reason=f"out of memory: {str(err)[:120]}",
            peak_rss_gb=peak_rss_mb() / 1024,
        )
    return out


class TrainingBudgetSpent(Exception):
    """Raised before a training batch once the run has used its CPU-time budget."""


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


def sequential_worker(spec, job) -> Dict[str, Any]:
    """Train for the section's CPU-time budget, then score the model once on test."""
    from recbole_diffrec import run

    seq = spec["sequential"]
    budget = None if seq["cpu_minutes"] is None else seq["cpu_minutes"] * 60
    record = {"batches": 0, "batches_per_epoch": 0, "train_cpu": 0.0, "train_wall": 0.0}
    fit_start = {"cpu": 0.0}

    def over_budget() -> bool:
        return budget is not None and time.process_time() - fit_start["cpu"] > budget

    class BudgetTrainer(budget_trainer(job["model"], over_budget, record)):
        def fit(self, *args, **kwargs):
            fit_start["cpu"], wall0 = time.process_time(), time.perf_counter()
            try:
                return super().fit(*args, **kwargs)
            finally:
                record["train_cpu"] = time.process_time() - fit_start["cpu"]
                record["train_wall"] = time.perf_counter() - wall0

    settings = {
        **seq["common"],
        **job["settings"],
        "seed": job["seed"],
        "epochs": seq["max_epochs"],
        "eval_history": job["eval_history"],  # the protocol the report names
    }
    if budget is not None:
        settings["eval_step"] = (
            0  # no validation: the budget, not the test set, ends a run
        )
    if spec["quick"]:
        settings.update(quick_sequences(results_dir(True)))
        config_files = [str(ROOT / "properties" / "dataset" / "amazon-beauty.yaml")]
    else:
        config_files = [str(ROOT / seq["datasets"][job["dataset"]])]
    start = time.perf_counter()
    result = run(
        job["model"],
        job["dataset"],
        config_file_list=config_files,
        config_dict=settings,
        saved=budget is None,
        trainer_class=BudgetTrainer,
    )
    batches, per_epoch = record["batches"], max(record["batches_per_epoch"], 1)
    return {
        "test": result["test_result"],
        "parameters": result["parameters"],
        "batches": batches,
        "epochs": batches / per_epoch,
        "cpu_seconds_per_epoch": record["train_cpu"] / max(batches, 1) * per_epoch,
        "wall_seconds_per_epoch": record["train_wall"] / max(batches, 1) * per_epoch,
        "train_cpu_seconds": record["train_cpu"],
        "test_eval_seconds": result["test_seconds"],
        "time_to_result": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),
        "eval_history": job["eval_history"],
    }


WORKERS = {
    "accuracy": accuracy_worker,
    "stopping": stopping_worker,
    "steps": steps_worker,
    "scale": scale_worker,
    "sequential": sequential_worker,
}


# ---------------------------------------------------------------------------- orchestration
def execute(spec, jobs: List[Dict[str, Any]], label: str) -> None:
    from tqdm import tqdm

    pending = [j for j in jobs if not cached(spec, j)]
    if CACHED_ONLY:
        return
    with tqdm(
        total=len(jobs), initial=len(jobs) - len(pending), desc=label, unit="run"
    ) as bar:
        for job in pending:
            path = job_file(spec["quick"], job)
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = claim(path)
            if lock is None:  # another suite process is on it
                bar.update(1)
                continue
            bar.set_postfix_str(
                f"{job.get('name')} {job.get('seed', job.get('items', ''))}"
            )
            try:
                if spec["quick"]:
                    run_in_process(spec, job)
                else:
                    run_in_worker(job, path)
            finally:
                lock.unlink(missing_ok=True)
            bar.update(1)


def run_job(spec, job: Dict[str, Any]) -> None:
    """Run one job and write its JSON atomically (a half-written result never counts)."""
    result = WORKERS[job["section"]](spec, job)
    path = job_file(spec["quick"], job)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"job": job, **result}, indent=1))
    os.replace(partial, path)


def run_in_worker(job: Dict[str, Any], path: Path) -> None:
    """A real run in its own process, so its peak memory is its own."""
    log = path.with_suffix(".log")
    with open(log, "w") as err:
        proc = subprocess.run(
            [sys.executable, __file__, "--job", json.dumps(job)]
            + (["--results", str(RESULTS_OVERRIDE)] if RESULTS_OVERRIDE else []),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({job}); see {log}")


def run_in_process(spec, job: Dict[str, Any]) -> None:
    """A --quick job in this process, in the folder RecBole writes its log/ and saved/."""
    here = os.getcwd()
    os.chdir(results_dir(True))
    try:
        run_job(spec, job)
    except Exception as err:
        raise SystemExit(f"run failed ({job}): {err!r}") from err
    finally:
        os.chdir(here)


def claim(path: Path) -> Optional[Path]:
    """Lock a run for this process; None when a live process holds it or it is done."""
    lock = path.with_suffix(".lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(lock.read_text() or 0), 0)
                return None  # held by a live process
            except (ProcessLookupError, ValueError):
                lock.unlink(missing_ok=True)  # left by a process that died: take over
                continue
            except FileNotFoundError:
                continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        if path.is_file():  # finished by another process meanwhile
            lock.unlink()
            return None
        return lock
    return None


def read(spec, job) -> Dict[str, Any]:
    return json.loads(job_file(spec["quick"], job).read_text())


def cached(spec, job) -> bool:
    return job_file(spec["quick"], job).is_file()


def pending_line(spec, jobs: List[Dict[str, Any]]) -> str:
    missing = [j for j in jobs if not cached(spec, j)]
    if not missing:
        return ""
    names = sorted(
        {f"{j['name']} ({j.get('seed', j.get('items', ''))})" for j in missing}
    )
    return (
        f"\n**Pending: {len(missing)} of {len(jobs)} runs not done yet** "
        f"({', '.join(names)}); `python benchmarks/suite.py` runs them.\n"
    )


def accuracy_jobs(spec) -> Dict[str, Any]:
    """Model by model, in the spec's order: a baseline's grid on the first seed, then every
    seed for its best validation setting (so an interrupted suite has whole models done).
    """
    first = spec["seeds"][0]
    grid_jobs, best, seed_jobs = [], {}, {}
    if "recbole.LDiffRec" in spec["models"] and not spec["quick"]:
        # RecBole's LDiffRec reads <data_path>/<dataset>/item_emb.npy by row position.
        settings = yaml.safe_load((ROOT / spec["dataset_config"]).read_text())
        source = ROOT / settings["release_path"] / "item_emb.npy"
        target = ROOT / settings["data_path"] / spec["dataset"] / "item_emb.npy"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    for name, entry in spec["models"].items():
        model = entry.get("model", name)
        grid = entry.get("grid")
        if grid:
            keys = sorted(grid)
            jobs = [
                {
                    "section": "accuracy",
                    "name": name,
                    "model": model,
                    "settings": dict(zip(keys, values)),
                    "seed": first,
                }
                for values in itertools.product(*(grid[k] for k in keys))
            ]
            execute(spec, jobs, f"{name} grid")
            grid_jobs += jobs
            if not all(cached(spec, j) for j in jobs):  # --cached-only, grid unfinished
                continue
            chosen = max(jobs, key=lambda j: read(spec, j)["valid"]["recall@20"])
            best[name] = (model, chosen["settings"])
        else:
            best[name] = (model, entry.get("settings", {}))
        seed_jobs[name] = [
            {
                "section": "accuracy",
                "name": name,
                "model": model,
                "settings": best[name][1],
                "seed": s,
            }
            for s in spec["seeds"]
        ]
        execute(spec, seed_jobs[name], f"{name} seeds")
    return {"seed_jobs": seed_jobs, "grid_jobs": grid_jobs, "best": best}


def stopping_jobs(spec, acc) -> Dict[str, List[Dict[str, Any]]]:
    """Each listed model's accuracy setting (a baseline's grid winner) with every seed and
    the longest patience; models whose grid is unfinished wait."""
    stop = spec["stopping"]
    jobs = {
        name: [
            {
                "section": "stopping",
                "name": name,
                "model": acc["best"][name][0],
                "settings": acc["best"][name][1],
                "seed": seed,
                "stopping_step": max(stop["patiences"]),
            }
            for seed in spec["seeds"]
        ]
        for name in stop["models"]
        if name in acc["best"]
    }
    for name, model_jobs in jobs.items():
        execute(spec, model_jobs, f"{name} stopping")
    return jobs


def steps_job(spec) -> Dict[str, Any]:
    job = {
        "section": "steps",
        "name": "DiffRec",
        "settings": {},
        "seed": spec["seeds"][0],
        "counts": spec["inference_steps"],
    }
    execute(spec, [job], "steps")
    return job


def scale_jobs(spec) -> List[Dict[str, Any]]:
    jobs = [
        {"section": "scale", "name": name, "items": n}
        for n in spec["scale"]["items"]
        for name in ("DiffRec", "LDiffRec")
    ]
    execute(spec, jobs, "scale")
    return jobs


def sequential_jobs(spec) -> List[Dict[str, Any]]:
    seq = spec["sequential"]
    jobs = [
        {
            "section": "sequential",
            "name": f"{dataset}-{model}",
            "dataset": dataset,
            "model": model,
            "settings": settings,
            "seed": seq["seed"],
            "cpu_minutes": seq["cpu_minutes"],
            "eval_history": "unmasked",
        }
        for dataset in seq["datasets"]
        for model, settings in seq["models"].items()
    ]
    execute(spec, jobs, "sequential")
    return jobs


# ---------------------------------------------------------------------------- report
def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt(values: List[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def accuracy_section(spec, acc, figures: Path) -> str:
    import matplotlib.pyplot as plt

    rows = {}
    for name, jobs in acc["seed_jobs"].items():
        if not all(cached(spec, j) for j in jobs):
            continue
        results = [read(spec, j) for j in jobs]
        rows[name] = {m: [r["test"][m] for r in results] for m in METRICS}
    everything = acc["grid_jobs"] + [j for js in acc["seed_jobs"].values() for j in js]
    pending = pending_line(spec, everything)
    pending_models = [n for n in spec["models"] if n not in rows]
    if pending_models:
        pending += f"Models without a complete row yet: {', '.join(pending_models)}.\n"
    if not rows:
        return f"## Accuracy on {spec['dataset']} (paper protocol)\n{pending}"
    winners = {m: max(rows, key=lambda n: np.mean(rows[n][m])) for m in METRICS}
    lines = [
        "| model | setting (grid winner) | "
        + " | ".join(f"test {m}" for m in METRICS)
        + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    searched = {j["name"] for j in acc["grid_jobs"]}
    for name, metrics in rows.items():
        model, settings = acc["best"][name]
        cells = []
        for m in METRICS:
            cell = fmt(metrics[m])
            cells.append(f"**{cell}**" if winners[m] == name else cell)
        if name in searched:
            setting = ", ".join(f"{k}={v}" for k, v in settings.items())
        elif name.startswith("recbole."):
            setting = "official (spelled out in the spec)"
        else:  # the plugin's defaults are the official settings; show what the entry adds
            setting = "; ".join(
                ["official / plugin defaults"]
                + [
                    f"{k}={Path(v).name if k.endswith('_path') else v}"
                    for k, v in settings.items()
                ]
            )
        lines.append(f"| {name} | {setting} | " + " | ".join(cells) + " |")
    sys.path.insert(0, str(ROOT))
    from recbole_diffrec.registry import PLUGIN_MODELS, RECBOLE_PREFIX

    # By the model each entry runs: the plugin's own, RecBole's namesakes of them (its
    # DiffRec and LDiffRec, "recbole.<name>"), and RecBole's other models, the baselines.
    model_of = {n: acc["best"][n][0] for n in rows}
    diffusion = [n for n in rows if model_of[n] in PLUGIN_MODELS]
    recbole_diffusion = [n for n in rows if model_of[n].startswith(RECBOLE_PREFIX)]
    baselines = [n for n in rows if n not in diffusion + recbole_diffusion]

    def ndcg20(name: str) -> float:
        return float(np.mean(rows[name]["ndcg@20"]))

    if diffusion and baselines:
        best_diff = max(diffusion, key=ndcg20)
        best_base = max(baselines, key=ndcg20)
        gap = ndcg20(best_diff) - ndcg20(best_base)
        verdict = f"The plugin's best diffusion model ({best_diff}) " + (
            f"beats every RecBole baseline {'so far ' if pending else ''}on test NDCG@20 "
            f"(by {gap:+.4f} over {best_base})."
            if gap >= 0
            else f"is beaten on test NDCG@20 by {best_base} ({gap:+.4f})."
        )
        if recbole_diffusion:
            best_rb = max(recbole_diffusion, key=ndcg20)
            verdict += (
                f" Against RecBole's own diffusion models: {best_diff} "
                f"{ndcg20(best_diff) - ndcg20(best_rb):+.4f} over the best, {best_rb}."
            )
    else:
        verdict = "No verdict yet: the table needs both diffusion models and baselines."

    fig, ax = plt.subplots(figsize=(10, 4))
    names = list(rows)
    width = 0.2
    for k, m in enumerate(METRICS):
        ax.bar(
            np.arange(len(names)) + (k - 1.5) * width,
            [np.mean(rows[n][m]) for n in names],
            width,
            yerr=[np.std(rows[n][m]) for n in names],
            label=m,
            capsize=2,
        )
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("test metric (mean ± std over seeds)")
    ax.legend()
    save_figure(fig, figures / "accuracy.png")
    return (
        f"## Accuracy on {'quick-synth' if spec['quick'] else spec['dataset']} (paper protocol)\n\n"
        f"Seeds {spec['seeds']}; baselines searched on validation Recall@20 (grids in "
        f"`{SPEC.relative_to(ROOT)}`). Bold: the best mean in each column.\n\n"
        + "\n".join(lines)
        + f"\n\n{verdict}\n{pending}\n![accuracy](figures/accuracy.png)\n"
    )


def stopping_section(spec, acc, jobs, figures: Path) -> str:
    import matplotlib.pyplot as plt

    patiences = spec["stopping"]["patiences"]
    protocol = yaml.safe_load((ROOT / spec["dataset_config"]).read_text())
    if spec["quick"]:
        protocol.update(QUICK_OVERRIDES)
    eval_step, reference = protocol["eval_step"], protocol["stopping_step"]
    metric = protocol["valid_metric"].lower()
    head = (
        "| model | "
        + " | ".join(
            f"patience {p}: test NDCG@20 / Recall@20 (epoch)" for p in patiences
        )
        + " |"
    )
    lines = [head, "|---|" + "---|" * len(patiences)]
    mismatches, curves = [], {}
    for name, model_jobs in jobs.items():
        if not all(cached(spec, j) for j in model_jobs):
            continue
        results = [read(spec, j) for j in model_jobs]
        cells = []
        for p in patiences:
            chosen = [select_by_patience(r["curve"], metric, p) for r in results]
            ndcg = [c["test"]["ndcg@20"] for c in chosen]
            recall = [c["test"]["recall@20"] for c in chosen]
            epochs = "/".join(str(c["epoch"]) for c in chosen)
            cells.append(f"{fmt(ndcg)} / {fmt(recall)} ({epochs})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        # The accuracy runs stopped with the same rule at their stopping_step: the same
        # selection must come out of these curves (training is deterministic).
        for job, result in zip(model_jobs, results):
            twin = dict(job, section="accuracy")
            twin.pop("stopping_step")
            if cached(spec, twin):
                same = select_by_patience(result["curve"], metric, reference)
                expected = read(spec, twin)["test"]["ndcg@20"]
                if abs(same["test"]["ndcg@20"] - expected) > 1e-9:
                    mismatches.append(
                        f"{name} seed {job['seed']}: {same['test']['ndcg@20']} here, "
                        f"{expected} in the accuracy run"
                    )
        curves[name] = results[0]["curve"]
    everything = [j for js in jobs.values() for j in js]
    check = (
        "Check: with patience "
        f"{reference} every curve selects the checkpoint its accuracy run kept "
        "(same test NDCG@20)."
        if not mismatches
        else "**Mismatch with the accuracy runs**: " + "; ".join(mismatches) + "."
    )
    if curves:
        fig, ax = plt.subplots(figsize=(9, 4))
        for name, curve in curves.items():
            line = ax.plot(
                [c["epoch"] for c in curve],
                [c["valid"][metric] for c in curve],
                linewidth=0.9,
                label=f"{name} valid",
            )[0]
            ax.plot(
                [c["epoch"] for c in curve],
                [c["test"][metric] for c in curve],
                linewidth=0.9,
                linestyle="--",
                color=line.get_color(),
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel("Recall@20 (solid valid, dashed test)")
        ax.legend(fontsize=7, ncol=2)
        save_figure(fig, figures / "stopping.png")
    return (
        f"## Early stopping: the reference code's patience vs a longer one\n\n"
        f"Each model's accuracy setting, seeds {spec['seeds']}, trained until "
        f"{max(patiences) + 1} validations in a row (every {eval_step} epochs) fall "
        f"below the best validation {metric}; the test set is scored at every validation and "
        "reported at the point each patience selects (RecBole's rule: a validation score "
        ">= the best so far is the new best). Patience "
        f"{reference} is the protocol of the accuracy table (the reference "
        "code stops 20 epochs after its best validation). Cells: mean ± std over seeds; "
        "epochs selected per seed.\n\n"
        + "\n".join(lines)
        + f"\n\n{check}\n{pending_line(spec, everything)}"
        + ("\n![stopping](figures/stopping.png)\n" if curves else "")
    )


def speed_section(spec, acc, figures: Path) -> str:
    import matplotlib.pyplot as plt

    first = spec["seeds"][0]
    firsts = {
        n: next(j for j in jobs if j["seed"] == first)
        for n, jobs in acc["seed_jobs"].items()
    }
    by_name = {n: read(spec, j) for n, j in firsts.items() if cached(spec, j)}
    lines = [
        "| plugin | RecBole | params | s / epoch | s / full eval | time to result (s) | "
        "peak RSS (MB) | ratio epoch | ratio eval | ratio result | ratio memory | machine |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cores = os.cpu_count() or 1

    def machine(result) -> str:
        loads = result.get("load_average")
        if loads is None:
            return "load not recorded"
        busy = max(loads) > cores + 0.5
        return f"{'BUSY' if busy else 'quiet'} (load {loads[0]:.1f}/{loads[1]:.1f})"

    labels, ratios = [], []
    for plugin, builtin in spec["speed_pairs"]:
        if plugin not in by_name or builtin not in by_name:
            continue
        p, r = by_name[plugin], by_name[builtin]
        rr = [
            p["epoch_seconds"] / r["epoch_seconds"],
            p["test_eval_seconds"] / r["test_eval_seconds"],
            p["time_to_result"] / r["time_to_result"],
            p["peak_rss_mb"] / r["peak_rss_mb"],
        ]
        lines.append(
            f"| {plugin} | {builtin} | {p['parameters']:,} / {r['parameters']:,} | "
            f"{p['epoch_seconds']:.2f} / {r['epoch_seconds']:.2f} | "
            f"{p['test_eval_seconds']:.1f} / {r['test_eval_seconds']:.1f} | "
            f"{p['time_to_result']:.0f} / {r['time_to_result']:.0f} | "
            f"{p['peak_rss_mb']:.0f} / {r['peak_rss_mb']:.0f} | "
            + " | ".join(f"{x:.2f}" for x in rr)
            + f" | {machine(p)}; {machine(r)} |"
        )
        labels.append(plugin)
        ratios.append(rr)
    if ratios:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ratios_arr = np.array(ratios)
        for k, name in enumerate(
            ["epoch", "full eval", "time to result", "peak memory"]
        ):
            ax.bar(
                np.arange(len(labels)) + (k - 1.5) * 0.2,
                ratios_arr[:, k],
                0.2,
                label=name,
            )
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(labels)), labels)
        ax.set_ylabel("plugin / RecBole (lower is better)")
        ax.legend()
        save_figure(fig, figures / "speed.png")
    return (
        "## Speed and memory: plugin vs RecBole built-in, same settings\n\n"
        f"From the accuracy runs with seed {first}, all in one suite run on the same machine "
        "(cells: plugin / RecBole). Ratios are the headline; absolute times are noisy. "
        f"`machine` gives the 1-minute load average at the start and end of each run: above "
        f"{cores} cores + 0.5 (BUSY) other work shared the CPU and that pair's times do not "
        "compare; rerun it on a quiet machine (delete its two JSON files).\n\n"
        + "\n".join(lines)
        + (
            "\n\n![speed](figures/speed.png)\n"
            if ratios
            else "\n\nNo pair complete yet.\n"
        )
    )


def scale_section(spec, jobs, figures: Path) -> str:
    import matplotlib.pyplot as plt

    results = [(j, read(spec, j)) for j in jobs if cached(spec, j)]
    if not results:
        return f"## Scale: generated catalogues at Amazon-book's density\n{pending_line(spec, jobs)}"
    lines = [
        "| items | users | interactions | model | params | fits in "
        f"{spec['scale']['memory_limit_gb']} GB | peak RSS (GB) | s / epoch (extrapolated) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for job, r in results:
        lines.append(
            f"| {r['items']:,} | {r['users']:,} | {r['interactions']:,} | {job['name']} | "
            f"{r['parameters']:,} | {'yes' if r['fits'] else 'no: ' + r['reason']} | "
            f"{r.get('peak_rss_gb', float('nan')):.1f} | "
            f"{r.get('seconds_per_epoch', float('nan')):.0f} |"
        )
    no_fit = [
        r["items"] for j, r in results if j["name"] == "DiffRec" and not r["fits"]
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for name in ("DiffRec", "LDiffRec"):
        pts = [r for j, r in results if j["name"] == name]
        items = [r["items"] for r in pts]
        axes[0].plot(items, [r["parameters"] for r in pts], "o-", label=name)
        fit = [r for r in pts if r["fits"]]
        axes[1].plot(
            [r["items"] for r in fit], [r["peak_rss_gb"] for r in fit], "o-", label=name
        )
        axes[2].plot(
            [r["items"] for r in fit],
            [r["seconds_per_epoch"] for r in fit],
            "o-",
            label=name,
        )
    for ax, title in zip(axes, ["parameters", "peak RSS (GB)", "s / epoch"]):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items")
        ax.set_title(title)
        ax.legend()
    axes[1].axhline(spec["scale"]["memory_limit_gb"], color="red", linestyle="--")
    save_figure(fig, figures / "scale.png")
    where = (
        f"DiffRec no longer fits from {min(no_fit):,} items."
        if no_fit
        else "DiffRec fits at every size measured."
    )
    return (
        "## Scale: generated catalogues at Amazon-book's density\n\n"
        f"DiffRec {spec['scale']['DiffRec']} vs L-DiffRec {spec['scale']['LDiffRec']}; "
        f"seconds per epoch extrapolated from {spec['scale']['batches']} timed batches of 400 "
        f"users. {where}\n\n"
        + "\n".join(lines)
        + f"\n{pending_line(spec, jobs)}\n![scale](figures/scale.png)\n"
    )


def steps_section(spec, job, figures: Path) -> str:
    import matplotlib.pyplot as plt

    if not cached(spec, job):
        return f"## Fewer reverse steps at inference (DiffRec)\n{pending_line(spec, [job])}"
    r = read(spec, job)
    full = (
        next(p for p in r["points"] if p["steps"] == r["trained_steps"])
        if any(p["steps"] == r["trained_steps"] for p in r["points"])
        else r["points"][-1]
    )
    lines = [
        "| reverse steps | test NDCG@20 | change vs all steps | s / full eval |",
        "|---|---|---|---|",
    ]
    for p in r["points"]:
        change = p["test"]["ndcg@20"] / full["test"]["ndcg@20"] - 1
        lines.append(
            f"| {p['steps']} | {p['test']['ndcg@20']:.4f} | {change:+.2%} | {p['seconds']:.1f} |"
        )
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [p["steps"] for p in r["points"]]
    ax.plot(steps, [p["test"]["ndcg@20"] for p in r["points"]], "o-", color="tab:blue")
    ax.set_xlabel("reverse steps at inference")
    ax.set_ylabel("test NDCG@20", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(steps, [p["seconds"] for p in r["points"]], "s--", color="tab:orange")
    ax2.set_ylabel("s / full evaluation", color="tab:orange")
    save_figure(fig, figures / "steps.png")
    return (
        "## Fewer reverse steps at inference (DiffRec)\n\n"
        f"One DiffRec trained with {r['trained_steps']} steps, evaluated on respaced chains "
        "(`inference_steps`; the full chain is the default).\n\n"
        + "\n".join(lines)
        + "\n\n![steps](figures/steps.png)\n"
    )


def sequential_section(spec, jobs, figures: Path) -> str:
    import matplotlib.pyplot as plt

    seq = spec["sequential"]
    results = [(j, read(spec, j)) for j in jobs if cached(spec, j)]
    lines = [
        "| dataset | model | "
        + " | ".join(f"test {m}" for m in SEQUENTIAL_METRICS)
        + " | epochs trained | CPU s / epoch | wall s / epoch | s / test eval | params |",
        "|---|---|" + "---|" * (len(SEQUENTIAL_METRICS) + 5),
    ]
    datasets = list(seq["datasets"])
    for dataset in datasets:
        rows = [(j, r) for j, r in results if j["dataset"] == dataset]
        if not rows:
            continue
        best = {
            m: max(rows, key=lambda jr: jr[1]["test"][m])[0]["model"]
            for m in SEQUENTIAL_METRICS
        }
        for job, r in rows:
            cells = [
                (
                    f"**{r['test'][m]:.4f}**"
                    if best[m] == job["model"]
                    else f"{r['test'][m]:.4f}"
                )
                for m in SEQUENTIAL_METRICS
            ]
            lines.append(
                f"| {dataset} | {job['model']} | "
                + " | ".join(cells)
                + f" | {r['epochs']:.2f} | {r['cpu_seconds_per_epoch']:.1f} | "
                f"{r['wall_seconds_per_epoch']:.1f} | {r['test_eval_seconds']:.1f} | "
                f"{r['parameters']:,} |"
            )
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.5))
    axes = np.atleast_1d(axes)
    for ax, dataset in zip(axes, datasets):
        rows = [(j, r) for j, r in results if j["dataset"] == dataset]
        names = [j["model"] for j, _ in rows]
        for k, m in enumerate(("hit@10", "ndcg@10")):
            ax.bar(
                np.arange(len(names)) + (k - 0.5) * 0.4,
                [r["test"][m] for _, r in rows],
                0.4,
                label=m,
            )
        ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
        ax.set_title(dataset)
        ax.legend()
    save_figure(fig, figures / "sequential.png")
    budget = (
        f"the same training budget of {seq['cpu_minutes']} CPU minutes per run (process CPU "
        "time, so other work on the machine does not shrink a run); the model as it stands "
        "when the budget runs out is scored once on test, with no validation-based selection"
        if seq["cpu_minutes"] is not None
        else f"up to {seq['max_epochs']} epochs with RecBole's validation early stopping"
    )
    return (
        "## Sequential recommenders\n\n"
        "Protocol: leave-one-out (last item test, second-to-last validation), every prefix of "
        "a training sequence is a training sample, full ranking over all items, history items "
        "**not masked** (`eval_history: unmasked`, DiffuRec's protocol); "
        f"seed {seq['seed']}; {budget}. "
        "Settings: each model's defaults (`recbole_diffrec/properties/model/DiffuRec.yaml`, "
        "`SeqDiffRec.yaml`, RecBole's for the baselines) with "
        f"`{json.dumps(seq['common'])}` and per model "
        + ", ".join(f"{m} `{json.dumps(v)}`" for m, v in seq["models"].items())
        + ". Epochs trained may be fractional (the budget ends a run between batches). "
        "Bold: the best in each column per dataset."
        + (f" {seq['note'].strip()}" if seq.get("note") else "")
        + "\n\n"
        + "\n".join(lines)
        + f"\n{pending_line(spec, jobs)}\n![sequential](figures/sequential.png)\n"
        + "\nTrained for up to hundreds of epochs on a GPU, with validation-based selection: "
        "[sequential_gpu.md](sequential_gpu.md) (`benchmarks/bench_sequential_gpu.py`).\n"
    )


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny data, a couple of epochs"
    )
    parser.add_argument(
        "--sections", nargs="*", choices=SECTIONS, default=list(SECTIONS)
    )
    parser.add_argument(
        "--results",
        help="results folder (default benchmarks/results, "
        "or benchmarks/out/quick with --quick)",
    )
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="run nothing: report the cached runs and list the pending ones",
    )
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global RESULTS_OVERRIDE, CACHED_ONLY
    CACHED_ONLY = args.cached_only
    if args.results:
        RESULTS_OVERRIDE = Path(args.results).resolve()
    spec = load_spec(args.quick)
    if args.job:
        sys.path.insert(0, str(ROOT))
        run_job(spec, json.loads(args.job))
        return

    import matplotlib

    matplotlib.use("Agg")
    out_dir = results_dir(args.quick).parent if args.quick else ROOT / "benchmarks"
    report_path = (
        (results_dir(True) / "RESULTS.md") if args.quick else out_dir / "RESULTS.md"
    )
    figures = report_path.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    parts = []
    needs_acc = {"accuracy", "speed", "stopping"} & set(args.sections)
    acc = accuracy_jobs(spec) if needs_acc else None
    if "accuracy" in args.sections:
        parts.append(accuracy_section(spec, acc, figures))
    if "speed" in args.sections:
        parts.append(speed_section(spec, acc, figures))
    if "stopping" in args.sections:
        parts.append(stopping_section(spec, acc, stopping_jobs(spec, acc), figures))
    if "scale" in args.sections:
        parts.append(scale_section(spec, scale_jobs(spec), figures))
    if "steps" in args.sections:
        parts.append(steps_section(spec, steps_job(spec), figures))
    if "sequential" in args.sections:
        parts.append(sequential_section(spec, sequential_jobs(spec), figures))
    command = "python " + " ".join(
        shlex.quote(a) for a in ["benchmarks/suite.py", *sys.argv[1:]]
    )
    header = (
        "# Benchmark results\n\n"
        f"Regenerated by `{command}` on {platform.machine()} with {os.cpu_count()} cores "
        f"from the cached runs in `{os.path.relpath(results_dir(args.quick), ROOT)}/`"
        + (
            " (QUICK MODE: tiny generated data, numbers are meaningless)"
            if args.quick
            else ""
        )
        + ".\n\n"
    )
    report_path.write_text(header + "\n".join(parts))
    print(f"wrote {report_path}")


if __name__ == "__main__":
    main()
