"""Sequential recommenders trained with validation-based selection on a GPU, side by side.

    python -m benchmarks.bench_sequential_gpu --dataset amazon-beauty --minutes 7 \\
        --models DiffuRec SASRec --out benchmarks/results/sequential-gpu
    python -m benchmarks.bench_sequential_gpu --report benchmarks/results/sequential-gpu

The protocol and each model's settings are the suite's sequential section
(properties/experiment/sequential_suite.yaml: leave-one-out, every prefix of a training
sequence a training sample, full ranking over all items, history not masked = DiffuRec's
protocol). Unlike that section's fixed CPU budget, every run here validates every
``--eval-step`` epochs, stops early after ``--stopping-step`` validations without a better
valid NDCG@10 (RecBole's rule), at the epoch limit, or when the wall-clock budget
``--minutes`` is spent, whichever comes first; the best validation checkpoint is then scored
once on test. The runs share one machine and start together, so their budgets are the same
wall-clock window. Each run first trains and evaluates a tiny generated dataset on the same
device, so a device problem ends the whole job within seconds instead of at the first
validation. One JSON per run; ``--report`` turns them into benchmarks/sequential_gpu.md
(benchmarks/sequential_gpu_report.py).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

if __name__ == "__main__" and not __package__:
    raise SystemExit(
        "run it as a module from the repository root: "
        "python -m benchmarks.bench_sequential_gpu"
    )

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from .runner import ROOT, write_atomically  # noqa: E402
from .sections.sequential import SPEC_FILE  # noqa: E402
from .sequential_gpu_report import REPORT, best_validation, report  # noqa: E402
from .training import (  # noqa: E402
    QUICK_SEQUENTIAL_OVERRIDES,
    budget_trainer,
    quick_sequences,
)

WORKER_OPTIONS = ("--worker", "--deadline", "--job-dir")  # each takes one value


def smoke_marker(job_dir: str, model: str) -> Path:
    """Written by a run once its tiny-data pass on the device has succeeded."""
    return Path(job_dir) / f"{model}.smoke-ok"


def settings_for(spec: Dict[str, Any], model: str, args) -> Dict[str, Any]:
    return {
        **spec["common"],
        **spec["models"][model],
        "seed": spec["seed"],
        "epochs": spec["max_epochs"],
        "eval_step": args.eval_step,
        "stopping_step": args.stopping_step,
        "eval_batch_size": args.eval_batch_size,
        "eval_history": "unmasked",
        "use_gpu": True,
    }


# ---------------------------------------------------------------------------- one run
def recording_trainer(model: str, deadline: float, record: Dict[str, Any]) -> type:
    """The model's trainer on a wall-clock ``deadline`` (``time.time()``), recording
    training and validation seconds, epochs and every validation in ``record``."""
    started = time.time()

    class BudgetTrainer(budget_trainer(model, lambda: time.time() > deadline, record)):
        def _train_epoch(self, train_data, *a, **kw):
            start = time.perf_counter()
            try:
                loss = super()._train_epoch(train_data, *a, **kw)
            finally:  # a budget-ended epoch counts its time too
                record["train_seconds"] += time.perf_counter() - start
            record["epochs_done"] += 1
            return loss

        def _valid_epoch(self, valid_data, *a, **kw):
            start = time.perf_counter()
            score, result = super()._valid_epoch(valid_data, *a, **kw)
            record["valid_seconds"] += time.perf_counter() - start
            record["validations"].append(
                {
                    "epoch": record["epochs_done"],
                    "elapsed_s": round(time.time() - started, 1),
                    "ndcg@10": float(score),
                }
            )
            print(f"[{model}] {record['validations'][-1]}", flush=True)
            return score, result

        def fit(self, *a, **kw):
            best = super().fit(*a, **kw)
            if record.get("budget_spent") and not record["validations"]:
                # stopped before the first validation: validate and keep this model
                valid_data = a[1] if len(a) > 1 else kw.get("valid_data")
                best = self._valid_epoch(valid_data)
                self.best_valid_score, self.best_valid_result = best
                self._save_checkpoint(record["epochs_done"], verbose=False)
            return best

    return BudgetTrainer


def train_and_test(
    model: str,
    dataset: str,
    config_files: List[str],
    settings: Dict[str, Any],
    deadline: float,
) -> Dict[str, Any]:
    """Train ``model`` until early stopping, the epoch limit or the wall-clock ``deadline``
    (``time.time()``), then score the best validation checkpoint on test."""
    import torch

    from recbole_diffrec import run

    record: Dict[str, Any] = {"batches": 0, "batches_per_epoch": 0, "epochs_done": 0}
    record.update(train_seconds=0.0, valid_seconds=0.0, validations=[])
    started = time.time()
    result = run(
        model,
        dataset,
        config_file_list=config_files,
        config_dict=settings,
        saved=True,
        trainer_class=recording_trainer(model, deadline, record),
    )
    epochs = record["batches"] / max(record["batches_per_epoch"], 1)
    valids = record["validations"]
    best = best_validation(valids)
    budget_spent = record.get("budget_spent")
    return {
        "model": model,
        "dataset": dataset,
        "test": result["test_result"],
        "best_valid": result["best_valid_result"],
        "best_epoch": best["epoch"] if best else None,
        "validations": valids,
        "epochs": epochs,
        "stopped_by": (
            "wall-clock budget" if budget_spent else "early stopping or epoch limit"
        ),
        "train_seconds_per_epoch": record["train_seconds"] / max(epochs, 1e-9),
        "valid_seconds_each": record["valid_seconds"] / max(len(valids), 1),
        "test_eval_seconds": result["test_seconds"],
        "wall_seconds": time.time() - started,
        "parameters": result["parameters"],
        "peak_gpu_memory_gb": (
            torch.cuda.max_memory_allocated() / 2**30
            if torch.cuda.is_available()
            else 0
        ),
    }


def job_command(cli: List[str]) -> str:
    """The command that launched the job, from a worker's arguments."""
    kept = [
        arg
        for i, arg in enumerate(cli)
        if arg not in WORKER_OPTIONS and (i == 0 or cli[i - 1] not in WORKER_OPTIONS)
    ]
    return shlex.join(["python", "-m", "benchmarks.bench_sequential_gpu", *kept])


