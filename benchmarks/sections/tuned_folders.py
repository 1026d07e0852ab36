"""The tuned head-to-head's Tune folders (``benchmarks/results/tuned/tune/``, not
committed): how far a search has got, finding a search older code started so that it is
finished rather than started over (``Runner.finish_older``), moving its recorded paths
between checkouts, and how long its trials ran over every session.

Bookkeeping only: not part of any result's code hash.
"""

from __future__ import annotations

import glob
import math
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..runner import ROOT, Runner, Unfinished, cache_key, job_digest


def tune_folders(runner: Runner, search: Dict[str, Any]) -> Dict[str, Path]:
    """The Tune folders of ``search`` on this machine, by the code version their name ends
    with (``<name>-<job digest>-<code>`` under ``<results>/tuned/tune``, as
    ``tuned.search_worker`` names them), oldest first."""
    stem = f"{search['name']}-{job_digest(search)}-"
    folders = sorted(
        (runner.results_dir / "tuned" / "tune").glob(glob.escape(stem) + "*"),
        key=lambda p: p.stat().st_mtime,
    )
    return {p.name[len(stem) :]: p for p in folders if p.is_dir()}


def trials_done(folder: Path) -> int:
    """Trials of a Tune folder that ended (finished, stopped or failed), from its newest
    experiment state."""
    from recbole_diffrec.compat import experiment_state_trials, latest_experiment_state

    trials = experiment_state_trials(latest_experiment_state(folder))
    return sum(t.get("status") in ("TERMINATED", "ERROR") for t in trials)


def unfinished(runner: Runner, job: Dict[str, Any]) -> Optional[Unfinished]:
    """For a search not done yet with this checkout's code: an interrupted search of
    the same job, started by older code, that has trials done; the suite finishes it
    with that code instead of starting it over (``Runner.finish_older``), and
    ``--revalidate`` then carries it forward once its first seed run shows the two codes
    agree. None when there is none, or when this code's own search of the job has
    started (it resumes itself). To start over instead, delete the old Tune folder."""
    if job.get("phase") != "search":
        return None
    folders = tune_folders(runner, job)
    if runner.code_version(job) in folders:
        return None
    for code, folder in reversed(folders.items()):
        if trials_done(folder):
            result = runner.results_dir / "tuned" / f"{cache_key(job, code)}.json"
            return Unfinished(code, partial(move_search, folder, result))
    return None


def search_active_seconds(folder: Path) -> Optional[float]:
    """Seconds during which at least one trial of the Tune folder ``folder`` was
    running, over every session that worked on it: each start of a trial (a line of its
    ``starts.log``, written by ``recbole_diffrec.tune.trial``) runs to its last report
    (``timestamp`` in Ray's ``result.json``) before its next start, and these spans are
    merged across trials. Unlike one process's wall clock it counts a search resumed
    after an interruption in full, and leaves out the gaps between sessions; what it
    misses is Ray's start-up, a trial's work after its last report in a session that
    was killed, and the chosen trial's test evaluation when the scheduler stopped it.
    None when no trial has reported."""
    import json

    spans: List[Tuple[float, float]] = []
    for starts_file in folder.glob("*/starts.log"):
        results_file = starts_file.parent / "result.json"
        if not results_file.is_file():
            continue
        starts = sorted(float(v) for v in starts_file.read_text().split())
        reports = sorted(
            float(json.loads(line)["timestamp"])
            for line in results_file.read_text().splitlines()
            if line.strip()
        )
        for i, start in enumerate(starts):
            until = starts[i + 1] if i + 1 < len(starts) else float("inf")
            # Ray's timestamp is whole seconds: a report in a start's own second counts.
            inside = [t for t in reports if math.floor(start) <= t < until]
            if inside:
                spans.append((start, max(max(inside), start)))
    if not spans:
        return None
    spans.sort()
    total, (begin, end) = 0.0, spans[0]
    for lo, hi in spans[1:]:
        if lo > end:
            total, begin, end = total + end - begin, lo, hi
        else:
            end = max(end, hi)
    return total + end - begin


def record_search_time(result: Dict[str, Any], folder: Path) -> None:
    """Put :func:`search_active_seconds` of the Tune folder ``folder`` in a search's
    ``result``, when some trial has reported."""
    active = search_active_seconds(folder)
    if active is not None:
        result["search_active_seconds"] = active


def search_time(search: Dict[str, Any]) -> Tuple[float, bool]:
    """A search result's time in seconds, and whether it is all of it: the time its
    trials ran over every session, or for a result recorded before that was measured,
    the wall time of the process that finished it (a lower bound)."""
    active = search.get("search_active_seconds")
    if active is not None:
        return active, True
    return search["search_seconds"], False


def annotate(runner: Runner, job: Dict[str, Any], result: Dict[str, Any]) -> None:
    """Bookkeeping added to a search's result once it is done (``Section.annotate``):
    its search time (:func:`record_search_time`)."""
    if job.get("phase") == "search" and result.get("exp_dir"):
        record_search_time(result, ROOT / result["exp_dir"])


def move_search(folder: Path, result: Path, checkout: Path) -> None:
    """Point the paths a search recorded at ``checkout``, another checkout of the code
    that ran it: a worktree to resume it from, or this checkout once it is done there.

    A resume refuses a search whose manifest (``search.json`` in its Tune folder
    ``folder``) names other config files or settings than its own command, and the
    manifest names files by their absolute paths in the checkout that started it; the
    search's ``best.yaml`` and its result (``result``, once written) name its dataset
    the same way. Those paths are renamed to the same files under ``checkout`` (the
    worktree's ``dataset/`` is this checkout's), and the move is recorded under
    ``moved`` in the manifest and the result."""
    import json
    import os

    from recbole_diffrec.utils import write_text_atomically

    path = folder / "search.json"
    manifest = json.loads(path.read_text())
    dataset_yaml = Path(manifest["config_files"][0])
    # The suite's dataset yaml is <checkout>/properties/dataset/<name>.yaml.
    if dataset_yaml.parent.parts[-2:] != ("properties", "dataset"):
        raise RuntimeError(f"{path}: {dataset_yaml} is not a checkout's dataset yaml")
    before = str(dataset_yaml.parents[2])
    if before == str(checkout):
        return
    move = {"from": before, "to": str(checkout)}

    def moved(value: Any) -> Any:
        if isinstance(value, str) and (value + "/").startswith(before + "/"):
            return str(checkout) + value[len(before) :]
        return value

    def moved_text(text: str) -> str:
        return text.replace(before + "/", f"{checkout}/")

    manifest["config_files"] = [moved(v) for v in manifest["config_files"]]
    manifest["fixed"] = {k: moved(v) for k, v in manifest["fixed"].items()}
    manifest["moved"] = [*manifest.get("moved", []), move]
    write_text_atomically(path, json.dumps(manifest, indent=1))
    best = folder / "best.yaml"
    if best.is_file():
        write_text_atomically(best, moved_text(best.read_text()))
    if result.is_file():
        found = json.loads(result.read_text())
        found["best_yaml"] = moved_text(found["best_yaml"])
        found["exp_dir"] = os.path.relpath(folder, checkout)
        found["moved"] = [*found.get("moved", []), move]
        record_search_time(found, folder)  # the older code may not have
        write_text_atomically(result, json.dumps(found, indent=1))
