"""Sequential recommenders trained with validation-based selection on a GPU, side by side.

    python benchmarks/bench_sequential_gpu.py --dataset amazon-beauty --minutes 7 \\
        --models DiffuRec SASRec --out benchmarks/results/sequential-gpu
    python benchmarks/bench_sequential_gpu.py --report benchmarks/results/sequential-gpu

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
validation. One JSON per run; ``--report`` turns them into benchmarks/sequential_gpu.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from suite import (  # noqa: E402
    QUICK_SEQUENTIAL_OVERRIDES,
    SEQUENTIAL_METRICS,
    SEQUENTIAL_SPEC,
    budget_trainer,
    quick_sequences,
)

REPORT = ROOT / "benchmarks" / "sequential_gpu.md"


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
def best_validation(validations: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The validation whose checkpoint RecBole kept: it takes a score equal to the best so
    far as the new best (its ``>=``), so the last of equal maxima."""
    if not validations:
        return None
    return max(reversed(validations), key=lambda v: v["ndcg@10"])


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

    record: Dict[str, Any] = {
        "batches": 0,
        "batches_per_epoch": 0,
        "train_seconds": 0.0,
        "valid_seconds": 0.0,
        "epochs_done": 0,
        "validations": [],
    }

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

    started = time.time()
    result = run(
        model,
        dataset,
        config_file_list=config_files,
        config_dict=settings,
        saved=True,
        trainer_class=BudgetTrainer,
    )
    batches, per_epoch = record["batches"], max(record["batches_per_epoch"], 1)
    valids = record["validations"]
    best = best_validation(valids)
    cuda = torch.cuda.is_available()
    return {
        "model": model,
        "dataset": dataset,
        "test": result["test_result"],
        "best_valid": result["best_valid_result"],
        "best_epoch": best["epoch"] if best else None,
        "validations": valids,
        "epochs": batches / per_epoch,
        "stopped_by": (
            "wall-clock budget"
            if record.get("budget_spent")
            else "early stopping or epoch limit"
        ),
        "train_seconds_per_epoch": record["train_seconds"]
        / max(batches / per_epoch, 1e-9),
        "valid_seconds_each": record["valid_seconds"] / max(len(valids), 1),
        "test_eval_seconds": result["test_seconds"],
        "wall_seconds": time.time() - started,
        "parameters": result["parameters"],
        "peak_gpu_memory_gb": (
            (torch.cuda.max_memory_allocated() / 2**30) if cuda else 0
        ),
    }


WORKER_OPTIONS = ("--worker", "--deadline", "--job-dir")  # each takes one value


def job_command(cli: List[str]) -> str:
    """The command that launched the job, from a worker's arguments."""
    kept = [
        arg
        for i, arg in enumerate(cli)
        if arg not in WORKER_OPTIONS and (i == 0 or cli[i - 1] not in WORKER_OPTIONS)
    ]
    return shlex.join(["python", "benchmarks/bench_sequential_gpu.py", *kept])


def worker(args) -> None:
    import pandas
    import recbole
    import torch

    spec = yaml.safe_load(SEQUENTIAL_SPEC.read_text())
    model = args.worker
    settings = settings_for(spec, model, args)
    out = Path(args.out)

    # A tiny generated dataset first, on the same device, through the same code.
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
    result.update(
        settings=settings,
        budget_minutes=args.minutes,
        ran_with=args.models,
        command=job_command(args.cli),
        device=(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"),
        versions={
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "numpy": np.__version__,
            "pandas": pandas.__version__,
            "recbole": recbole.__version__,
        },
        commit=args.commit,
        measured_at=datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
    )
    stamp = result["measured_at"][:16].replace("-", "").replace(":", "")
    path = out / f"{args.dataset}-{model}-{stamp}.json"  # reruns never overwrite
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(result, indent=1, default=str))
    os.replace(partial, path)


# ---------------------------------------------------------------------------- orchestration
def launch(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="seq-gpu-job-"))  # logs and smoke markers
    deadline = time.time() + args.minutes * 60
    threads = max(1, (os.cpu_count() or 2) // len(args.models))
    procs = {}
    for model in args.models:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            model,
            "--deadline",
            str(deadline),
            "--job-dir",
            str(logs),
            *args.cli,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        log = open(logs / f"{model}.log", "w")
        procs[model] = (
            subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            ),
            log,
        )

    def collect_logs() -> None:
        # One combined log under --out (few files come back from a device run).
        with open(out / "logs.txt", "w") as combined:
            for model in args.models:
                combined.write(f"===== {model}\n")
                combined.write((logs / f"{model}.log").read_text(errors="replace"))

    last_collect = time.time()
    while any(p.poll() is None for p, _ in procs.values()):
        time.sleep(2)
        broken = [
            model
            for model, (proc, _) in procs.items()
            if proc.poll() not in (None, 0)
            and not smoke_marker(str(logs), model).exists()
        ]
        if broken:  # a device problem: stop now rather than at the deadline
            print(f"{broken[0]}: the tiny-data run failed; stopping every run")
            for other, _ in procs.values():
                other.kill()
            for other, _ in procs.values():
                other.wait()
        if time.time() - last_collect > 30:
            collect_logs()
            last_collect = time.time()
    collect_logs()
    for model, (proc, log) in procs.items():
        log.close()
        if proc.returncode != 0:
            print(f"{model}: exit {proc.returncode}; last lines of its log:")
            print("\n".join((logs / f"{model}.log").read_text().splitlines()[-25:]))
    shutil.rmtree(logs)
    print(report(out))
    return 1 if any(p.returncode for p, _ in procs.values()) else 0


