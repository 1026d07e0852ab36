"""Early stopping: the accuracy runs again with a longer patience, the test set scored at
every validation, so one run per model and seed gives the validation-selected result under
each patience the spec lists (the reference code's 20 epochs included)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Mapping

import numpy as np
import yaml

from ..report import fmt, save_figure
from ..runner import ROOT, Runner
from ..selection import kept_validation
from ..training import QUICK_OVERRIDES, dataset_name, run_settings, timed_trainer
from . import Section

Jobs = Dict[str, List[Dict[str, Any]]]


def jobs(runner: Runner, needed: Mapping[str, Any]) -> Jobs:
    """Each listed model's accuracy setting (a baseline's grid winner) with every seed and
    the longest patience; models whose grid is unfinished wait."""
    spec, acc = runner.spec, needed["accuracy"]
    stop = spec["stopping"]
    listed = {
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
    for name, model_jobs in listed.items():
        runner.execute(model_jobs, f"{name} stopping")
    return listed


def worker(runner: Runner, job: Dict[str, Any]) -> Dict[str, Any]:
    """One long-patience run; the test set is scored at every validation (reported only at
    the points the validation metric selects)."""
    from unittest import mock

    from recbole_diffrec import quick_start, run

    spec = runner.spec
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

    settings = {
        **run_settings(spec, job, runner.results_dir),
        "stopping_step": job["stopping_step"],
    }
    start = time.perf_counter()
    with mock.patch.object(quick_start, "data_preparation", capture):
        run(
            job["model"],
            dataset_name(spec),
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


# ---------------------------------------------------------------------------- report
def protocol(spec: Dict[str, Any]) -> Dict[str, Any]:
    settings = yaml.safe_load((ROOT / spec["dataset_config"]).read_text())
    if spec["quick"]:
        settings.update(QUICK_OVERRIDES)
    return settings


def mismatches(runner: Runner, name: str, model_jobs, results, metric, reference):
    """The accuracy runs stopped with the same rule at the protocol's patience: the same
    selection must come out of these curves (training is deterministic)."""
    found = []
    for job, result in zip(model_jobs, results):
        twin = dict(job, section="accuracy")
        twin.pop("stopping_step")
        if runner.cached(twin):
            same = kept_validation(
                result["curve"], lambda p: p["valid"][metric], reference
            )
            expected = runner.read(twin)["test"]["ndcg@20"]
            if abs(same["test"]["ndcg@20"] - expected) > 1e-9:
                found.append(
                    f"{name} seed {job['seed']}: {same['test']['ndcg@20']} here, "
                    f"{expected} in the accuracy run"
                )
    return found


def row(runner: Runner, name: str, model_jobs, results, metric: str, patiences) -> str:
    cells = []
    for p in patiences:
        chosen = [
            kept_validation(r["curve"], lambda c: c["valid"][metric], p)
            for r in results
        ]
        ndcg = [c["test"]["ndcg@20"] for c in chosen]
        recall = [c["test"]["recall@20"] for c in chosen]
        epochs = "/".join(str(c["epoch"]) for c in chosen)
        cells.append(f"{fmt(ndcg)} / {fmt(recall)} ({epochs})")
    return f"| {name}{runner.stale_mark(model_jobs)} | " + " | ".join(cells) + " |"


def figure(curves: Dict[str, List[Dict[str, Any]]], metric: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for name, curve in curves.items():
        epochs = [c["epoch"] for c in curve]
        line = ax.plot(
            epochs,
            [c["valid"][metric] for c in curve],
            linewidth=0.9,
            label=f"{name} valid",
        )[0]
        ax.plot(
            epochs,
            [c["test"][metric] for c in curve],
            linewidth=0.9,
            linestyle="--",
            color=line.get_color(),
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("Recall@20 (solid valid, dashed test)")
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)


def render(runner: Runner, listed: Jobs, figures: Path) -> str:
    spec = runner.spec
    patiences = spec["stopping"]["patiences"]
    settings = protocol(spec)
    eval_step, reference = settings["eval_step"], settings["stopping_step"]
    metric = settings["valid_metric"].lower()
    lines = [
        "| model | "
        + " | ".join(
            f"patience {p}: test NDCG@20 / Recall@20 (epoch)" for p in patiences
        )
        + " |",
        "|---|" + "---|" * len(patiences),
    ]
    wrong, curves = [], {}
    for name, model_jobs in listed.items():
        if not all(runner.cached(j) for j in model_jobs):
            continue
        results = [runner.read(j) for j in model_jobs]
        lines.append(row(runner, name, model_jobs, results, metric, patiences))
        wrong += mismatches(runner, name, model_jobs, results, metric, reference)
        curves[name] = results[0]["curve"]
    everything = [j for js in listed.values() for j in js]
    check = (
        f"Check: with patience {reference} every curve selects the checkpoint its "
        "accuracy run kept (same test NDCG@20)."
        if not wrong
        else "**Mismatch with the accuracy runs**: " + "; ".join(wrong) + "."
    )
    if curves:
        figure(curves, metric, figures / "stopping.png")
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
        + f"\n\n{check}\n{runner.notes(everything)}"
        + ("\n![stopping](figures/stopping.png)\n" if curves else "")
    )


SECTION = Section(
    name="stopping",
    order=30,
    jobs=jobs,
    render=render,
    worker=worker,
    needs=("accuracy",),
    hash_by_model=True,
)
