"""Sequential recommenders: DiffuRec and SeqDiffRec vs SASRec, BERT4Rec and GRU4Rec,
leave-one-out, full ranking, each model on the same CPU-time budget (settings in
properties/experiment/sequential_suite.yaml)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping

import numpy as np

from ..report import save_figure
from ..runner import ROOT, Runner
from ..training import (
    QUICK_SEQUENTIAL_OVERRIDES,
    budget_trainer,
    peak_rss_mb,
    quick_sequences,
)
from . import Section

SPEC_FILE = ROOT / "properties" / "experiment" / "sequential_suite.yaml"
SEQUENTIAL_METRICS = ("hit@10", "hit@20", "ndcg@10", "ndcg@20")


def quick(spec: Dict[str, Any]) -> None:
    sequential = spec["sequential"]
    sequential.update(cpu_minutes=0.05, max_epochs=2)
    sequential["datasets"] = {"quick-seq": None}
    for settings in sequential["models"].values():
        settings.update(QUICK_SEQUENTIAL_OVERRIDES)


def jobs(runner: Runner, needed: Mapping[str, Any]) -> List[Dict[str, Any]]:
    seq = runner.spec["sequential"]
    listed = [
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
    runner.execute(listed, "sequential")
    return listed


def settings_for(runner: Runner, job: Dict[str, Any], budget) -> tuple:
    """The run's settings and dataset yaml files."""
    seq = runner.spec["sequential"]
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
    if runner.spec["quick"]:
        settings.update(quick_sequences(runner.results_dir))
        files = [str(ROOT / "properties" / "dataset" / "amazon-beauty.yaml")]
    else:
        files = [str(ROOT / seq["datasets"][job["dataset"]])]
    return settings, files


def worker(runner: Runner, job: Dict[str, Any]) -> Dict[str, Any]:
    """Train for the section's CPU-time budget, then score the model once on test."""
    from recbole_diffrec import run

    seq = runner.spec["sequential"]
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

    settings, files = settings_for(runner, job, budget)
    start = time.perf_counter()
    result = run(
        job["model"],
        job["dataset"],
        config_file_list=files,
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


# ---------------------------------------------------------------------------- report
def table(runner: Runner, results, datasets: List[str]) -> List[str]:
    lines = [
        "| dataset | model | "
        + " | ".join(f"test {m}" for m in SEQUENTIAL_METRICS)
        + " | epochs trained | CPU s / epoch | wall s / epoch | s / test eval | params |",
        "|---|---|" + "---|" * (len(SEQUENTIAL_METRICS) + 5),
    ]
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
                f"| {dataset} | {job['model']}{runner.stale_mark([job])} | "
                + " | ".join(cells)
                + f" | {r['epochs']:.2f} | {r['cpu_seconds_per_epoch']:.1f} | "
                f"{r['wall_seconds_per_epoch']:.1f} | {r['test_eval_seconds']:.1f} | "
                f"{r['parameters']:,} |"
            )
    return lines


def figure(results, datasets: List[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.5))
    for ax, dataset in zip(np.atleast_1d(axes), datasets):
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
    save_figure(fig, path)


def protocol(seq: Dict[str, Any]) -> str:
    budget = (
        f"the same training budget of {seq['cpu_minutes']} CPU minutes per run (process CPU "
        "time, so other work on the machine does not shrink a run); the model as it stands "
        "when the budget runs out is scored once on test, with no validation-based selection"
        if seq["cpu_minutes"] is not None
        else f"up to {seq['max_epochs']} epochs with RecBole's validation early stopping"
    )
    return (
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
    )


def render(runner: Runner, listed: List[Dict[str, Any]], figures: Path) -> str:
    seq = runner.spec["sequential"]
    results = [(j, runner.read(j)) for j in listed if runner.cached(j)]
    datasets = list(seq["datasets"])
    lines = table(runner, results, datasets)
    figure(results, datasets, figures / "sequential.png")
    return (
        "## Sequential recommenders\n\n"
        + protocol(seq)
        + "\n\n"
        + "\n".join(lines)
        + f"\n{runner.notes(listed)}\n![sequential](figures/sequential.png)\n"
        + "\nTrained for up to hundreds of epochs on a GPU, with validation-based selection: "
        "[sequential_gpu.md](sequential_gpu.md) "
        "(`python -m benchmarks.bench_sequential_gpu`).\n"
    )


SECTION = Section(
    name="sequential",
    order=60,
    jobs=jobs,
    render=render,
    worker=worker,
    quick=quick,
    spec_file=SPEC_FILE,
    hash_by_model=True,
)
