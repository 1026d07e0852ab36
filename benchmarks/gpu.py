"""One prepared GPU command: self-check, DiffRec-family speed against RecBole's built-ins,
DiffuRec and SASRec over three seeds on Amazon-Beauty, and DiffuRec's respaced-sampling
curve, within one lent session's device time, resumable by the next.

    python -m benchmarks.gpu --prepare                 # here: build .gpu/ (data + wheels)
    python -m benchmarks.gpu --minutes 9 --bundle $OUT  # there: the whole run
    python -m benchmarks.gpu --report-only             # here: benchmarks/gpu.md
    python -m benchmarks.gpu --device cpu --tiny       # rehearsal on generated data

Parts run in order, each to a cumulative deadline (share of ``--minutes``): selfcheck 5%,
speed 30%, sequential 50%, curve 15%; a part that ends early leaves its time to the next.
Every run writes one JSON under the results folder (benchmarks/results/gpu for CUDA runs
on the real data; anything else goes under benchmarks/out/, so a rehearsal can never pass
for a GPU result). A later invocation skips finished runs; a sequential run cut by its
deadline continues from its training state (``resume: auto``) while the work folder
(.gpu-work) is still there (same machine), else it starts again and keeps the record that
got further. The commands for a lent session are in benchmarks/gpu.md
(benchmarks/gpu_report.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional

if __name__ == "__main__" and not __package__:
    raise SystemExit(
        "run it as a module from the repository root: python -m benchmarks.gpu"
    )

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from .bench_sequential_gpu import settings_for, stack_versions  # noqa: E402
from .runner import ROOT, write_atomically  # noqa: E402
from .sections.sequential import SPEC_FILE as SEQUENTIAL_SPEC  # noqa: E402
from .spec import SPEC as ML1M_SPEC  # noqa: E402
from .training import (  # noqa: E402
    QUICK_OVERRIDES,
    QUICK_SEQUENTIAL_OVERRIDES,
    budget_trainer,
    quick_dataset,
    quick_sequences,
)

PARTS = ("selfcheck", "speed", "sequential", "curve")
SHARES = {"selfcheck": 0.05, "speed": 0.30, "sequential": 0.50, "curve": 0.15}
RESULTS = ROOT / "benchmarks" / "results" / "gpu"
PREPARED = ROOT / ".gpu"  # carried to the device: data/ and wheels/ (gitignored)
WORK = ROOT / ".gpu-work"  # checkpoints, training states, converted data (gitignored)
SHARED_DATA = ROOT.parent / "shared" / "datasets"
ML1M_YAML = ROOT / "properties" / "dataset" / "ml-1m_clean.yaml"
BEAUTY_YAML = ROOT / "properties" / "dataset" / "amazon-beauty.yaml"
# Wheels the lent machine lacks (its image has torch, numpy, pandas, scipy, scikit-learn,
# pyyaml, tqdm, colorama, tensorboard, torchdiffeq, matplotlib): RecBole and the small
# pure-Python packages it imports, and kmeans_pytorch for RecBole's own LDiffRec.
WHEELS = (
    "recbole==1.2.1",
    "colorlog==4.7.2",
    "texttable==1.7.2",
    "kmeans-pytorch==0.3",
)

# Speed: the suite's settings (properties/experiment/ml1m_clean_suite.yaml); plugin models
# first, so RecBole's (slower) ones get the time the plugin's leave.
SPEED_RUNS = ("DiffRec", "TDiffRec", "LDiffRec-release-emb", "recbole.LDiffRec")
SPEED_RUNS += ("recbole.DiffRec",)
SPEED_PAIRS = (
    ("DiffRec", "recbole.DiffRec"),
    ("TDiffRec", "recbole.DiffRec"),
    ("LDiffRec-release-emb", "recbole.LDiffRec"),
)
SEQ_MODELS = ("DiffuRec", "SASRec")
SEEDS = (2020, 2021, 2022)
CURVE_STEPS = (None, 16, 8, 4, 2, 1)  # None: the full reverse chain
TINY_SPEED = {"epochs": 2, "eval_step": 1, "stopping_step": 1}
TINY_SEQ = {"epochs": 2, "eval_step": 1, "stopping_step": 1, "train_batch_size": 256}
QUIET = {"state": "WARNING", "show_progress": False}


def clock() -> float:
    """Every deadline is read through this (tests move it)."""
    return time.time()


def on_validation(run: str, epoch: int, score: float) -> None:
    """Called after each validation of a timed run (tests hook it)."""


# ---------------------------------------------------------------------------- setup
class SetupError(RuntimeError):
    """The machine cannot run the benchmark (no CUDA, data or package missing)."""


def data_paths(args) -> Dict[str, Path]:
    root = Path(args.data)
    return {
        "ml": root / "ml-1m_clean",
        "beauty": root / "sequential" / "amazon-beauty.jsonl",
    }


def check_environment(args) -> Dict[str, Any]:
    """What the run needs, checked before any training; SetupError names what is missing."""
    import torch

    found: Dict[str, Any] = {"torch": torch.__version__}
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SetupError(
                "--device cuda: torch sees no CUDA device (torch "
                f"{torch.__version__}); rehearse on CPU with --device cpu --tiny"
            )
        found["gpu"] = torch.cuda.get_device_name()
    try:
        import recbole
    except ImportError as err:
        raise SetupError(
            f"RecBole is not importable ({err}); on a lent machine install the carried "
            "wheels first: python3 -m pip install --no-index --no-deps --target /tmp/site "
            ".gpu/wheels/*.whl && export PYTHONPATH=/tmp/site"
        ) from None
    found["recbole"] = recbole.__version__
    if recbole.__version__ != "1.2.1":
        raise SetupError(f"RecBole {recbole.__version__} found; the plugin needs 1.2.1")
    if "speed" in args.parts and "recbole.LDiffRec" in args.speed_runs:
        import importlib.util

        known = "kmeans_pytorch" in sys.modules
        if not known and importlib.util.find_spec("kmeans_pytorch") is None:
            raise SetupError(
                "RecBole's LDiffRec imports kmeans_pytorch: pip install "
                "kmeans-pytorch==0.3 (extra 'bench'), or carry .gpu/wheels"
            )
    if not args.tiny:
        paths = data_paths(args)
        needed = [paths["ml"] / f for f in ("train_list.npy", "item_emb.npy")]
        needed += [paths["beauty"]]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise SetupError(
                f"data missing: {', '.join(missing)}; build the carried folder with "
                "python -m benchmarks.gpu --prepare (here) and carry .gpu, or pass --data"
            )
    return found


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(args) -> Dict[str, Any]:
    import torch

    cuda = args.device == "cuda" and torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "device_kind": args.device,
        "tiny": args.tiny,
        "commit": args.commit,
        "command": args.command,
        "budget_minutes": args.minutes,
        "versions": stack_versions(),
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
    }


# ---------------------------------------------------------------------------- results
def result_path(args, name: str) -> Path:
    return Path(args.results) / f"{name}.json"


def read_result(args, name: str) -> Optional[Dict[str, Any]]:
    path = result_path(args, name)
    return json.loads(path.read_text()) if path.is_file() else None


def write_result(args, name: str, data: Dict[str, Any]) -> None:
    path = result_path(args, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data, default=str)


def bundle(args) -> None:
    """The results folder as one archive under --bundle (few files come back)."""
    if not args.bundle:
        return
    target = Path(args.bundle)
    target.mkdir(parents=True, exist_ok=True)
    partial = target / "gpu-results.tar.gz.partial"
    with tarfile.open(partial, "w:gz") as tar:
        for path in sorted(Path(args.results).glob("*.json")):
            tar.add(path, arcname=f"gpu/{path.name}")
    partial.rename(target / "gpu-results.tar.gz")


# ---------------------------------------------------------------------------- timed runs
def timed_trainer(
    model: str, name: str, deadline: float, record: Dict[str, Any], min_epochs: int = 1
) -> type:
    """The model's trainer ending at ``deadline`` (:func:`clock`) before a training batch
    (:func:`benchmarks.training.budget_trainer`) once it has trained ``min_epochs``
    epochs in this invocation, recording the seconds of each completed epoch and of each
    validation. A run stopped before its first validation is validated then, so it
    always has a checkpoint to test."""
    import torch

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    record.update(epoch_seconds=[], valid_seconds=[], batches=0, batches_per_epoch=0)

    def over() -> bool:
        return len(record["epoch_seconds"]) >= min_epochs and clock() > deadline

    class TimedTrainer(budget_trainer(model, over, record)):
        def _train_epoch(self, train_data, *a, **kw):
            start = time.perf_counter()
            loss = super()._train_epoch(train_data, *a, **kw)
            sync()
            record["epoch_seconds"].append(time.perf_counter() - start)
            return loss

        def _valid_epoch(self, valid_data, *a, **kw):
            start = time.perf_counter()
            score, result = super()._valid_epoch(valid_data, *a, **kw)
            record["valid_seconds"].append(time.perf_counter() - start)
            epoch = getattr(self, "_epochs_done", len(record["epoch_seconds"])) - 1
            print(f"  [{name}] epoch {epoch}: valid {float(score):.4f}", flush=True)
            on_validation(name, epoch, float(score))
            return score, result

        def fit(self, train_data, valid_data=None, *a, **kw):
            record["start_epoch"] = int(self.start_epoch)
            best = super().fit(train_data, valid_data, *a, **kw)
            if record.get("budget_spent") and not getattr(self, "valid_curve", None):
                best = self._valid_epoch(valid_data)
                self.best_valid_score, self.best_valid_result = best
                self._save_checkpoint(self._epochs_done, verbose=False)
            record["cur_step"] = int(self.cur_step)
            record["epochs_total"] = int(getattr(self, "_epochs_done", 0))
            return best

    return TimedTrainer


def timed_run(
    model: str,
    name: str,
    dataset: str,
    config_file: Path,
    settings: Dict[str, Any],
    deadline: float,
    min_epochs: int = 1,
) -> Dict[str, Any]:
    """One training run to early stopping, the epoch limit or ``deadline`` (after at
    least ``min_epochs`` epochs), then its best checkpoint scored on test; timings and
    peak GPU memory."""
    import torch

    from recbole_diffrec import run

    cuda = torch.cuda.is_available() and settings.get("use_gpu")
    if cuda:  # the previous run's tensors must not count towards this one's peak
        import gc

        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    record: Dict[str, Any] = {}
    started = time.perf_counter()
    result = run(
        model,
        dataset,
        config_file_list=[str(config_file)],
        config_dict=settings,
        saved=True,
        trainer_class=timed_trainer(model, name, deadline, record, min_epochs),
    )
    wall = time.perf_counter() - started
    curve = result.get("valid_curve") or []
    best = max(
        (v for v in curve if v.get("score") is not None),
        key=lambda v: (
            v["score"],
            v["epoch"],
        ),  # RecBole keeps the last of equal scores
        default=None,
    )
    return {
        "model": model,
        "name": name,
        "dataset": dataset,
        "test": result["test_result"],
        "best_valid": result["best_valid_result"],
        "best_epoch": best["epoch"] if best else None,
        "validations": curve,
        "stopped_by": "deadline" if record.get("budget_spent") else "early stopping",
        "start_epoch": record.get("start_epoch", 0),
        "epochs_total": record.get("epochs_total", len(record["epoch_seconds"])),
        "epoch_seconds": record["epoch_seconds"],
        "valid_seconds": record["valid_seconds"],
        "test_eval_seconds": result["test_seconds"],
        "wall_seconds": wall,
        "parameters": result["parameters"],
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "model_file": result.get("model_file"),
    }


# ---------------------------------------------------------------------------- settings
def device_settings(args) -> Dict[str, Any]:
    return {**QUIET, "use_gpu": args.device == "cuda"}


def speed_settings(args, name: str) -> tuple:
    """(model, settings) of a speed run: the suite's settings on ml-1m_clean, or the tiny
    generated data with the quick overrides."""
    spec = yaml.safe_load(ML1M_SPEC.read_text())
    entry = spec["models"][name]
    model = entry.get("model", name)
    settings = {**spec["common"], **entry["settings"], "seed": SEEDS[0]}
    work = Path(args.work)
    if args.tiny:
        settings.update(quick_dataset(work / "tiny"))
        settings.update({**QUICK_OVERRIDES, **TINY_SPEED})
        release = Path(settings["release_path"])
    else:
        release = data_paths(args)["ml"]
        settings.update(release_path=str(release), data_path=str(work / "data"))
    dataset = "quick-synth" if args.tiny else "ml-1m_clean"
    if settings.get("item_emb_source") == "file":
        settings["item_emb_path"] = str(item_embeddings(release))
    if model == "recbole.LDiffRec":  # reads <data_path>/<dataset>/item_emb.npy by row
        target = Path(settings["data_path"]) / dataset / "item_emb.npy"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item_embeddings(release), target)
    settings.update(device_settings(args), checkpoint_dir=str(work / "saved" / name))
    return model, dataset, settings


def item_embeddings(release: Path) -> Path:
    """The release's item_emb.npy; for generated data, random rows (one per item)."""
    path = release / "item_emb.npy"
    if not path.is_file():
        items = np.concatenate(
            [
                np.load(release / f"{s}_list.npy")[:, 1]
                for s in ("train", "valid", "test")
            ]
        )
        rng = np.random.default_rng(0)
        np.save(
            path, rng.standard_normal((int(items.max()) + 1, 16)).astype(np.float32)
        )
    return path


