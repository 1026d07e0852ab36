"""The tuned head-to-head's Tune folders (``benchmarks/results/tuned/tune/``, not
committed): how far a search has got, finding a search older code started so that it is
finished rather than started over (``Runner.finish_older``), moving its recorded paths
between checkouts, how long its trials ran over every session, and the snapshots that
let a search survive the loss of its machine (``snapshots/``, committed).

Bookkeeping only: not part of any result's code hash.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import tarfile
import tempfile
import threading
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..runner import ROOT, Runner, Unfinished, cache_key, job_digest


def _by_code(folder: Path, search: Dict[str, Any], suffix: str = "") -> Dict[str, Path]:
    """The entries ``<name>-<job digest>-<code><suffix>`` of ``search`` in ``folder``, by
    code version, oldest first."""
    stem = f"{search['name']}-{job_digest(search)}-"
    found = sorted(
        folder.glob(glob.escape(stem) + "*" + suffix), key=lambda p: p.stat().st_mtime
    )
    return {p.name[len(stem) : len(p.name) - len(suffix)]: p for p in found}


def tune_folders(runner: Runner, search: Dict[str, Any]) -> Dict[str, Path]:
    """The Tune folders of ``search`` on this machine, by the code version their name ends
    with (``<name>-<job digest>-<code>`` under ``<results>/tuned/tune``, as
    ``tuned.search_worker`` names them), oldest first."""
    found = _by_code(runner.results_dir / "tuned" / "tune", search)
    return {code: p for code, p in found.items() if p.is_dir()}


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


# -------------------------------------------------------------------------- snapshots
# A Tune folder is not committed (trials' checkpoints: hundreds of MB on Amazon), so a
# machine lost mid-search took every trial the search had finished with it. A snapshot
# keeps what resuming needs in order to skip them: the experiment's own files and each
# finished trial's folder without its checkpoints (kilobytes). Trials that had not
# finished are left out, folder and all: a resume from the snapshot runs them afresh,
# with nothing from their lost run in their records.
SNAPSHOT_EVERY_SECONDS = float(os.environ.get("BENCH_SNAPSHOT_SECONDS", "60"))
SNAPSHOT_SUFFIX = ".tar.gz"


def search_folder(runner: Runner, job: Dict[str, Any], code: str) -> Path:
    """The Tune folder a search job runs in with code version ``code`` (the name
    ``tuned.search_worker`` gives it)."""
    name = f"{job['name']}-{job_digest(job)}-{code}"
    return runner.results_dir / "tuned" / "tune" / name


def snapshot_path(folder: Path) -> Path:
    """Where the snapshot of the Tune folder ``folder`` (``<results>/tuned/tune/<name>``)
    is kept: ``<results>/tuned/snapshots/<name>.tar.gz``."""
    return folder.parent.parent / "snapshots" / f"{folder.name}{SNAPSHOT_SUFFIX}"


def _finished(state: Dict[str, Any]) -> List[str]:
    """Ids of the trials an experiment state records as finished (Ray's TERMINATED).
    Errored trials do not count: a resume runs them again."""
    from recbole_diffrec.compat import experiment_state_trials

    trials = experiment_state_trials(state)
    return [t["trial_id"] for t in trials if t.get("status") == "TERMINATED"]


def finished_trials(folder: Path) -> List[str]:
    """Ids of the trials that finished in the Tune folder ``folder``, from its newest
    experiment state."""
    from recbole_diffrec.compat import latest_experiment_state

    return _finished(latest_experiment_state(folder))


def snapshot_finished_trials(snapshot: Path) -> List[str]:
    """:func:`finished_trials` of the folder a snapshot holds, read from the archive
    (the newest experiment state is named by its start time, as in the folder)."""
    with tarfile.open(snapshot) as tar:
        states = sorted(
            (
                m
                for m in tar.getmembers()
                if m.name.count("/") == 1
                and m.name.split("/")[1].startswith("experiment_state-")
            ),
            key=lambda m: m.name,
        )
        if not states:
            return []
        return _finished(json.loads(tar.extractfile(states[-1]).read()))


def search_snapshots(runner: Runner, search: Dict[str, Any]) -> Dict[str, Path]:
    """The snapshots of ``search``'s Tune folders, by the code version their name ends
    with, oldest first (as :func:`tune_folders`)."""
    return _by_code(runner.results_dir / "tuned" / "snapshots", search, SNAPSHOT_SUFFIX)


def write_snapshot(folder: Path) -> Optional[Path]:
    """Write the snapshot of the Tune folder ``folder`` (replacing an older one), once a
    trial has finished; returns its path, or None when no trial has finished yet."""
    from recbole_diffrec.compat import experiment_state_trials, latest_experiment_state

    state = latest_experiment_state(folder)
    finished = set(_finished(state))
    if not finished:
        return None
    # Ray names a trial's folder <trainable>_<trial id>_<index>_<params>_<date>.
    trials = experiment_state_trials(state)
    left_out = [f"_{t['trial_id']}_" for t in trials if t["trial_id"] not in finished]

    def kept(path: Path) -> bool:
        parts = path.relative_to(folder).parts
        if len(parts) > 1 and any(tag in parts[0] for tag in left_out):
            return False
        return "checkpoints" not in parts[1:-1]

    target = snapshot_path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial_file = target.with_name(target.name + ".partial")
    with tarfile.open(partial_file, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and kept(path):
                arcname = Path(folder.name) / path.relative_to(folder)
                tar.add(path, arcname=str(arcname), recursive=False)
    os.replace(partial_file, target)
    return target


def unpack_snapshot(snapshot: Path, folder: Path) -> None:
    """Unpack ``snapshot`` as the Tune folder ``folder`` (which must not exist): in a
    temporary folder beside it first, so that a folder appears whole or not at all."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    unpacked = Path(tempfile.mkdtemp(prefix=".restoring-", dir=folder.parent))
    try:
        with tarfile.open(snapshot) as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4, 3.10.12, 3.9.17
                tar.extractall(unpacked, filter="data")
            else:
                tar.extractall(unpacked)
        os.rename(unpacked / folder.name, folder)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)


