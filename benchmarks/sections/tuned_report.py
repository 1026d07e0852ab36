"""The tuned head-to-head's report (benchmarks/sections/tuned.py runs it): one table per
dataset with 95% confidence intervals over the seeds, paired tests over users against the
best model of the other family (Holm-corrected across every comparison shown), and a
verdict line per dataset that names the winning family only when the difference is
significant.

Report code only: not part of any result's code hash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..report import save_figure
from ..runner import ROOT, Runner
from ..space_edits import parsed
from ..stats import align_users, holm, mean_ci, paired_pvalue
from .accuracy import METRICS
from .tuned_folders import (
    search_snapshots,
    search_time,
    snapshot_finished_trials,
    trials_done,
    tune_folders,
)

ALPHA = 0.05  # significance level of the verdicts (after Holm's correction)


def users_file(path: Path) -> Path:
    """The per-user scores saved beside a seed run's JSON result."""
    return path.with_suffix(".users.npz")


# ---------------------------------------------------------------------------- revalidation
# What a seed run must reproduce exactly for its model's results to be carried forward.
COMPARED = ("test", "valid", "epochs", "parameters")


def witnesses(
    listed: Dict[str, Any],
) -> List[Tuple[Dict[str, Any], List[Dict[str, Any]]]]:
    """Per dataset and model: its first seed run vouches for its search, other seeds and
    rerun (``python -m benchmarks.suite --revalidate``). The search itself is never rerun:
    the seed run trains the search's chosen setting through the same model and trainer
    code, so an identical seed run after a code change is the evidence that the change
    left this model's numbers alone."""
    groups = []
    for key, seed_jobs in listed["seeds"].items():
        vouched = [listed["searches"][key], *seed_jobs[1:], listed["reruns"][key]]
        groups.append((seed_jobs[0], vouched))
    return groups


# What a search carried forward on its own record is checked against (see below).
BEST_TRIAL_RECORD = "its search's best-trial record"


def recorded_witnesses(
    runner: Runner, listed: Dict[str, Any]
) -> List[Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any], str]]:
    """Per dataset and model whose search is stale with no seed run of the search's
    code left to vouch for it (its seeds all ran after the code change): the rerun of
    its best.yaml, the best trial's exact setting, must reproduce the best trial's
    recorded test metrics and best validation score (4 decimals, as RecBole rounds
    them). Weaker than a seed witness (no per-user scores, no epochs), but the rerun
    has matched its trial exactly for every model so far; without it such a search
    could only be redone."""
    found = []
    for key, search in listed["searches"].items():
        if key not in listed["reruns"] or not runner.stale(search):
            continue
        stored = runner.versions(search)[0]
        result = json.loads(stored.read_text())
        old_code = runner.stored_code(stored)
        if any(
            runner.stored_code(path) == old_code
            for job in listed["seeds"][key]
            for path in runner.versions(job)
        ):
            continue  # a seed of the search's code: witnesses() checks that group
        trial = next(t for t in result["trials"] if t["trial"] == result["best_trial"])
        valid = {
            k[len("best valid ") :]: v
            for k, v in trial.items()
            if k.startswith("best valid ")
        }
        expected = {"test": result["best_trial_test"], "valid": valid}
        found.append((listed["reruns"][key], search, expected, BEST_TRIAL_RECORD))
    return found


def awaiting_record_line(runner: Runner, listed: Dict[str, Any]) -> str:
    """Names the stale searches that only a record check can carry forward (see
    :func:`recorded_witnesses`), with the command that checks them."""
    names = sorted(w["name"] for w, *_ in recorded_witnesses(runner, listed))
    if not names:
        return ""
    return (
        f"\nNo seed of their search's code exists for {', '.join(names)}: "
        "`python -m benchmarks.suite --revalidate --sections tuned` reruns best.yaml "
        "with this code and keeps the search if it gives the best trial's recorded "
        "test metrics and validation score (a rerun longer than a session resumes in "
        "the next if it gets the same machine, from the training state there; on a new "
        "machine it starts over); only if it does not must the search be redone.\n"
    )


def differ(old: Path, new: Path) -> Optional[str]:
    """None when the two seed runs are identical (every compared field and every user's
    score, exactly), else what differs first."""
    before, after = json.loads(old.read_text()), json.loads(new.read_text())
    for field in COMPARED:
        if before.get(field) != after.get(field):
            return f"{field}: {before.get(field)} -> {after.get(field)}"
    a, b = np.load(users_file(old)), np.load(users_file(new))
    for field in ("users", "scores"):
        if not np.array_equal(a[field], b[field]):
            return f"per-user {field} differ"
    return None