def sequential_settings(args, model: str, seed: int) -> tuple:
    """(dataset, settings) of a sequential run: the suite's settings with
    validation-based early stopping (as benchmarks/bench_sequential_gpu.py), its own
    checkpoint and data folders, resumable from its training state."""
    spec = yaml.safe_load(SEQUENTIAL_SPEC.read_text())
    knobs = SimpleNamespace(eval_step=5, stopping_step=10, eval_batch_size=4096)
    settings = settings_for(spec, model, knobs)
    run_dir = Path(args.work) / "seq" / f"{model}-{seed}"
    settings.update(
        seed=seed,
        checkpoint_dir=str(run_dir / "saved"),
        resume="auto",
        checkpoint_every=1,
        **device_settings(args),
    )
    if args.tiny:
        settings.update({**QUICK_SEQUENTIAL_OVERRIDES, **TINY_SEQ})
        settings.update(quick_sequences(Path(args.work) / "tiny"))
        settings["data_path"] = str(run_dir / "data")
        return "quick-seq", settings
    settings.update(
        sequence_file=str(data_paths(args)["beauty"]), data_path=str(run_dir / "data")
    )
    return "amazon-beauty", settings


# ---------------------------------------------------------------------------- parts
def log(message: str) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
    print(f"[gpu {stamp}] {message}", flush=True)


