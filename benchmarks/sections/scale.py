"""Scale: DiffRec vs L-DiffRec on generated catalogues of growing size at Amazon-book's
density. Each point builds the plugin's own model (RecBole ``Config`` through the plugin,
``build_model``; L-DiffRec's item clusters from ``prepare_item_clusters``) on the training
split of the generated catalogue (RecBole's default random 80/10/10 split of each user's
interactions, through the plugin's ``data_preparation``), and times the model's
``calculate_loss``, backward pass and its trainer's optimizer step on batches of the
plugin's training loader."""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from ..report import save_figure
from ..runner import Runner
from ..training import peak_rss_mb
from . import Section

MODELS = ("DiffRec", "LDiffRec")


def quick(spec: Dict[str, Any]) -> None:
    spec["scale"].update(items=[500, 1000], batches=2, seconds_limit=120)


def jobs(runner: Runner, needed: Mapping[str, Any]) -> List[Dict[str, Any]]:
    listed = [
        {"section": "scale", "name": name, "items": n}
        for n in runner.spec["scale"]["items"]
        for name in MODELS
    ]
    runner.execute(listed, "scale")
    return listed


def load_catalogue(job: Dict[str, Any], settings: Dict[str, Any], folder: Path):
    """Generate the catalogue as a RecBole atomic file; return the run's config and its
    training loader (RecBole's default split: 80% of each user's interactions)."""
    from recbole.data import create_dataset

    from recbole_diffrec import config_from_settings, data_preparation
    from recbole_diffrec.synthetic import amazon_book_like, generate, write_atomic

    name = f"scale-{job['items']}"
    n_users, n_interactions = amazon_book_like(job["items"])
    users, items = generate(n_users, job["items"], n_interactions, seed=0)
    write_atomic(users, items, folder / name)
    del users, items
    config = config_from_settings(
        job["name"],
        name,
        {
            **settings,
            "data_path": str(folder),
            "checkpoint_dir": str(folder / "saved"),
            "item_emb_cache_dir": str(folder / "item_emb"),
            "show_progress": False,
            "seed": 0,
        },
    )
    train_data, _, _ = data_preparation(config, create_dataset(config))
    return config, train_data


def time_batches(config, model, loader, batches: int, seconds_limit: float) -> Dict:
    """Seconds per training batch (the first, which pays one-off allocations, untimed)."""
    from recbole_diffrec import get_trainer

    optimizer = get_trainer(type(model))(config, model).optimizer
    model.train()
    times: List[float] = []
    for step, batch in enumerate(loader):
        start = time.perf_counter()
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
        if step > 0:
            times.append(time.perf_counter() - start)
        if len(times) >= batches or sum(times) > seconds_limit:
            break
    per_batch = float(np.mean(times))
    return {
        "seconds_per_batch": per_batch,
        "seconds_per_epoch": per_batch * len(loader),
        "timed_batches": len(times),
        "batch_users": config["train_batch_size"],
    }


def measure(job: Dict[str, Any], scale: Dict[str, Any], folder: Path) -> Dict[str, Any]:
    from recbole.utils import init_seed

    from recbole_diffrec import build_model, prepare_item_clusters

    out: Dict[str, Any] = {}
    start = time.perf_counter()
    config, train_data = load_catalogue(job, scale[job["name"]], folder)
    dataset = train_data.dataset
    out["data_seconds"] = time.perf_counter() - start
    out["catalogue_items"] = dataset.item_num - 1  # items drawn at least once
    out["train_interactions"] = len(dataset.inter_feat)
    init_seed(config["seed"], config["reproducibility"])
    clusters: Optional[np.ndarray] = None
    if getattr(config.model_class, "needs_item_clusters", False):
        start = time.perf_counter()
        clusters = prepare_item_clusters(config, dataset)
        out["cluster_seconds"] = time.perf_counter() - start
    model = build_model(config, dataset, item_clusters=clusters)
    params = sum(p.numel() for p in model.parameters())
    batch = config["train_batch_size"]
    # weights, gradients, two Adam moments, plus a few (batch x items) activations
    estimate = (params * 4 * 4 + batch * job["items"] * 4 * 8) / 1024**3
    out.update(parameters=params, estimated_gb=estimate)
    if estimate > scale["memory_limit_gb"]:
        return {
            **out,
            "fits": False,
            "reason": f"needs about {estimate:.1f} GB (estimated)",
        }
    out.update(
        time_batches(
            config, model, train_data, scale["batches"], scale["seconds_limit"]
        )
    )
    return {**out, "fits": True}


