"""Fewer reverse steps at inference: one DiffRec evaluated on respaced chains."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Mapping

from ..report import save_figure
from ..runner import ROOT, Runner
from ..training import dataset_name, run_settings
from . import Section


def quick(spec: Dict[str, Any]) -> None:
    spec["inference_steps"] = [1, 2, 5]


def jobs(runner: Runner, needed: Mapping[str, Any]) -> Dict[str, Any]:
    job = {
        "section": "steps",
        "name": "DiffRec",
        "settings": {},
        "seed": runner.spec["seeds"][0],
        "counts": runner.spec["inference_steps"],
    }
    runner.execute([job], "steps")
    return job


def worker(runner: Runner, job: Dict[str, Any]) -> Dict[str, Any]:
    from recbole_diffrec import get_trainer, load_model, run
    from recbole_diffrec.diffusion import respace

    spec = runner.spec
    trained = run(
        "DiffRec",
        dataset_name(spec),
        config_file_list=[str(ROOT / spec["dataset_config"])],
        config_dict=run_settings(spec, job, runner.results_dir),
        saved=True,
    )
    config, model, _, _, _, test_data = load_model(trained["model_file"])
    trainer = get_trainer(type(model))(config, model)
    points = []
    for count in job["counts"]:
        count = min(count, model.diffusion.steps)
        model.respaced_diffusion = (
            None if count == model.diffusion.steps else respace(model.diffusion, count)
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


# ---------------------------------------------------------------------------- report
def figure(points, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [p["steps"] for p in points]
    ax.plot(steps, [p["test"]["ndcg@20"] for p in points], "o-", color="tab:blue")
    ax.set_xlabel("reverse steps at inference")
    ax.set_ylabel("test NDCG@20", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(steps, [p["seconds"] for p in points], "s--", color="tab:orange")
    ax2.set_ylabel("s / full evaluation", color="tab:orange")
    save_figure(fig, path)


def render(runner: Runner, job: Dict[str, Any], figures: Path) -> str:
    if not runner.cached(job):
        return f"## Fewer reverse steps at inference (DiffRec)\n{runner.notes([job])}"
    r = runner.read(job)
    full = next(
        (p for p in r["points"] if p["steps"] == r["trained_steps"]), r["points"][-1]
    )
    lines = [
        "| reverse steps | test NDCG@20 | change vs all steps | s / full eval |",
        "|---|---|---|---|",
    ]
    for p in r["points"]:
        change = p["test"]["ndcg@20"] / full["test"]["ndcg@20"] - 1
        lines.append(
            f"| {p['steps']} | {p['test']['ndcg@20']:.4f} | {change:+.2%} | "
            f"{p['seconds']:.1f} |"
        )
    figure(r["points"], figures / "steps.png")
    return (
        "## Fewer reverse steps at inference (DiffRec)\n\n"
        f"One DiffRec{runner.stale_mark([job])} trained with {r['trained_steps']} steps, "
        "evaluated on respaced chains "
        "(`inference_steps`; the full chain is the default).\n\n"
        + "\n".join(lines)
        + "\n"
        + runner.stale_line([job])
        + "\n![steps](figures/steps.png)\n"
    )


SECTION = Section(
    name="steps", order=50, jobs=jobs, render=render, worker=worker, quick=quick
)