def part_selfcheck(args, deadline: float) -> None:
    """Environment checks, then every part's code path once on tiny generated data on
    the same device; any failure ends the job here."""
    started = time.perf_counter()
    checks: Dict[str, Any] = {"environment": check_environment(args)}
    log(f"environment ok: {checks['environment']}")
    tiny = SimpleNamespace(**{**vars(args), "tiny": True})
    tiny.work = str(Path(args.work) / "selfcheck")
    shutil.rmtree(tiny.work, ignore_errors=True)
    # Under --tiny the parts themselves run on tiny data: one model per path is enough.
    speed_models = ("DiffRec",) if args.tiny else ("DiffRec", "recbole.DiffRec")
    seq_models = SEQ_MODELS[:1] if args.tiny else SEQ_MODELS
    if "speed" in args.parts:
        for name in speed_models:
            model, dataset, settings = speed_settings(tiny, name)
            settings["epochs"] = 1
            out = timed_run(model, name, dataset, ML1M_YAML, settings, float("inf"))
            checks[f"speed {name}"] = out["test"]
    if "sequential" in args.parts or "curve" in args.parts:
        runs = [(m, SEEDS[0]) for m in seq_models]
        outs = sequential_runs(tiny, runs, float("inf"), epochs=1)
        for (model, _), out in zip(runs, outs):
            checks[f"sequential {model}"] = out["test"]
        if "curve" in args.parts:
            curve = measure_curve(outs[0]["model_file"], SEEDS[0], (None, 1), tiny)
            checks["curve"] = curve
    shutil.rmtree(tiny.work, ignore_errors=True)
    checks["seconds"] = round(time.perf_counter() - started, 1)
    write_result(
        args,
        "selfcheck",
        {"part": "selfcheck", "status": "passed", "checks": checks, **provenance(args)},
    )
    log(f"self-check passed in {checks['seconds']} s")


