"""benchmarks/gpu.md from benchmarks.gpu's result files: what was measured, what is
pending, and the exact commands for the next lent session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

PAPER_DIFFUREC_NDCG10 = 0.0475  # DiffuRec (TOIS 2023), Table 2, Amazon-Beauty
PAPER = "DiffuRec paper: NDCG@10 0.0475, HR@10 0.0791 (SASRec 0.0323 / 0.0626)"
SPEED_TARGET = 3.0  # RecBole's DiffRec epoch / the plugin's, on the same GPU

DEVICE_COMMAND = (
    "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "
    "--target /tmp/site .gpu/wheels/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; "
    "set -o pipefail; PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu --minutes 9 "
    "--bundle $OUT --commit <COMMIT> 2>&1 | tee $OUT/gpu-log.txt"
)
SETUP = f"""\
1. Here, once (a lent machine has no network): `python -m benchmarks.gpu --prepare`
   builds the gitignored `.gpu/` (ml-1m_clean's four .npy files, amazon-beauty.jsonl and
   the wheels the device image lacks: RecBole 1.2.1, colorlog 4.7.2, texttable 1.7.2,
   kmeans-pytorch 0.3; about 13 MiB, under the 64 MiB that travels with the tree).
2. The device call: `run` with `carry: [".gpu"]`, `timeout_s: 600` and the command

   ```
   {DEVICE_COMMAND}
   ```

   (`<COMMIT>`: `git rev-parse --short HEAD` here; the device copy may lack git's history).
   Parts run to cumulative deadlines (self-check 5%, speed 30%, sequential 50%, curve
   15% of `--minutes`), so the command ends by about 9.5 minutes with start-up and leaves
   the session's 15 minutes room for the machine's start.
3. Back here: `tar xzf <files_at>/gpu-results.tar.gz -C benchmarks/results` (the JSONs
   land in `benchmarks/results/gpu/`), then `python -m benchmarks.gpu --report-only`, and
   commit both. Unpack before any further call: results travel with the tree, so the
   next call skips what is done. A second call on the same warm machine also finds
   `.gpu-work/` (training states, checkpoints) and continues cut sequential runs exactly;
   a fresh machine restarts them (a restart replaces a record only when it gets further).
   To spend a later session on what is left only: `--parts sequential curve`.
"""


def load(results: Path) -> Dict[str, Dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def fmt(value: Optional[float], digits: int = 4) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def median(values: List[float]) -> Optional[float]:
    return float(np.median(values)) if values else None


def mean(values: List[float]) -> Optional[float]:
    return float(np.mean(values)) if values else None


def machine(run: Dict[str, Any]) -> str:
    tiny = " (tiny data)" if run.get("tiny") else ""
    return f"{run.get('device', '?')}{tiny}"


# ---------------------------------------------------------------------------- speed
def time_to_result(run: Dict[str, Any]) -> str:
    if run["stopped_by"] == "deadline":
        return f"not reached ({run['wall_seconds']:.0f} s, {run['epochs_total']} ep)"
    return f"{run['wall_seconds']:.0f}"


def speed_section(runs: Dict[str, Dict[str, Any]], names: List[str]) -> List[str]:
    lines = [
        "## Speed: the DiffRec family, plugin vs RecBole's built-ins (ml-1m_clean)",
        "",
        "The suite's settings (`properties/experiment/ml1m_clean_suite.yaml`: the official "
        "ml-1m_clean settings, RecBole's DiffRec on the same [600, 200, 600] network), "
        "seed 2020, one run after the other in one process on one device. Each trains with "
        "the paper protocol (validation every 5 epochs, early stopping) until it stops or "
        "its share of the part's time ends, then its best checkpoint is tested. s / epoch: "
        "median over epochs (the first includes warm-up); time to result: the whole run "
        "(data loading, training, validations, test) when it stopped early, else not "
        "reached within its share; peak GPU memory: `torch.cuda.max_memory_allocated`.",
        "",
        "| run | device | params | epochs | s / epoch | s / validation | s / test eval "
        "| time to result (s) | peak GPU MiB | test Recall@20 | test NDCG@20 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        run = runs.get(f"speed-{name}")
        if run is None:
            lines.append(f"| {name} | *pending* |" + " |" * 9)
            continue
        peak = run.get("peak_gpu_mb")
        lines.append(
            f"| {name} | {machine(run)} | {run['parameters']:,} | {run['epochs_total']} "
            f"| {fmt(median(run['epoch_seconds']), 3)} "
            f"| {fmt(mean(run['valid_seconds']), 2)} | {fmt(run['test_eval_seconds'], 2)} "
            f"| {time_to_result(run)} | {'n/a' if peak is None else f'{peak:.0f}'} "
            f"| {fmt(run['test'].get('recall@20'))} | {fmt(run['test'].get('ndcg@20'))} |"
        )
    return lines


def speed_ratios(runs: Dict[str, Dict[str, Any]], pairs) -> List[str]:
    lines = [
        "",
        f"Ratios RecBole / plugin (higher: the plugin is faster; target for DiffRec's "
        f"epoch: at least {SPEED_TARGET:.0f}x on the same GPU):",
        "",
        "| plugin | RecBole | epoch | validation | test eval | peak GPU memory |",
        "|---|---|---|---|---|---|",
    ]
    for plugin, builtin in pairs:
        p, r = runs.get(f"speed-{plugin}"), runs.get(f"speed-{builtin}")
        if p is None or r is None:
            lines.append(f"| {plugin} | {builtin} | *pending* | | | |")
            continue

        def ratio(a: Optional[float], b: Optional[float]) -> str:
            return "n/a" if not a or not b else f"{b / a:.2f}x"

        lines.append(
            f"| {plugin} | {builtin} "
            f"| {ratio(median(p['epoch_seconds']), median(r['epoch_seconds']))} "
            f"| {ratio(mean(p['valid_seconds']), mean(r['valid_seconds']))} "
            f"| {ratio(p['test_eval_seconds'], r['test_eval_seconds'])} "
            f"| {ratio(p.get('peak_gpu_mb'), r.get('peak_gpu_mb'))} |"
        )
    return lines


# ---------------------------------------------------------------------------- sequential
def sequential_section(
    runs: Dict[str, Dict[str, Any]], models: List[str], seeds: List[int]
) -> List[str]:
    lines = [
        "## Sequential: DiffuRec and SASRec on Amazon-Beauty, three seeds",
        "",
        "Leave-one-out, full ranking, history not masked (DiffuRec's protocol); each model's "
        "suite settings (`properties/experiment/sequential_suite.yaml`), validation every 5 "
        "epochs, early stopping after 10 validations without a better valid NDCG@10, at "
        "500 epochs or at the part's deadline; the best validation checkpoint is tested. "
        "The seeds run side by side on the device (so compare s / epoch within this "
        f"table only). {PAPER}.",
        "",
        "| model | seed | device | status | epochs | best valid NDCG@10 (epoch) "
        "| test NDCG@10 | test HR@10 | s / epoch | sessions |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        for seed in seeds:
            run = runs.get(f"sequential-{model}-{seed}")
            if run is None:
                lines.append(f"| {model} | {seed} | *pending* |" + " |" * 7)
                continue
            status = (
                "stopped early"
                if run["status"] == "done"
                else "cut by deadline"
                + (
                    "; still improving"
                    if run["validations"]
                    and run["best_epoch"] == run["validations"][-1]["epoch"]
                    else ""
                )
            )
            seconds = [s for seg in run["segments"] for s in seg["epoch_seconds"]]
            lines.append(
                f"| {model} | {seed} | {machine(run)} | {status} | {run['epochs_total']} "
                f"| {fmt(run['best_valid'].get('ndcg@10'))} ({run['best_epoch']}) "
                f"| {fmt(run['test'].get('ndcg@10'))} | {fmt(run['test'].get('hit@10'))} "
                f"| {fmt(median(seconds), 2)} | {len(run['segments'])} |"
            )
    lines += ["", "Over the seeds measured so far (mean ± sd of test metrics):", ""]
    for model in models:
        found = [
            runs[k] for k in (f"sequential-{model}-{s}" for s in seeds) if k in runs
        ]
        if not found:
            lines.append(f"- {model}: pending")
            continue
        ndcg = [r["test"]["ndcg@10"] for r in found]
        hit = [r["test"]["hit@10"] for r in found]
        done = sum(r["status"] == "done" for r in found)
        gap = ""
        if model == "DiffuRec":
            gap = (
                f"; {np.mean(ndcg) / PAPER_DIFFUREC_NDCG10:.0%} of the paper's "
                f"{PAPER_DIFFUREC_NDCG10}"
            )
        lines.append(
            f"- {model}: NDCG@10 {np.mean(ndcg):.4f} ± {np.std(ndcg):.4f}, HR@10 "
            f"{np.mean(hit):.4f} ± {np.std(hit):.4f} over {len(found)} of {len(seeds)} "
            f"seeds ({done} stopped early, {len(found) - done} cut by the deadline){gap}"
        )
    return lines


# ---------------------------------------------------------------------------- curve
def curve_section(runs: Dict[str, Dict[str, Any]]) -> List[str]:
    lines = [
        "## Respaced sampling: DiffuRec's test NDCG@10 against `inference_steps`",
        "",
        "One trained DiffuRec (the sequential part's first seed with a checkpoint on "
        "the machine, its best checkpoint), its test set evaluated at each chain length "
        "from the same seed, after one untimed warm-up evaluation; eval s is the faster "
        "of two timings (tiny data: no warm-up, one timing). `full` is the whole reverse chain (32 steps). "
        "Target: "
        "at 8 steps or fewer, NDCG@10 within 2% of the full chain and the evaluation at "
        "least 3x faster.",
        "",
    ]
    run = runs.get("curve-DiffuRec")
    if run is None:
        return lines + ["*Pending*: needs the sequential part's DiffuRec checkpoint."]
    lines += [
        f"Model: seed {run['seed']}, {run['model_epochs']} epochs ({run['model_status']}), best epoch "
        f"{run['model_best_epoch']}; {machine(run)}.",
        "",
        "| inference_steps | test NDCG@10 | vs full | test HR@10 | eval s | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    full = next((p for p in run["points"] if p["inference_steps"] == "full"), None)
    for point in run["points"]:
        if "unavailable" in point:
            lines.append(
                f"| {point['inference_steps']} | *{point['unavailable']}* | | | | |"
            )
            continue
        rel = speed = "n/a"
        if full and "ndcg@10" in full and full["ndcg@10"]:
            rel = f"{point['ndcg@10'] / full['ndcg@10'] - 1:+.1%}"
            speed = f"{full['eval_seconds'] / point['eval_seconds']:.1f}x"
        lines.append(
            f"| {point['inference_steps']} | {point['ndcg@10']:.4f} | {rel} "
            f"| {point['hit@10']:.4f} | {point['eval_seconds']:.2f} | {speed} |"
        )
    return lines


# ---------------------------------------------------------------------------- whole
def pending(runs: Dict[str, Dict[str, Any]], names, models, seeds) -> List[str]:
    todo = [f"speed {n}" for n in names if f"speed-{n}" not in runs]
    for model in models:
        for seed in seeds:
            run = runs.get(f"sequential-{model}-{seed}")
            if run is None:
                todo.append(f"sequential {model} seed {seed}")
            elif run["status"] != "done":
                todo.append(
                    f"sequential {model} seed {seed} (cut at {run['epochs_total']} epochs)"
                )
    curve = runs.get("curve-DiffuRec")
    if curve is None or curve["status"] != "done":
        todo.append(
            "respaced-sampling curve" + ("" if curve is None else " (incomplete)")
        )
    return todo


def shown(path: Path) -> str:
    from .runner import ROOT

    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


def report(results: Path, rehearsal: bool = False) -> str:
    from .gpu import SEEDS, SEQ_MODELS, SPEED_PAIRS, SPEED_RUNS

    runs = load(results)
    rehearsal = rehearsal or any(
        r.get("tiny") or r.get("device_kind") != "cuda" for r in runs.values()
    )
    names, models, seeds = list(SPEED_RUNS), list(SEQ_MODELS), list(SEEDS)
    todo = pending(runs, names, models, seeds)
    check = runs.get("selfcheck")
    head = [
        "# One prepared GPU command: speed, sequential seeds and respaced sampling",
        "",
        "Written by `python -m benchmarks.gpu --report-only` from the JSON files in "
        f"`{shown(results)}/` (benchmarks/gpu.py; one file per run).",
    ]
    if rehearsal:
        head += [
            "",
            "**REHEARSAL: these numbers come from a CPU or tiny-data run, not from a GPU; "
            "they check the pipeline and mean nothing about speed or accuracy.**",
        ]
    devices = sorted({machine(r) for r in runs.values() if "device" in r})
    head += [
        "",
        "Status: "
        + (
            "no run on a GPU yet: every table below is pending."
            if not runs
            else f"measured on {', '.join(devices)}; "
            + (f"**pending: {'; '.join(todo)}**." if todo else "all runs done.")
        ),
    ]
    if check:
        head.append(
            f"Last self-check: {check['status']} on {machine(check)} "
            f"({check['checks'].get('seconds', '?')} s, {check['measured_at'][:16]} UTC)."
        )
    commands = sorted(
        {
            f"`{r['command']}` (commit {r['commit']})"
            for r in runs.values()
            if "command" in r
        }
    )
    body = [
        *speed_section(runs, names),
        *speed_ratios(runs, SPEED_PAIRS),
        "",
        *sequential_section(runs, models, seeds),
        "",
        *curve_section(runs),
        "",
        "## Running it in a lent session",
        "",
        SETUP,
        "Runs recorded here: "
        + ("; ".join(commands) if commands else "none yet")
        + ".",
    ]
    return "\n".join(head + [""] + body) + "\n"


def summary(results: Path) -> str:
    """A few lines for the end of the command's output (the device returns its tail)."""
    from .gpu import SEEDS, SEQ_MODELS, SPEED_RUNS

    runs = load(results)
    lines = ["run | status | key numbers"]
    for name in SPEED_RUNS:
        run = runs.get(f"speed-{name}")
        if run:
            lines.append(
                f"speed {name} | {run['stopped_by']} | {fmt(median(run['epoch_seconds']), 3)} "
                f"s/epoch, {fmt(run['test_eval_seconds'], 2)} s/test, peak "
                f"{fmt(run.get('peak_gpu_mb'), 0)} MiB"
            )
    for model in SEQ_MODELS:
        for seed in SEEDS:
            run = runs.get(f"sequential-{model}-{seed}")
            if run:
                lines.append(
                    f"{model} {seed} | {run['status']} | {run['epochs_total']} epochs, "
                    f"test NDCG@10 {fmt(run['test'].get('ndcg@10'))}"
                )
    curve = runs.get("curve-DiffuRec")
    if curve:
        points = ", ".join(
            f"{p['inference_steps']}: "
            + (
                "unavailable"
                if "unavailable" in p
                else f"{fmt(p['ndcg@10'])} in {fmt(p['eval_seconds'], 2)} s"
            )
            for p in curve["points"]
        )
        lines.append(f"curve | {curve['status']} | {points}")
    todo = pending(runs, list(SPEED_RUNS), list(SEQ_MODELS), list(SEEDS))
    lines.append("pending: " + ("; ".join(todo) if todo else "nothing"))
    return "\n".join(lines)