def carried_line(runner: Runner, jobs: List[Dict[str, Any]]) -> str:
    """Says which shown results were carried forward by ``--revalidate``, and against
    what their witness was checked."""
    checks: Dict[str, Dict[str, Any]] = {}
    by_record: Dict[str, Dict[str, Any]] = {}
    for job in jobs:
        if runner.cached(job) and not runner.stale(job):
            for record in runner.read(job).get("revalidated", [])[-1:]:
                kept = by_record if "by_record" in record else checks
                kept.setdefault(job["name"], record)
    if not checks and not by_record:
        return ""
    olds = ", ".join(
        sorted({r["from_code"] for r in [*checks.values(), *by_record.values()]})
    )
    text = f"\nCarried forward from older code ({olds}) by `--revalidate`."
    stored = sorted(
        n for n, r in checks.items() if "on this machine" not in r.get("against", "")
    )
    here = sorted(n for n in checks if n not in stored)
    if checks:
        text += (
            " For each model below, a rerun of its first seed with this checkout's code "
            "gave identical metrics, epochs and per-user scores to the reference named, "
            "so its search, other seeds and rerun were kept."
        )
    if stored:
        text += f" Against the stored result: {', '.join(stored)}."
    if here:
        text += (
            " Against the old code rerun on this machine, because the stored witness "
            "result, computed in another session, differed from this code's rerun: "
            + "; ".join(
                n
                + (
                    f" ({checks[n]['stored_result_differed']})"
                    if "stored_result_differed" in checks[n]
                    else ""
                )
                for n in here
            )
            + "."
        )
    if by_record:
        text += (
            " Searches kept on their own record, since every seed of theirs ran with "
            "newer code and nothing of the search's code was left to compare: the "
            "rerun of best.yaml with this checkout's code gave the best trial's "
            "recorded test metrics and best validation score exactly (a weaker check: "
            f"no per-user scores): {', '.join(sorted(by_record))}."
        )
    return text + "\n"


def space_edits_line(runner: Runner, listed: Dict[str, Any]) -> str:
    """Says which shown searches were kept through an edit of their space file that
    changed nothing they use (``python -m benchmarks.space_edits``)."""
    names = sorted(
        search["name"]
        for search in listed["searches"].values()
        if runner.cached(search) and runner.read(search).get("space_edits")
    )
    if not names:
        return ""
    return (
        "\nKept through an edit of their space file's comments or layout (the file parses "
        "to the same space, in the same order, and the same tune options as the text "
        "they ran with; `python -m benchmarks.space_edits`), under the new text's key: "
        f"{', '.join(names)}.\n"
    )


def progress(runner: Runner, listed: Dict[str, Any], key: Tuple[str, str]) -> str:
    """How far a pending model has got, as text to put after its name: its seeds done
    once its search is, or the trials done of a search under way in this machine's Tune
    folder (of any code version). Elsewhere (the Tune folders are not committed), the
    trials finished in the search's committed snapshot."""
    search = listed["searches"].get(key)
    if search is None:
        return ""
    if runner.cached(search):
        seeds = listed["seeds"].get(key, [])
        done = sum(runner.cached(j) for j in seeds)
        return f" (search done; seeds: {done} of {len(seeds)} done)"
    folders = tune_folders(runner, search)
    if folders:
        done = trials_done(list(folders.values())[-1])
        return f" (search: {done} of {search['trials']} trials done)"
    snapshots = search_snapshots(runner, search)
    if snapshots:
        done = len(snapshot_finished_trials(list(snapshots.values())[-1]))
        return f" (search: {done} of {search['trials']} trials done, as its snapshot has it)"
    return ""


def per_user_mean(
    runner: Runner, seed_jobs: List[Dict[str, Any]]
) -> Tuple[np.ndarray, np.ndarray]:
    """(users, the per-user metric averaged over the seeds), users sorted."""
    users, columns = None, []
    for job in seed_jobs:
        saved = np.load(users_file(runner.versions(job)[0]))
        order = np.argsort(saved["users"])
        if users is None:
            users = saved["users"][order]
        elif not np.array_equal(users, saved["users"][order]):
            raise ValueError(f"{job['name']}: the seeds evaluated different users")
        columns.append(saved["scores"][order])
    return users, np.mean(columns, axis=0)