def part_speed(args, deadline: float) -> None:
    todo = [n for n in args.speed_runs if not read_result(args, f"speed-{n}")]
    for done in sorted(set(args.speed_runs) - set(todo)):
        log(f"speed {done}: done before, skipped")
    for index, name in enumerate(todo):
        left = deadline - clock()
        if left <= args.min_run_seconds:
            log(f"speed: deadline reached; {', '.join(todo[index:])} left for later")
            return
        run_deadline = clock() + left / (len(todo) - index)
        # keep time for the test evaluation after training stops
        train_deadline = run_deadline - min(0.15 * left / (len(todo) - index), 30.0)
        model, dataset, settings = speed_settings(args, name)
        log(f"speed {name}: training until {fmt_time(train_deadline)}")
        # two epochs at least: the first includes the device's warm-up
        out = timed_run(model, name, dataset, ML1M_YAML, settings, train_deadline, 2)
        write_result(
            args,
            f"speed-{name}",
            {"part": "speed", "status": "done", **out, **provenance(args)},
        )
        log(
            f"speed {name}: {len(out['epoch_seconds'])} epochs, "
            f"{summary_seconds(out['epoch_seconds'])} s/epoch, stopped by "
            f"{out['stopped_by']}"
        )


def fmt_time(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime(
        "%H:%M:%S"
    )


def summary_seconds(values: List[float]) -> str:
    return f"{float(np.median(values)):.3f}" if values else "n/a"


def sequential_run(args, model: str, seed: int, deadline: float, **extra) -> dict:
    """One sequential run (or its continuation); its JSON merges with an earlier one."""
    name = f"sequential-{model}-{seed}"
    dataset, settings = sequential_settings(args, model, seed)
    settings.update(extra)
    config = BEAUTY_YAML
    label = f"{'selfcheck ' if args.selfcheck_run else ''}{model}-{seed}"
    # min_epochs 0: a cut loses nothing, the run continues from its training state
    out = timed_run(model, label, dataset, config, settings, deadline, 0)
    if args.selfcheck_run:  # nothing recorded, nothing merged
        return out
    before = read_result(args, name) or {}
    segments = list(before.get("segments", []))
    if out["start_epoch"] == 0:
        segments = []  # a fresh start (no training state was found)
    segments.append(
        {
            "start_epoch": out["start_epoch"],
            "epochs": len(out["epoch_seconds"]),
            "epoch_seconds": out["epoch_seconds"],
            "valid_seconds": out["valid_seconds"],
            "stopped_by": out["stopped_by"],
            "measured_at": provenance(args)["measured_at"],
        }
    )
    status = "budget" if out["stopped_by"] == "deadline" else "done"
    record = {
        "part": "sequential",
        "status": status,
        "seed": seed,
        **out,
        "segments": segments,
        **provenance(args),
    }
    if before.get("epochs_total", -1) > out["epochs_total"] and out["start_epoch"] == 0:
        log(f"{name}: a restart got less far than the kept record; kept it")
        return before
    write_result(args, name, record)
    return record


def sequential_runs(
    args, runs: List[tuple], deadline: float, epochs: Optional[int] = None
) -> List[dict]:
    """The runs, ``args.parallel`` at a time (in worker processes when more than one)."""
    extra = {} if epochs is None else {"epochs": epochs}
    selfcheck = SimpleNamespace(**{**vars(args), "selfcheck_run": epochs is not None})
    if args.parallel <= 1:
        return [sequential_run(selfcheck, m, s, deadline, **extra) for m, s in runs]
    return run_workers(selfcheck, runs, deadline, extra)


def run_workers(args, runs: List[tuple], deadline: float, extra: dict) -> List[dict]:
    """One process per run, ``args.parallel`` at a time; each writes its result to a
    file the parent reads back."""
    logs = Path(args.work) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 2) // min(args.parallel, len(runs)))
    threads = 1 if args.tiny else threads
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    pending = list(runs)
    active: Dict[tuple, tuple] = {}
    results: Dict[tuple, dict] = {}
    failed: List[str] = []
    while pending or active:
        while pending and len(active) < args.parallel:
            model, seed = pending.pop(0)
            out_file = logs / f"{model}-{seed}.result.json"
            out_file.unlink(missing_ok=True)
            job = {"model": model, "seed": seed, "deadline": deadline, "extra": extra}
            job.update(args=jsonable(vars(args)), out=str(out_file))
            job_file = logs / f"{model}-{seed}.job.json"
            job_file.write_text(json.dumps(job))
            command = [
                sys.executable,
                "-m",
                "benchmarks.gpu",
                "--worker",
                str(job_file),
            ]
            handle = open(logs / f"{model}-{seed}.log", "w")
            proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
            )
            active[(model, seed)] = (proc, handle, out_file)
        time.sleep(0.5)
        for key, (proc, handle, out_file) in list(active.items()):
            if proc.poll() is None:
                continue
            handle.close()
            del active[key]
            if proc.returncode == 0 and out_file.is_file():
                results[key] = json.loads(out_file.read_text())
            else:
                tail = (logs / f"{key[0]}-{key[1]}.log").read_text(errors="replace")
                print("\n".join(tail.splitlines()[-30:]), flush=True)
                failed.append(f"{key[0]}-{key[1]} (exit {proc.returncode})")
        for key, (proc, handle, out_file) in active.items():
            if failed:  # one broken run stops the others now, not at the deadline
                proc.kill()
    if failed:
        raise RuntimeError(f"sequential runs failed: {', '.join(failed)}")
    return [results[r] for r in runs]