# ---------------------------------------------------------------------------- report
def stop_label(run: Dict[str, Any]) -> str:
    if run["stopped_by"] != "wall-clock budget":
        return run["stopped_by"]
    best, last = best_validation(run["validations"]), run["validations"][-1]
    if best is last:
        return "budget; still improving"
    return f"budget; best {last['epoch'] - best['epoch']} epochs before the last validation"


def report(results: Path, figure: Optional[Path] = None) -> str:
    """Markdown: one row per run (JSON in ``results``), provenance, and (with ``figure``)
    a plot of every run's validation NDCG@10 by epoch."""
    runs = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    if not runs:
        return "no results"
    # one row group per job (the runs that shared the device), jobs in time order
    started = {}
    for r in runs:
        job = r.get("command", r["measured_at"])
        started[job] = min(started.get(job, r["measured_at"]), r["measured_at"])
    runs.sort(
        key=lambda r: (
            r["dataset"],
            started[r.get("command", r["measured_at"])],
            r["model"],
        )
    )
    lines = [
        "| dataset | model | ran with | "
        + " | ".join(f"test {m}" for m in SEQUENTIAL_METRICS)
        + " | best valid NDCG@10 (epoch) | epochs trained | stopped by "
        "| s / epoch | s / validation | s / test eval | params | measured (UTC) |",
        "|---|---|---|" + "---|" * (len(SEQUENTIAL_METRICS) + 8),
    ]
    for r in runs:
        others = [m for m in r.get("ran_with", [r["model"]]) if m != r["model"]]
        lines.append(
            f"| {r['dataset']} | {r['model']} | {', '.join(others) or 'alone'} | "
            + " | ".join(f"{r['test'][m]:.4f}" for m in SEQUENTIAL_METRICS)
            + f" | {r['best_valid'].get('ndcg@10', float('nan')):.4f} ({r['best_epoch']}) "
            f"| {r['epochs']:.1f} | {stop_label(r)} | {r['train_seconds_per_epoch']:.2f} "
            f"| {r['valid_seconds_each']:.1f} | {r['test_eval_seconds']:.1f} "
            f"| {r['parameters']:,} | {r['measured_at'][:16].replace('T', ' ')} |"
        )
    provenance = sorted(
        {
            f"- `{r.get('command', '?')}` on {r['device']}, commit {r['commit']}, "
            f"{', '.join(f'{k} {v}' for k, v in r['versions'].items())}; "
            f"wall-clock budget {r['budget_minutes']} minutes"
            for r in runs
        }
    )
    settings = runs[0]["settings"]
    shared = {
        k: settings[k]
        for k in ("epochs", "eval_step", "stopping_step", "eval_batch_size", "seed")
    }
    text = (
        "# Sequential recommenders on a GPU, with validation-based selection\n\n"
        "Written by `python benchmarks/bench_sequential_gpu.py --report <results>` from the "
        "runs below. Protocol as the suite's sequential section: leave-one-out, every "
        "prefix of a training sequence a training sample, full ranking over all items, "
        "history not masked (DiffuRec's protocol). Every run validates every "
        f"{shared['eval_step']} epochs and stops early after {shared['stopping_step']} "
        "validations without a better valid NDCG@10, at the epoch limit "
        f"({shared['epochs']}) or when its wall-clock budget is spent; the best validation "
        "checkpoint is scored once on test. Model settings: each model's defaults with the "
        "suite's common settings and per-model overrides "
        "(`properties/experiment/sequential_suite.yaml`), eval batch "
        f"{shared['eval_batch_size']} sequences, seed {shared['seed']}. 'ran with': the "
        "runs that shared the device (they contend for it, so compare seconds per epoch "
        "only between runs of one row group). 'still improving': the best validation was "
        "the last one, so the run had not converged when its budget ran out. Versions are "
        "the machine's (on NumPy 2, RecBole 1.2.1 runs through `recbole_diffrec.compat`)."
        "\n\n" + "\n".join(lines) + "\n\nRuns:\n" + "\n".join(provenance) + "\n"
    )
    if figure is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4))
        for r in runs:
            others = [m for m in r.get("ran_with", [r["model"]]) if m != r["model"]]
            ax.plot(
                [v["epoch"] for v in r["validations"]],
                [v["ndcg@10"] for v in r["validations"]],
                marker="o",
                markersize=3,
                label=f"{r['dataset']} {r['model']}" + ("" if others else " (alone)"),
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel("valid NDCG@10")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(figure, dpi=110, bbox_inches="tight")
        plt.close(fig)
        text += f"\n![validation curves]({os.path.relpath(figure, REPORT.parent)})\n"
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