def smoke_run(model: str, settings: Dict[str, Any]) -> None:
    """A tiny generated dataset first, on the same device, through the same code."""
    with tempfile.TemporaryDirectory() as tmp:
        smoke = {
            **settings,
            **QUICK_SEQUENTIAL_OVERRIDES,
            **quick_sequences(Path(tmp)),
            "epochs": 1,
            "eval_step": 1,
            "checkpoint_dir": tmp,
        }
        train_and_test(
            model,
            "quick-seq",
            [str(ROOT / "properties" / "dataset" / "amazon-beauty.yaml")],
            smoke,
            deadline=float("inf"),
        )


def stack_versions() -> Dict[str, str]:
    """The versions a result depends on, recorded beside it."""
    import pandas
    import recbole
    import torch

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pandas.__version__,
        "recbole": recbole.__version__,
    }


def provenance(args) -> Dict[str, Any]:
    import torch

    return {
        "budget_minutes": args.minutes,
        "ran_with": args.models,
        "command": job_command(args.cli),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "versions": stack_versions(),
        "commit": args.commit,
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
    }


def worker(args) -> None:
    spec = yaml.safe_load(SPEC_FILE.read_text())
    model = args.worker
    settings = settings_for(spec, model, args)
    smoke_run(model, settings)
    smoke_marker(args.job_dir, model).touch()
    print(f"[{model}] smoke run passed", flush=True)

    settings["checkpoint_dir"] = str(Path(tempfile.gettempdir()) / f"saved-{model}")
    result = train_and_test(
        model,
        args.dataset,
        [args.dataset_config or str(ROOT / spec["datasets"][args.dataset])],
        settings,
        deadline=args.deadline,
    )
    result.update(settings=settings, **provenance(args))
    stamp = result["measured_at"][:16].replace("-", "").replace(":", "")
    path = Path(args.out) / f"{args.dataset}-{model}-{stamp}.json"  # never overwrites
    write_atomically(path, result, default=str)