def collect(runner: Runner, listed: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per dataset, per model with every seed done: its search, seed results and rerun."""
    out: Dict[str, Dict[str, Any]] = {}
    for key, seed_jobs in listed["seeds"].items():
        if not all(runner.cached(j) for j in seed_jobs):
            continue
        dataset, model = key
        results = [runner.read(j) for j in seed_jobs]
        rerun = listed["reruns"][key]
        out.setdefault(dataset, {})[model] = {
            "search": runner.read(listed["searches"][key]),
            "results": results,
            "seed_jobs": seed_jobs,
            "rerun": runner.read(rerun) if runner.cached(rerun) else None,
            "per_user": per_user_mean(runner, seed_jobs),
        }
    return out


def family_best(rows: Dict[str, Any], members: List[str], metric: str) -> Optional[str]:
    """The family's model with the best mean *validation* score (never chosen on test)."""
    found = [m for m in rows if m in members]
    if not found:
        return None
    return max(
        found, key=lambda m: np.mean([r["valid"][metric] for r in rows[m]["results"]])
    )


def comparisons(
    collected: Dict[str, Dict[str, Any]],
    diffusion: List[str],
    valid_metric: str,
    test: str,
):
    """Raw p-values of each model against the best model of the other family, per dataset,
    and the two family bests; Holm-adjusted over all of them together."""
    raw: Dict[Tuple[str, str], float] = {}
    bests: Dict[str, Tuple[Optional[str], Optional[str]]] = {}
    for dataset, rows in collected.items():
        others = [m for m in rows if m not in diffusion]
        best_diff = family_best(rows, diffusion, valid_metric)
        best_other = family_best(rows, others, valid_metric)
        bests[dataset] = (best_diff, best_other)
        if best_diff is None or best_other is None:
            continue
        for model in rows:
            rival = best_other if model in diffusion else best_diff
            a = rows[model]["per_user"]
            b = rows[rival]["per_user"]
            raw[(dataset, model)] = paired_pvalue(
                *align_users(a[0], a[1], b[0], b[1]), test=test
            )
    adjusted = holm({f"{d}\0{m}": p for (d, m), p in raw.items()})
    return {k: adjusted[f"{k[0]}\0{k[1]}"] for k in raw}, bests


def cell(values: List[float]) -> str:
    mean, half = mean_ci(values)
    return f"{mean:.4f} ± {half:.4f}"


def p_cell(p: Optional[float]) -> str:
    if p is None:
        return "–"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


# A continuous setting drawn within this share of its range (of its log range for a
# loguniform one) of a bound counts as chosen at the range's edge.
EDGE_SHARE = 0.05


def at_edge(space_text: str, settings: Dict[str, Any]) -> List[str]:
    """The settings a search chose at an edge of the space it ran with (``space_text``):
    the lowest or highest of three or more numeric values (a choice, or a quniform's
    steps), or a continuous draw within ``EDGE_SHARE`` of a bound (but for a uniform
    range's bound at 0, past which there is nothing to try). A skeptic's question: would a
    wider range have done better?"""
    space, _ = parsed(space_text)
    edges = []
    for key, (dist, args) in space:
        value = settings.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if dist in ("choice", "grid"):
            numbers = [a for a in args if isinstance(a, (int, float))]
            if len(numbers) >= 3 and value in (min(numbers), max(numbers)):
                edges.append(key)
        elif dist == "quniform":
            low, high, step = args
            if (high - low) / step >= 2 and min(value - low, high - value) < step / 2:
                edges.append(key)
        elif dist in ("uniform", "loguniform"):
            low, high = args
            # A uniform range from 0 ends where its term is off: nothing lies below.
            floor = dist == "uniform" and low == 0
            if dist == "loguniform":
                value, low, high = np.log(value), np.log(low), np.log(high)
            share = (value - low) / (high - low)
            if 1 - share < EDGE_SHARE or (share < EDGE_SHARE and not floor):
                edges.append(key)
    return edges


def setting_text(settings: Dict[str, Any], edges: Sequence[str] = ()) -> str:
    """The chosen setting, ``†`` after each value at an edge of its range."""

    def short(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return ", ".join(
        f"{k}={short(v)}" + ("†" if k in edges else "")
        for k, v in sorted(settings.items())
    )


def trials_text(trials: List[Dict[str, Any]]) -> str:
    """How many trials the search ran, and how many of them drew a combination the model
    refuses (noise_min >= noise_max, say): those count against the budget unscored."""
    invalid = sum(str(t.get("status", "")).startswith("invalid") for t in trials)
    return f"{len(trials)} ({invalid} invalid)" if invalid else str(len(trials))


def rerun_text(entry: Dict[str, Any]) -> str:
    """Whether best.yaml reran to the chosen trial's test numbers (4th decimal)."""
    rerun, trial = entry["rerun"], entry["search"]["best_trial_test"]
    if rerun is None:
        return "pending"
    shared = [m for m in METRICS if m in trial and m in rerun["test"]]
    if not shared:
        return "no trial test"
    worst = max(abs(rerun["test"][m] - trial[m]) for m in shared)
    return "yes" if worst < 5e-5 else f"no (max diff {worst:.4f})"


def search_time_text(search: Dict[str, Any]) -> str:
    """The search's time (:func:`tuned_folders.search_time`), "≥" on a lower bound."""
    seconds, whole = search_time(search)
    return f"{'' if whole else '≥ '}{seconds:.0f}"


def table(
    dataset: str, rows: Dict[str, Any], diffusion: List[str], adjusted, bests
) -> List[str]:
    winners = {
        m: max(rows, key=lambda n: np.mean([r["test"][m] for r in rows[n]["results"]]))
        for m in METRICS
    }
    lines = [
        "| model | family | tuned setting | trials | seeds | "
        + " | ".join(f"test {m}" for m in METRICS)
        + " | p vs other family's best (Holm) | s / epoch | time to result (s) | search time (s) | best.yaml reruns |",
        "|---|---|---|---|---|" + "---|" * len(METRICS) + "---|---|---|---|---|",
    ]
    order = sorted(
        rows, key=lambda n: -np.mean([r["test"]["ndcg@20"] for r in rows[n]["results"]])
    )
    for name in order:
        entry = rows[name]
        results = entry["results"]
        cells = []
        for m in METRICS:
            text = cell([r["test"][m] for r in results])
            cells.append(f"**{text}**" if winners[m] == name else text)
        family = "diffusion" if name in diffusion else "other"
        label = name + (" *(family best)*" if name in bests else "")
        search = entry["search"]
        edges = at_edge(search["job"]["space"], search["best_settings"])
        chosen = setting_text(search["best_settings"], edges)
        lines.append(
            f"| {label} | {family} | {chosen} | "
            f"{trials_text(entry['search']['trials'])} | {len(results)} | "
            + " | ".join(cells)
            + f" | {p_cell(adjusted.get((dataset, name)))} | "
            f"{np.mean([r['epoch_seconds'] for r in results]):.2f} | "
            f"{np.mean([r['time_to_result'] for r in results]):.0f} | "
            f"{search_time_text(entry['search'])} | {rerun_text(entry)} |"
        )
    return lines


def verdict(dataset: str, rows: Dict[str, Any], adjusted, best_diff, best_other) -> str:
    if best_diff is None or best_other is None:
        missing = "diffusion models" if best_diff is None else "non-diffusion models"
        return f"No verdict on {dataset} yet: no {missing} have all their seeds done."

    def ndcg(m: str) -> float:
        return float(np.mean([r["test"]["ndcg@20"] for r in rows[m]["results"]]))

    gap = ndcg(best_diff) - ndcg(best_other)
    p = adjusted[(dataset, best_diff)]
    leader, trailer = (best_diff, best_other) if gap >= 0 else (best_other, best_diff)
    family = "diffusion" if gap >= 0 else "non-diffusion"
    if p < ALPHA:
        return (
            f"**Verdict on {dataset}: the {family} family wins.** {leader} beats {trailer} "
            f"on test NDCG@20 by {abs(gap):.4f} (paired test over users, Holm-adjusted "
            f"p = {p_cell(p)})."
        )
    return (
        f"**Verdict on {dataset}: no significant difference.** {leader} is ahead of "
        f"{trailer} on test NDCG@20 by {abs(gap):.4f}, but the paired test over users "
        f"gives Holm-adjusted p = {p_cell(p)} (≥ {ALPHA}): neither family wins."
    )


def figure(
    collected: Dict[str, Dict[str, Any]], diffusion: List[str], path: Path
) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(collected), figsize=(5 * len(collected), 4), squeeze=False
    )
    for ax, (dataset, rows) in zip(axes[0], collected.items()):
        names = sorted(
            rows,
            key=lambda n: np.mean([r["test"]["ndcg@20"] for r in rows[n]["results"]]),
        )
        stats = [
            mean_ci([r["test"]["ndcg@20"] for r in rows[n]["results"]]) for n in names
        ]
        colors = ["tab:red" if n in diffusion else "tab:blue" for n in names]
        ax.barh(
            names,
            [s[0] for s in stats],
            xerr=[s[1] for s in stats],
            color=colors,
            capsize=2,
        )
        ax.set_title(dataset)
        ax.set_xlabel("test NDCG@20 (mean, 95% CI)")
    save_figure(fig, path)


def render(runner: Runner, listed: Dict[str, Any], figures: Path) -> str:
    tuned = runner.spec["tuned"]
    diffusion = list(tuned["diffusion"])
    everything = (
        list(listed["searches"].values())
        + [j for js in listed["seeds"].values() for j in js]
        + list(listed["reruns"].values())
    )
    collected = collect(runner, listed)
    adjusted, bests = comparisons(
        collected, diffusion, "recall@20", tuned["paired_test"]
    )
    parts = [
        "## Tuned head-to-head: equal tuning budgets, five seeds, paired tests\n\n",
        f"Every model gets the same budget: {tuned['trials']} trials of the plugin's Ray Tune "
        f"search (random draws from `properties/hyper/<model>.yaml`; scheduler "
        f"{tuned['tune']['scheduler']}, grace period {tuned['tune']['grace_period']} "
        f"evaluations, reduction factor {tuned['tune']['reduction_factor']}, draws seeded "
        f"{tuned['tune']['search_seed']}), chosen on validation Recall@20 only; the chosen "
        f"setting then runs with seeds {tuned['seeds']}. Cells: mean ± half width of the "
        "95% Student-t confidence interval over the seeds. *p*: paired "
        f"{'Wilcoxon signed-rank' if tuned['paired_test'] == 'wilcoxon' else 't'} test over "
        "users of per-user test NDCG@20 (averaged over the seeds) against the best model "
        "of the other family, Holm-corrected across every p-value in these tables. Family "
        "bests are chosen by mean validation Recall@20, never by test. Diffusion family: "
        f"{', '.join(diffusion)}; everything else (BSPM included) is the other family. "
        "*trials*: draws run, with those that drew a combination the model refuses "
        "(noise_min ≥ noise_max), which use up a draw unscored. "
        "*†*: chosen at an edge of its range (the lowest or highest of three or more "
        f"values, or within {EDGE_SHARE:.0%} of a continuous range's bound other than 0): "
        "a wider range might choose differently. "
        "*best.yaml reruns*: the search's best.yaml, run as it is, gives the chosen "
        "trial's test numbers to the 4th decimal. *s / epoch*: for a training-free model, "
        "its one pass (fits in EASE and ItemKNN, none in the graph filters, which filter when "
        "built); *time to result*: one seed's run, start to test metrics; *search time*: "
        "the seconds during which at least one of its trials was running (two at a "
        'time), summed over every session that worked on it; "≥ N": a search finished '
        "before that was recorded, N being the wall time of the process that finished "
        "it, all of it only if the search was never interrupted. Settings: "
        f"`{(ROOT / 'properties/experiment/tuned_suite.yaml').relative_to(ROOT)}`.\n",
    ]
    for dataset in tuned["datasets"]:
        rows = collected.get(dataset, {})
        missing = [m for m in tuned["models"] if m not in rows]
        parts.append(f"\n### {dataset}\n")
        if rows:
            best_diff, best_other = bests[dataset]
            shown = {best_diff, best_other} - {None}
            parts.append(
                "\n".join(table(dataset, rows, diffusion, adjusted, shown)) + "\n"
            )
            text = verdict(dataset, rows, adjusted, best_diff, best_other)
            if missing:  # a verdict among the models done so far, and it says so
                text += (
                    f" *Provisional: {len(rows)} of {len(tuned['models'])} models done; "
                    "the pending ones may change it.*"
                )
            parts.append("\n" + text + "\n")
        if missing:
            named = [m + progress(runner, listed, (dataset, m)) for m in missing]
            parts.append(
                f"\nPending on {dataset}: {', '.join(named)} "
                "(`python -m benchmarks.suite --sections tuned` runs them, "
                f"`... --only {dataset}-MODEL` one of them; what they cost on this CPU: "
                "[compute_plan.md](compute_plan.md)).\n"
            )
    if collected:
        figure(collected, diffusion, figures / "tuned.png")
        parts.append("\n![tuned](figures/tuned.png)\n")
    parts.append(carried_line(runner, everything))
    parts.append(space_edits_line(runner, listed))
    parts.append(runner.stale_line(everything))
    parts.append(awaiting_record_line(runner, listed))
    return "".join(parts)
