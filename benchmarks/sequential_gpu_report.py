"""benchmarks/sequential_gpu.md from bench_sequential_gpu's run files: one row per run,
provenance, and a plot of every run's validation curve."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from .runner import ROOT
from .sections.sequential import SEQUENTIAL_METRICS
from .selection import kept_validation

REPORT = ROOT / "benchmarks" / "sequential_gpu.md"


def best_validation(validations: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The validation whose checkpoint RecBole kept (its rule, no early stop assumed)."""
    return kept_validation(validations, lambda v: v["ndcg@10"])


def stop_label(run: Dict[str, Any]) -> str:
    if run["stopped_by"] != "wall-clock budget":
        return run["stopped_by"]
    best, last = best_validation(run["validations"]), run["validations"][-1]
    if best is last:
        return "budget; still improving"
    return f"budget; best {last['epoch'] - best['epoch']} epochs before the last validation"


def others(run: Dict[str, Any]) -> List[str]:
    """The runs that shared the device with this one."""
    return [m for m in run.get("ran_with", [run["model"]]) if m != run["model"]]


def in_job_order(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row group per job (the runs that shared the device), jobs in time order."""
    started: Dict[str, str] = {}
    for r in runs:
        job = r.get("command", r["measured_at"])
        started[job] = min(started.get(job, r["measured_at"]), r["measured_at"])
    return sorted(
        runs,
        key=lambda r: (
            r["dataset"],
            started[r.get("command", r["measured_at"])],
            r["model"],
        ),
    )


def table(runs: List[Dict[str, Any]]) -> List[str]:
    lines = [
        "| dataset | model | ran with | "
        + " | ".join(f"test {m}" for m in SEQUENTIAL_METRICS)
        + " | best valid NDCG@10 (epoch) | epochs trained | stopped by "
        "| s / epoch | s / validation | s / test eval | params | measured (UTC) |",
        "|---|---|---|" + "---|" * (len(SEQUENTIAL_METRICS) + 8),
    ]
    for r in runs:
        lines.append(
            f"| {r['dataset']} | {r['model']} | {', '.join(others(r)) or 'alone'} | "
            + " | ".join(f"{r['test'][m]:.4f}" for m in SEQUENTIAL_METRICS)
            + f" | {r['best_valid'].get('ndcg@10', float('nan')):.4f} ({r['best_epoch']}) "
            f"| {r['epochs']:.1f} | {stop_label(r)} | {r['train_seconds_per_epoch']:.2f} "
            f"| {r['valid_seconds_each']:.1f} | {r['test_eval_seconds']:.1f} "
            f"| {r['parameters']:,} | {r['measured_at'][:16].replace('T', ' ')} |"
        )
    return lines


def provenance(runs: List[Dict[str, Any]]) -> List[str]:
    return sorted(
        {
            f"- `{r.get('command', '?')}` on {r['device']}, commit {r['commit']}, "
            f"{', '.join(f'{k} {v}' for k, v in r['versions'].items())}; "
            f"wall-clock budget {r['budget_minutes']} minutes"
            for r in runs
        }
    )


def curves(runs: List[Dict[str, Any]], figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in runs:
        ax.plot(
            [v["epoch"] for v in r["validations"]],
            [v["ndcg@10"] for v in r["validations"]],
            marker="o",
            markersize=3,
            label=f"{r['dataset']} {r['model']}" + ("" if others(r) else " (alone)"),
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid NDCG@10")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110, bbox_inches="tight")
    plt.close(fig)


def report(results: Path, figure: Optional[Path] = None) -> str:
    """Markdown: one row per run (JSON in ``results``), provenance, and (with ``figure``)
    a plot of every run's validation NDCG@10 by epoch."""
    runs = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    if not runs:
        return "no results"
    runs = in_job_order(runs)
    shared = runs[0]["settings"]
    text = (
        "# Sequential recommenders on a GPU, with validation-based selection\n\n"
        "Written by `python -m benchmarks.bench_sequential_gpu --report <results>` from the "
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
        "\n\n"
        + "\n".join(table(runs))
        + "\n\nRuns:\n"
        + "\n".join(provenance(runs))
        + "\n"
    )
    if figure is not None:
        curves(runs, figure)
        text += f"\n![validation curves]({os.path.relpath(figure, REPORT.parent)})\n"
    return text