# ---------------------------------------------------------------------------- orchestration
def start_workers(args, logs: Path, deadline: float) -> Dict[str, tuple]:
    """One worker process per model, started together; model -> (process, log file)."""
    threads = max(1, (os.cpu_count() or 2) // len(args.models))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    procs = {}
    for model in args.models:
        cmd = [sys.executable, "-m", "benchmarks.bench_sequential_gpu"]
        cmd += ["--worker", model, "--deadline", str(deadline), "--job-dir", str(logs)]
        log = open(logs / f"{model}.log", "w")
        proc = subprocess.Popen(
            cmd + args.cli, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
        procs[model] = (proc, log)
    return procs


def collect_logs(models: List[str], logs: Path, out: Path) -> None:
    """One combined log under --out (few files come back from a device run)."""
    with open(out / "logs.txt", "w") as combined:
        for model in models:
            combined.write(f"===== {model}\n")
            combined.write((logs / f"{model}.log").read_text(errors="replace"))


def watch(procs: Dict[str, tuple], logs: Path, out: Path) -> None:
    """Wait for the workers; one whose tiny-data run failed (a device problem) stops them
    all now rather than at the deadline."""
    last_collect = time.time()
    while any(p.poll() is None for p, _ in procs.values()):
        time.sleep(2)
        broken = [
            model
            for model, (proc, _) in procs.items()
            if proc.poll() not in (None, 0)
            and not smoke_marker(str(logs), model).exists()
        ]
        if broken:
            print(f"{broken[0]}: the tiny-data run failed; stopping every run")
            for other, _ in procs.values():
                other.kill()
            for other, _ in procs.values():
                other.wait()
        if time.time() - last_collect > 30:
            collect_logs(list(procs), logs, out)
            last_collect = time.time()
    collect_logs(list(procs), logs, out)


def launch(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="seq-gpu-job-"))  # logs and smoke markers
    procs = start_workers(args, logs, time.time() + args.minutes * 60)
    watch(procs, logs, out)
    for model, (proc, log) in procs.items():
        log.close()
        if proc.returncode != 0:
            print(f"{model}: exit {proc.returncode}; last lines of its log:")
            print("\n".join((logs / f"{model}.log").read_text().splitlines()[-25:]))
    shutil.rmtree(logs)
    print(report(out))
    return 1 if any(p.returncode for p, _ in procs.values()) else 0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_sequential_gpu",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument(
        "--dataset-config",
        help="dataset yaml (default: the suite spec's for --dataset)",
    )
    parser.add_argument("--models", nargs="+", default=["DiffuRec", "SASRec"])
    parser.add_argument(
        "--minutes", type=float, default=7.0, help="wall-clock training budget"
    )
    parser.add_argument("--eval-step", type=int, default=5)
    parser.add_argument("--stopping-step", type=int, default=10)
    parser.add_argument("--eval-batch-size", type=int, default=4096)
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/results/sequential-gpu")
    )
    parser.add_argument("--commit", default="unknown", help="recorded in the results")
    parser.add_argument("--report", help="write the markdown report from this folder")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--job-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.cli = list(sys.argv[1:] if argv is None else argv)
    if args.report:
        figure = REPORT.parent / "figures" / "sequential_gpu.png"
        REPORT.write_text(report(Path(args.report), figure))
        print(f"wrote {REPORT}")
    elif args.worker:
        worker(args)
    else:
        raise SystemExit(launch(args))


if __name__ == "__main__":
    main()
