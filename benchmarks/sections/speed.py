"""Speed and memory: the plugin vs RecBole built-in on the same settings, taken from the
accuracy runs of the first seed (no runs of its own)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping

import numpy as np

from ..report import save_figure
from ..runner import Runner
from . import Section


def jobs(runner: Runner, needed: Mapping[str, Any]) -> Dict[str, Any]:
    return needed["accuracy"]


# ---------------------------------------------------------------------------- report
def machine(result: Dict[str, Any], cores: int) -> str:
    loads = result.get("load_average")
    if loads is None:
        return "load not recorded"
    busy = max(loads) > cores + 0.5
    return f"{'BUSY' if busy else 'quiet'} (load {loads[0]:.1f}/{loads[1]:.1f})"


def row(plugin: str, builtin: str, p: Dict, r: Dict, mark: str, cores: int) -> tuple:
    """The table line of one pair and its four ratios."""
    ratios = [
        p["epoch_seconds"] / r["epoch_seconds"],
        p["test_eval_seconds"] / r["test_eval_seconds"],
        p["time_to_result"] / r["time_to_result"],
        p["peak_rss_mb"] / r["peak_rss_mb"],
    ]
    line = (
        f"| {plugin}{mark} | {builtin} | {p['parameters']:,} / {r['parameters']:,} | "
        f"{p['epoch_seconds']:.2f} / {r['epoch_seconds']:.2f} | "
        f"{p['test_eval_seconds']:.1f} / {r['test_eval_seconds']:.1f} | "
        f"{p['time_to_result']:.0f} / {r['time_to_result']:.0f} | "
        f"{p['peak_rss_mb']:.0f} / {r['peak_rss_mb']:.0f} | "
        + " | ".join(f"{x:.2f}" for x in ratios)
        + f" | {machine(p, cores)}; {machine(r, cores)} |"
    )
    return line, ratios


def figure(labels: List[str], ratios: List[List[float]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ratios_arr = np.array(ratios)
    for k, name in enumerate(["epoch", "full eval", "time to result", "peak memory"]):
        ax.bar(
            np.arange(len(labels)) + (k - 1.5) * 0.2, ratios_arr[:, k], 0.2, label=name
        )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(labels)), labels)
    ax.set_ylabel("plugin / RecBole (lower is better)")
    ax.legend()
    save_figure(fig, path)


def render(runner: Runner, acc: Dict[str, Any], figures: Path) -> str:
    spec = runner.spec
    first = spec["seeds"][0]
    firsts = {
        n: next(j for j in jobs if j["seed"] == first)
        for n, jobs in acc["seed_jobs"].items()
    }
    by_name = {n: runner.read(j) for n, j in firsts.items() if runner.cached(j)}
    lines = [
        "| plugin | RecBole | params | s / epoch | s / full eval | time to result (s) | "
        "peak RSS (MB) | ratio epoch | ratio eval | ratio result | ratio memory | machine |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cores = os.cpu_count() or 1
    labels, ratios, used = [], [], []
    for plugin, builtin in spec["speed_pairs"]:
        if plugin not in by_name or builtin not in by_name:
            continue
        mark = runner.stale_mark([firsts[plugin], firsts[builtin]])
        line, pair = row(
            plugin, builtin, by_name[plugin], by_name[builtin], mark, cores
        )
        lines.append(line)
        labels.append(plugin)
        ratios.append(pair)
        used += [firsts[plugin], firsts[builtin]]
    if ratios:
        figure(labels, ratios, figures / "speed.png")
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
        + runner.stale_line(used)
    )


SECTION = Section(name="speed", order=20, jobs=jobs, render=render, needs=("accuracy",))
