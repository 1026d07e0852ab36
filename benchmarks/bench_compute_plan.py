"""What the tuned head-to-head costs on each dataset here, measured rather than guessed.

    python -m benchmarks.bench_compute_plan                      # ml-1m_clean + Amazon sets
    python -m benchmarks.bench_compute_plan --datasets amazon-beauty-general --timeout 600
    python -m benchmarks.bench_compute_plan --report-only

For every model of the tuned suite and every dataset, one short run (2 training epochs, a
validation after each, the test evaluation) with the setting ml-1m_clean's search chose,
in a fresh process with one torch thread (as a Tune trial with ``cpus_per_trial: 1``):
seconds to load and prepare, per training epoch (a training-free model's fit), per
validation and peak memory. One JSON per run in ``benchmarks/results/compute_plan/``
(a run already there is skipped; ``--timeout`` bounds each run, a run cut short is
recorded as a lower bound and measured again by a call with a longer ``--timeout``).

The projection scales what ml-1m_clean's tuned table really took (each model's search
wall time and its seed runs, from the committed results) by the ratio of a mean trial's
cost on the two datasets, from the short runs. It assumes the trials run as many epochs as
on ml-1m_clean. Report: benchmarks/compute_plan.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

if __name__ == "__main__" and not __package__:
    raise SystemExit("run it as a module: python -m benchmarks.bench_compute_plan")

from .runner import ROOT, write_atomically  # noqa: E402
from .sections.tuned_folders import search_time  # noqa: E402

SUITE = ROOT / "properties" / "experiment" / "tuned_suite.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "compute_plan"
REPORT = ROOT / "benchmarks" / "compute_plan.md"
SEARCHED_ON = "ml-1m_clean"  # whose search gives the settings and the epoch counts
PARALLEL_TRIALS = 2  # the suite's cpus_per_trial 1 on this 2-core machine


def suite_spec() -> Dict[str, Any]:
    import yaml

    return yaml.safe_load(SUITE.read_text())


def search_result(model: str, dataset: str = SEARCHED_ON) -> Optional[Dict[str, Any]]:
    """The committed tuned search of ``model`` on ``dataset`` (any code version)."""
    found = glob.glob(
        str(ROOT / "benchmarks/results/tuned" / f"tuned-{dataset}-{model}--*.json")
    )
    return json.loads(Path(found[0]).read_text()) if found else None


def seed_results(model: str, dataset: str = SEARCHED_ON) -> List[Dict[str, Any]]:
    pattern = f"tuned-{dataset}-{model}-20[0-9][0-9]-*.json"
    return [
        json.loads(Path(p).read_text())
        for p in sorted(glob.glob(str(ROOT / "benchmarks/results/tuned" / pattern)))
    ]


# ---------------------------------------------------------------------------- one run
def measure(model: str, dataset: str) -> Dict[str, Any]:
    """One short run in this process (called in a fresh worker process)."""
    import torch

    from recbole_diffrec import run

    from .training import peak_rss_mb, timed_trainer

    torch.set_num_threads(1)
    spec = suite_spec()
    search = search_result(model)
    settings = {
        **spec["common"],
        **(search["best_settings"] if search else {}),
        "epochs": 2,
        "eval_step": 1,
        "stopping_step": 10,
        "seed": 2020,
    }
    trainer, epoch_seconds, evaluations = timed_trainer(model)
    start = time.perf_counter()
    result = run(
        model,
        dataset,
        config_file_list=[str(ROOT / spec["datasets"][dataset])],
        config_dict=settings,
        saved=False,
        trainer_class=trainer,
    )
    total = time.perf_counter() - start
    valid = [s for s, _ in evaluations[:-1]] or [0.0]
    spent = sum(epoch_seconds) + sum(s for s, _ in evaluations)
    return {
        "model": model,
        "dataset": dataset,
        "settings": settings,
        "epoch_seconds": epoch_seconds,
        "validation_seconds": valid,
        "test_seconds": evaluations[-1][0],
        "start_seconds": total - spent,  # loading, converting, building the model
        "total_seconds": total,
        "peak_rss_mb": peak_rss_mb(),
        "test_ndcg@20": result["test_result"]["ndcg@20"],
        "complete": True,
    }


def result_file(model: str, dataset: str) -> Path:
    return RESULTS / f"{dataset}-{model}.json"


def run_one(model: str, dataset: str, timeout: float) -> Dict[str, Any]:
    """The run in a worker process; a run past ``timeout`` is recorded as a lower bound."""
    path = result_file(model, dataset)
    if path.is_file():
        cached = json.loads(path.read_text())
        # A run cut short is measured again when given longer than it had.
        if cached["complete"] or cached["timeout"] >= timeout:
            return cached
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.with_suffix(".log")
    command = [sys.executable, "-m", "benchmarks.bench_compute_plan", "--one"]
    command += [json.dumps([model, dataset])]
    start = time.perf_counter()
    try:
        with open(log, "w") as err:
            proc = subprocess.run(
                command, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, timeout=timeout
            )
    except subprocess.TimeoutExpired:
        result = {
            "model": model,
            "dataset": dataset,
            "complete": False,
            "total_seconds": time.perf_counter() - start,
            "timeout": timeout,
        }
    else:
        if proc.returncode != 0:
            raise SystemExit(f"{model} on {dataset} failed; see {log}")
        result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    write_atomically(path, result)
    return result


# ---------------------------------------------------------------------------- projection
def per_epoch(run: Dict[str, Any], eval_step: int) -> float:
    """Seconds per training epoch with its share of the validations."""
    epochs, valid = run["epoch_seconds"], run["validation_seconds"]
    return sum(epochs) / len(epochs) + sum(valid) / len(valid) / max(1, eval_step)


def run_cost(run: Dict[str, Any], epochs: float, eval_step: int) -> float:
    """A run of ``epochs`` epochs: start, training with its validations, the test."""
    return (
        run["start_seconds"] + run["test_seconds"] + epochs * per_epoch(run, eval_step)
    )


def measured_wall(model: str, dataset: str = SEARCHED_ON) -> Optional[Dict[str, float]]:
    """A model's measured search seconds on ``dataset`` (while its trials ran, over
    every session; for a search recorded before that was measured, the wall time of the
    process that finished it), its six runs' (five seeds' time to result and the rerun
    counted as one more seed), the trials' mean epochs and the seeds done."""
    search, seeds = search_result(model, dataset), seed_results(model, dataset)
    if search is None or not seeds:
        return None
    runs = sum(s["time_to_result"] for s in seeds) * (len(seeds) + 1) / len(seeds)
    epochs = [t.get("epochs run") or 1 for t in search["trials"]]
    seconds, exact = search_time(search)  # not exact: a lower bound
    return {
        "search": seconds,
        "runs": runs,
        "trial_epochs": sum(epochs) / len(epochs),
        "seeds": len(seeds),
        "exact": exact,
    }