def jsonable(values: Dict[str, Any]) -> Dict[str, Any]:
    return {
        k: v
        for k, v in values.items()
        if isinstance(v, (str, int, float, bool, list, type(None)))
    }


def worker(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    args = SimpleNamespace(**job["args"])
    out = sequential_run(
        args, job["model"], job["seed"], job["deadline"], **job["extra"]
    )
    Path(job["out"]).write_text(json.dumps(out, default=str))


def part_sequential(args, deadline: float) -> None:
    runs, skipped = [], []
    for seed in args.seeds:
        for model in args.seq_models:
            found = read_result(args, f"sequential-{model}-{seed}")
            (skipped if found and found["status"] == "done" else runs).append(
                (model, seed)
            )
    for model, seed in skipped:
        log(f"sequential {model}-{seed}: finished before, skipped")
    if not runs:
        return
    # keep time for the test evaluation after training stops
    left = deadline - clock()
    if left <= args.min_run_seconds:
        log("sequential: deadline reached before starting; runs left for later")
        return
    train_deadline = deadline - min(0.1 * left, 25.0)
    names = ", ".join(f"{m}-{s}" for m, s in runs)
    log(
        f"sequential: {names}, {args.parallel} at a time, until {fmt_time(train_deadline)}"
    )
    started = clock()
    for model, seed in runs:
        if args.parallel <= 1 and clock() > train_deadline:
            log(f"sequential {model}-{seed}: deadline reached; left for later")
            continue
        if args.parallel <= 1:
            # in one process, the runs share the part's time in turn
            share = (train_deadline - clock()) / max(
                1, len(runs) - runs.index((model, seed))
            )
            outs = [sequential_run(args, model, seed, clock() + share)]
        else:
            outs = sequential_runs(args, runs, train_deadline)
        for out in outs:
            log(
                f"sequential {out['name']}: {out['status']}, {out['epochs_total']} epochs, "
                f"best valid {out['best_valid'].get('ndcg@10', float('nan')):.4f} "
                f"(epoch {out['best_epoch']}), test NDCG@10 "
                f"{out['test'].get('ndcg@10', float('nan')):.4f}"
            )
        if args.parallel > 1:
            break
    log(f"sequential: {clock() - started:.0f} s")


def measure_curve(
    model_file: str, seed: int, steps, args, deadline: float = float("inf")
) -> List[Dict[str, Any]]:
    """Test NDCG@10/HR@10 and seconds of one trained DiffuRec for each ``steps`` entry
    (None: the full chain). On real data: after one untimed warm-up evaluation, each
    timed twice (the faster kept; metrics from the first, both from the same seed).
    Entries the model cannot respace are marked unavailable."""
    import torch
    from recbole.utils import init_seed

    from recbole_diffrec.quick_start import load_model
    from recbole_diffrec.trainer import get_trainer

    config, model, _, _, _, test_data = load_model(model_file)
    trainer = get_trainer(type(model))(config, model)
    setter = getattr(model, "set_inference_steps", None)
    repeats = 1 if getattr(args, "tiny", True) else 2

    def timed_evaluation() -> tuple:
        init_seed(seed, True)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = trainer.evaluate(test_data, load_best_model=False)
        return result, time.perf_counter() - start

    if repeats > 1:  # warm-up: a fresh process's first evaluation pays start-up costs
        timed_evaluation()
    points = []
    for n in steps:
        label = "full" if n is None else n
        if clock() > deadline:
            points.append({"inference_steps": label, "unavailable": "deadline reached"})
            continue
        if setter is None and n is not None:
            points.append(
                {
                    "inference_steps": label,
                    "unavailable": "this checkout's DiffuRec has no set_inference_steps "
                    "(respaced sequential sampling not merged yet)",
                }
            )
            continue
        if setter is not None:
            setter(n)
        result, seconds = timed_evaluation()
        for _ in range(repeats - 1):
            seconds = min(seconds, timed_evaluation()[1])
        points.append(
            {
                "inference_steps": label,
                "ndcg@10": float(result["ndcg@10"]),
                "hit@10": float(result["hit@10"]),
                "eval_seconds": seconds,
            }
        )
        log(f"curve steps={label}: NDCG@10 {result['ndcg@10']:.4f} in {seconds:.2f} s")
    if setter is not None:
        setter(None)
    return points


def part_curve(args, deadline: float) -> None:
    """The curve on the first seed's DiffuRec whose checkpoint is on this machine (the
    sequential part's, this session or an earlier call on the same machine)."""
    name = "curve-DiffuRec"
    found = read_result(args, name)
    if found and found["status"] == "done":
        log(f"{name}: done before, skipped")
        return
    for seed in dict.fromkeys([*args.seeds, *SEEDS]):
        source = read_result(args, f"sequential-DiffuRec-{seed}") or {}
        model_file = source.get("model_file")
        if model_file and Path(model_file).is_file():
            break
    else:
        log(
            f"{name}: no trained DiffuRec on this machine yet; the curve needs a "
            "checkpoint of the sequential part from this machine"
        )
        return
    if deadline - clock() <= args.min_run_seconds:
        log(f"{name}: deadline reached; left for later")
        return
    points = measure_curve(model_file, seed, CURVE_STEPS, args, deadline)
    complete = all("unavailable" not in p for p in points)
    write_result(
        args,
        name,
        {
            "part": "curve",
            "status": "done" if complete else "incomplete",
            "model": "DiffuRec",
            "seed": seed,
            "model_epochs": source["epochs_total"],
            "model_status": source["status"],
            "model_best_epoch": source["best_epoch"],
            "points": points,
            **provenance(args),
        },
    )


PART_FUNCTIONS: Dict[str, Callable] = {
    "selfcheck": part_selfcheck,
    "speed": part_speed,
    "sequential": part_sequential,
    "curve": part_curve,
}


def deadlines(parts: List[str], start: float, minutes: float) -> Dict[str, float]:
    """Cumulative deadlines: each selected part's share of the budget, in order."""
    total = sum(SHARES[p] for p in parts)
    out, cumulative = {}, 0.0
    for part in PARTS:
        if part in parts:
            cumulative += SHARES[part] / total
            out[part] = start + minutes * 60 * cumulative
    return out


# ---------------------------------------------------------------------------- commands
def prepare(args) -> None:
    """Build the carried folder .gpu/: the two datasets and the wheels the device lacks."""
    source = Path(args.data)
    if source.resolve() == (PREPARED / "data").resolve():
        source = SHARED_DATA
    data = PREPARED / "data"
    (data / "ml-1m_clean").mkdir(parents=True, exist_ok=True)
    (data / "sequential").mkdir(parents=True, exist_ok=True)
    for name in ("train_list.npy", "valid_list.npy", "test_list.npy", "item_emb.npy"):
        shutil.copyfile(source / "ml-1m_clean" / name, data / "ml-1m_clean" / name)
    shutil.copyfile(
        source / "sequential" / "amazon-beauty.jsonl",
        data / "sequential" / "amazon-beauty.jsonl",
    )
    wheels = PREPARED / "wheels"
    wheels.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps"]
    command += ["--only-binary=:all:", "--python-version", "3.12"]
    command += ["--implementation", "cp", "-d", str(wheels), *WHEELS]
    subprocess.run(command, check=True)
    total = sum(p.stat().st_size for p in PREPARED.rglob("*") if p.is_file())
    for path in sorted(PREPARED.rglob("*")):
        if path.is_file():
            print(f"{path.stat().st_size / 2**20:8.2f} MiB  {path.relative_to(ROOT)}")
    print(
        f"{total / 2**20:8.2f} MiB  in all (carry limit 64 MiB with the working tree)"
    )


def parse(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument(
        "--minutes", type=float, default=9.0, help="the whole run's wall-clock budget"
    )
    parser.add_argument("--tiny", action="store_true", help="generated tiny data")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), metavar="PART")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument(
        "--speed-runs", nargs="+", default=list(SPEED_RUNS), choices=SPEED_RUNS
    )
    parser.add_argument(
        "--seq-models", nargs="+", default=list(SEQ_MODELS), choices=SEQ_MODELS
    )
    parser.add_argument(
        "--parallel",
        type=int,
        help="sequential runs at a time (default: all at once on CUDA, 1 on CPU)",
    )
    parser.add_argument(
        "--results",
        help="default: benchmarks/results/gpu for CUDA "
        "runs on the real data, else benchmarks/out/gpu-<device>[-tiny]",
    )
    parser.add_argument("--work", help="default: .gpu-work (or <results>/work)")
    parser.add_argument(
        "--data",
        help="folder with ml-1m_clean/ and sequential/ (default: .gpu/data if "
        "prepared, else ../shared/datasets)",
    )
    parser.add_argument("--bundle", help="also write <BUNDLE>/gpu-results.tar.gz")
    parser.add_argument("--commit", default=None, help="recorded (default: git's)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cli = list(sys.argv[1:] if argv is None else argv)
    bad = [p for p in args.parts if p not in PARTS]
    if bad:
        parser.error(f"--parts: unknown {', '.join(bad)}; allowed: {', '.join(PARTS)}")
    if not 0 < args.minutes <= 60:
        parser.error(f"--minutes: got {args.minutes}; allowed: more than 0, at most 60")
    if args.parallel is not None and args.parallel < 1:
        parser.error(f"--parallel: got {args.parallel}; allowed: 1 or more")
    if any(s < 0 for s in args.seeds):
        parser.error("--seeds: allowed: non-negative integers")
    args.parts = [p for p in PARTS if p in args.parts]
    args.seeds = list(dict.fromkeys(args.seeds))
    if args.parallel is None:
        args.parallel = 6 if args.device == "cuda" else 1
    if args.results is None:
        real = args.device == "cuda" and not args.tiny
        suffix = f"{args.device}{'-tiny' if args.tiny else ''}"
        args.results = str(
            RESULTS if real else ROOT / "benchmarks" / "out" / f"gpu-{suffix}"
        )
    if args.work is None:
        default = Path(args.results).resolve() == RESULTS.resolve()
        args.work = str(WORK if default else Path(args.results) / "work")
    if args.data is None:
        prepared = PREPARED / "data"
        args.data = str(prepared if prepared.is_dir() else SHARED_DATA)
    args.work = str(Path(args.work).resolve())
    args.data = str(Path(args.data).resolve())
    args.results = str(Path(args.results).resolve())
    args.speed_runs = [r for r in SPEED_RUNS if r in args.speed_runs]
    args.seq_models = [m for m in SEQ_MODELS if m in args.seq_models]
    args.min_run_seconds = 0.0 if args.tiny else 20.0
    args.selfcheck_run = False
    args.command = "python -m benchmarks.gpu " + " ".join(cli)
    return args


def report_target(args) -> Path:
    if Path(args.results).resolve() == RESULTS.resolve():
        return ROOT / "benchmarks" / "gpu.md"
    return Path(args.results) / "gpu.md"


def write_report(args) -> Path:
    from .gpu_report import report

    target = report_target(args)
    target.parent.mkdir(parents=True, exist_ok=True)
    rehearsal = Path(args.results).resolve() != RESULTS.resolve()
    target.write_text(report(Path(args.results), rehearsal=rehearsal))
    return target


def quiet_warnings() -> None:
    """RecBole 1.2.1 on current pandas and torch warns on every run; the device returns
    only the last 12,000 characters of the output."""
    import warnings

    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)