def worker(runner: Runner, job: Dict[str, Any]) -> Dict[str, Any]:
    """Parameters, peak memory and training time per epoch, under the spec's memory limit
    (address space: the limit plus 8 GB for the runtime's own mappings)."""
    from recbole_diffrec.synthetic import amazon_book_like

    scale = runner.spec["scale"]
    n_users, n_interactions = amazon_book_like(job["items"])
    out = {"items": job["items"], "users": n_users, "interactions": n_interactions}
    previous = resource.getrlimit(resource.RLIMIT_AS)
    limit = int(scale["memory_limit_gb"] * 1024**3) + 8 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit, previous[1]))
    try:
        with tempfile.TemporaryDirectory(prefix="scale-") as folder:
            out.update(measure(job, scale, Path(folder)))
    except (MemoryError, RuntimeError) as err:
        if "memory" not in str(err).lower() and not isinstance(err, MemoryError):
            raise
        out.update(fits=False, reason=f"out of memory: {str(err)[:120]}")
    finally:
        resource.setrlimit(resource.RLIMIT_AS, previous)  # --quick runs in this process
    return {**out, "peak_rss_gb": peak_rss_mb() / 1024}


# ---------------------------------------------------------------------------- report
def figure(results, limit_gb: float, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for name in MODELS:
        pts = [r for j, r in results if j["name"] == name]
        fit = [r for r in pts if r["fits"]]
        axes[0].plot(
            [r["items"] for r in pts], [r["parameters"] for r in pts], "o-", label=name
        )
        for ax, key in ((axes[1], "peak_rss_gb"), (axes[2], "seconds_per_epoch")):
            ax.plot([r["items"] for r in fit], [r[key] for r in fit], "o-", label=name)
    for ax, title in zip(axes, ["parameters", "peak RSS (GB)", "s / epoch"]):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items")
        ax.set_title(title)
        ax.legend()
    axes[1].axhline(limit_gb, color="red", linestyle="--")
    save_figure(fig, path)


def row(runner: Runner, job: Dict[str, Any], r: Dict[str, Any]) -> str:
    fits = "yes" if r["fits"] else "no: " + r["reason"]
    return (
        f"| {r['items']:,} | {r['users']:,} | {r['interactions']:,} | "
        f"{job['name']}{runner.stale_mark([job])} | {r.get('parameters', 0):,} | {fits} | "
        f"{r.get('peak_rss_gb', float('nan')):.1f} | "
        f"{r.get('seconds_per_epoch', float('nan')):.0f} |"
    )


def render(runner: Runner, listed: List[Dict[str, Any]], figures: Path) -> str:
    scale = runner.spec["scale"]
    title = "## Scale: generated catalogues at Amazon-book's density"
    results = [(j, runner.read(j)) for j in listed if runner.cached(j)]
    if not results:
        return f"{title}\n{runner.notes(listed)}"
    lines = [
        "| items | users | interactions | model | params | fits in "
        f"{scale['memory_limit_gb']} GB | peak RSS (GB) | s / epoch (extrapolated) |",
        "|---|---|---|---|---|---|---|---|",
    ] + [row(runner, job, r) for job, r in results]
    batch = next((r["batch_users"] for _, r in results if "batch_users" in r), 400)
    no_fit = [
        r["items"] for j, r in results if j["name"] == "DiffRec" and not r["fits"]
    ]
    figure(results, scale["memory_limit_gb"], figures / "scale.png")
    where = (
        f"DiffRec no longer fits from {min(no_fit):,} items."
        if no_fit
        else "DiffRec fits at every size measured."
    )
    return (
        f"{title}\n\n"
        f"DiffRec {scale['DiffRec']} vs L-DiffRec {scale['LDiffRec']} over the plugin's "
        "defaults; each point builds the plugin's model (`build_model`, L-DiffRec's "
        "clusters by `prepare_item_clusters`) on the training split of the generated "
        "catalogue (RecBole's default random 80/10/10 split) and times its "
        "`calculate_loss`, backward pass and its trainer's optimizer step; seconds per "
        f"epoch extrapolated from {scale['batches']} timed batches of the plugin's training "
        f"loader ({batch} users each). {where}"
        + (
            " Rows marked stale may come from the suite's first scale worker, which "
            "re-implemented the training step with its own loss constants and balanced "
            "clusters instead of building the plugin's models."
            if any(runner.stale(j) for j, _ in results)
            else ""
        )
        + "\n\n"
        + "\n".join(lines)
        + f"\n{runner.notes(listed)}\n![scale](figures/scale.png)\n"
    )


SECTION = Section(
    name="scale", order=40, jobs=jobs, render=render, worker=worker, quick=quick
)