def ratio(
    model: str, here: Dict[str, Any], there: Dict[str, Any], eval_step: int
) -> Optional[float]:
    """How much longer a mean trial of ``model`` takes on ``there``'s dataset than on
    ``here``'s (ml-1m_clean), from the two short runs; None without both."""
    wall = measured_wall(model)
    if wall is None or not (here.get("complete") and there.get("complete")):
        return None
    epochs = wall["trial_epochs"]
    return run_cost(there, epochs, eval_step) / run_cost(here, epochs, eval_step)


# ---------------------------------------------------------------------------- report
def hours(seconds: Optional[float], exact: bool = True) -> str:
    """Hours to one decimal; "≥" marks a lower bound."""
    if seconds is None:
        return "-"
    return f"{'' if exact else '≥ '}{seconds / 3600:.1f}"


def load(model: str, dataset: str) -> Optional[Dict[str, Any]]:
    path = result_file(model, dataset)
    return json.loads(path.read_text()) if path.is_file() else None


def render(
    models: List[str], datasets: List[str], eval_step: int, seeds: int = 5
) -> str:
    others = [d for d in datasets if d != SEARCHED_ON]
    lines = [
        "# Compute plan: what the tuned head-to-head costs here",
        "",
        "Measured by `python -m benchmarks.bench_compute_plan` on this machine "
        "(2 cores; one torch thread per run, as a Tune trial with `cpus_per_trial: 1`). "
        "Each model: one short run per dataset (2 training epochs, a validation after "
        "each, the test evaluation; a training-free model's epoch is its fit) with the "
        f"setting {SEARCHED_ON}'s search chose, in a fresh process. The projection scales "
        f"what {SEARCHED_ON}'s tuned table really took (search wall time, plus five seeds "
        "and the best.yaml rerun) by the ratio of a mean trial's cost on the two datasets "
        "(start + test evaluation + the mean trial's epochs x (epoch + validation / "
        f"{eval_step})). It assumes the trials run as many epochs as on {SEARCHED_ON}; "
        "bigger data often needs fewer, so read it as an order of magnitude. Where a "
        f"model's search and its {seeds} seeds are done on a dataset, *measured h* gives "
        'what they really took, to check the projection against. "≥": a search '
        "recorded before search times were measured over every session it ran in; "
        "what is known is the wall time of the process that finished it.",
        "",
    ]
    header = ["model"]
    for d in datasets:
        header += [f"{d}: s/epoch", "s/valid", "start s", "peak MB"]
    header += [f"{SEARCHED_ON} measured h"]
    for d in others:
        header += [f"{d}: ratio, projected h", "measured h"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    totals: Dict[str, float] = {}
    missing: Dict[str, List[str]] = {}
    # Per dataset: the models done there, their measured seconds (exact or a lower
    # bound) and projected seconds.
    done: Dict[str, List[Tuple[str, float, bool, float]]] = {}
    searched_exact = True  # every measured SEARCHED_ON figure is exact
    for model in models:
        row = [model]
        for d in datasets:
            run = load(model, d)
            if run is None:
                row += ["pending", "", "", ""]
            elif not run["complete"]:
                row += [f"> {run['total_seconds']:.0f} s in all (cut)", "", "", ""]
            else:
                epochs, valid = run["epoch_seconds"], run["validation_seconds"]
                row += [
                    f"{sum(epochs) / len(epochs):.1f}",
                    f"{sum(valid) / len(valid):.1f}",
                    f"{run['start_seconds']:.0f}",
                    f"{run['peak_rss_mb']:.0f}",
                ]
        wall = measured_wall(model)
        total = None if wall is None else wall["search"] + wall["runs"]
        row.append(hours(total, wall is None or wall["exact"]))
        if total is None:
            missing.setdefault(SEARCHED_ON, []).append(model)
        else:
            totals[SEARCHED_ON] = totals.get(SEARCHED_ON, 0.0) + total
            searched_exact = searched_exact and wall["exact"]
        here = load(model, SEARCHED_ON) or {}
        for d in others:
            factor = ratio(model, here, load(model, d) or {}, eval_step)
            there = measured_wall(model, d)
            real, exact = None, True
            if there is not None and there["seeds"] >= seeds:
                real, exact = there["search"] + there["runs"], there["exact"]
            if factor is None or total is None:
                row += ["-", hours(real, exact)]
                missing.setdefault(d, []).append(model)
                continue
            row += [f"{factor:.1f}x, {hours(total * factor)}", hours(real, exact)]
            totals[d] = totals.get(d, 0.0) + total * factor
            if real is not None:
                done.setdefault(d, []).append((model, real, exact, total * factor))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for d in datasets:
        kind = "projected"
        if d == SEARCHED_ON:
            kind = "measured" + ("" if searched_exact else " ≥")
        left = missing.get(d, [])
        note = (
            f", without {', '.join(left)} (not measured yet or cut short)"
            if left
            else ""
        )
        finished = done.get(d, [])
        if finished:
            real = sum(r for _, r, _, _ in finished)
            exact = all(e for _, _, e, _ in finished)
            guess = sum(g for _, _, _, g in finished)
            note += (
                f"; done so far: {', '.join(m for m, _, _, _ in finished)}, measured "
                f"{hours(real, exact)} wall hours against {hours(guess)} "
                "projected for them"
            )
        lines.append(
            f"- **{d}**: {kind} {hours(totals.get(d, 0.0))} wall hours on this machine "
            f"({2 * totals.get(d, 0.0) / 3600:.0f} CPU-hours){note}."
        )
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    spec = suite_spec()
    parser.add_argument("--datasets", nargs="*", default=list(spec["datasets"]))
    parser.add_argument("--models", nargs="*", default=list(spec["models"]))
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds per run (default 900)"
    )
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        model, dataset = json.loads(args.one)
        print(json.dumps(measure(model, dataset)))
        return
    datasets = [SEARCHED_ON] + [d for d in args.datasets if d != SEARCHED_ON]
    if not args.report_only:
        for dataset in datasets:
            for model in args.models:
                result = run_one(model, dataset, args.timeout)
                print(
                    f"{dataset} {model}: "
                    + (
                        f"{sum(result['epoch_seconds']) / len(result['epoch_seconds']):.1f} s/epoch"
                        if result["complete"]
                        else f"cut at {result['total_seconds']:.0f} s"
                    ),
                    flush=True,
                )
    import yaml

    eval_step = int(
        yaml.safe_load((ROOT / spec["datasets"][SEARCHED_ON]).read_text()).get(
            "eval_step", 1
        )
    )
    REPORT.write_text(render(args.models, datasets, eval_step, len(spec["seeds"])))
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