def main(argv: Optional[List[str]] = None) -> int:
    quiet_warnings()
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
        return 0
    args = parse(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if args.prepare:
        prepare(args)
        return 0
    if args.report_only:
        log(f"wrote {write_report(args)}")
        return 0
    if args.commit is None:
        args.commit = git_commit()
    import torch

    threads = torch.get_num_threads()
    if args.tiny:  # tiny tensors: a second thread only waits (badly so on a busy CPU)
        torch.set_num_threads(1)
    try:
        return run_parts(args)
    finally:
        torch.set_num_threads(threads)


def run_parts(args) -> int:
    """Every selected part to its deadline, the report, the bundle; the exit status."""
    start = clock()
    ends = deadlines(args.parts, start, args.minutes)
    log(
        f"{args.command}: parts {', '.join(args.parts)} within {args.minutes} min, "
        f"results in {args.results}"
    )
    status = 0
    for part in args.parts:
        log(f"part {part} (until {fmt_time(ends[part])})")
        try:
            PART_FUNCTIONS[part](args, ends[part])
        except SetupError as err:
            log(f"self-check failed: {err}")
            status = 2
            break
        except Exception:
            traceback.print_exc()
            log(f"part {part} failed" + ("; stopping" if part == "selfcheck" else ""))
            status = 1
            if part == "selfcheck":
                break
        finally:
            bundle(args)
    target = write_report(args)
    bundle(args)
    log(f"wrote {target}")
    from .gpu_report import summary

    print(summary(Path(args.results)), flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