def restore_snapshots(runner: Runner, job: Dict[str, Any]) -> None:
    """Before a search job runs (``Section.prepare``): each snapshot of it, of any code
    version, whose Tune folder is missing is unpacked there, so that the search (or the
    older code that started it, ``Runner.finish_older``) resumes from it. A snapshot of
    a search whose result is written is no longer needed and is removed."""
    if job.get("phase") != "search":
        return
    tuned = runner.results_dir / "tuned"
    for code, snapshot in search_snapshots(runner, job).items():
        if (tuned / f"{cache_key(job, code)}.json").is_file():
            snapshot.unlink()
            continue
        folder = search_folder(runner, job, code)
        if folder.exists():
            continue
        unpack_snapshot(snapshot, folder)
        print(
            f"{job['name']}: its Tune folder was missing; restored {folder.name} from "
            f"{snapshot} ({len(finished_trials(folder))} trials finished), to resume",
            flush=True,
        )


class _SnapshotKeeper(threading.Thread):
    """Refreshes a running search's snapshot whenever another of its trials finishes."""

    def __init__(self, folder: Path, every: float) -> None:
        super().__init__(name=f"snapshots of {folder.name}", daemon=True)
        self.folder, self.every = folder, every
        self.done = threading.Event()
        self.taken = 0  # finished trials in the newest snapshot

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.refresh()

    def refresh(self) -> None:
        try:
            if not self.folder.is_dir():
                return
            finished = len(finished_trials(self.folder))
            if finished > self.taken:
                write_snapshot(self.folder)
                self.taken = finished
        except (OSError, ValueError, tarfile.TarError) as err:
            # Ray rewriting a file mid-read, say: the next round takes it.
            print(f"snapshot of {self.folder.name} not taken: {err!r}", flush=True)

    def stop(self) -> None:
        self.done.set()
        self.join()


@contextmanager
def keep_snapshots(runner: Runner, job: Dict[str, Any], code: str) -> Iterator[None]:
    """Around a search job's run by code version ``code`` (``Section.safeguard``: in
    the process running it, or watching the worktree of the older code that finishes
    it): its snapshot is refreshed every ``SNAPSHOT_EVERY_SECONDS``
    (``BENCH_SNAPSHOT_SECONDS``) when trials have finished since the last one, and once
    more if the run stops without a result (an interruption); it is removed once the
    search's result is written."""
    if job.get("phase") != "search":
        yield
        return
    folder = search_folder(runner, job, code)
    keeper = _SnapshotKeeper(folder, SNAPSHOT_EVERY_SECONDS)
    keeper.start()
    try:
        yield
    except BaseException:
        keeper.stop()
        keeper.refresh()
        raise
    keeper.stop()
    snapshot_path(folder).unlink(missing_ok=True)
