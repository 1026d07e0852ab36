"""Running the suite's jobs: options, the result cache, run locks and worker processes.

Cache: one JSON file per job and code version, ``<results>/<section>/<stem>-<code>.json``.
``<stem>`` names the job and ends with a digest of its settings (the first suite's file
name, so results it wrote are still found); ``<code>`` is the hash of the code the run
depends on (``benchmarks.codeversion``). A result whose code hash differs from this
checkout's, or that has none (written before hashes were recorded: "code version
unknown"), is *stale*: it is still read and reported, marked as such, and rerun only with
``refresh_stale``. A fresh result replaces the job's stale ones.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import dataclass, replace
from fnmatch import fnmatch
from pathlib import Path
from typing import (
    Any,
    Callable,
    ContextManager,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
)

from recbole_diffrec.utils import write_text_atomically

from .codeversion import ROOT

UNKNOWN = "unknown"  # the code version of a result written before hashes were recorded
STALE_MARK = " *(stale)*"


@dataclass(frozen=True)
class Unfinished:
    """A run of a job that older code started and that was interrupted (a code change
    came before it ended): a section's ``unfinished`` finds it, ``Runner.finish_older``
    finishes it with that code."""

    code: str  # the code version that started it
    # Points the paths it recorded (those of the checkout that started it) at another
    # checkout of that code, given: a git worktree to resume it from, then this
    # checkout once it is done. None when it records none.
    move_to: Optional[Callable[[Path], None]] = None


@dataclass(frozen=True)
class Options:
    """How a suite process runs; passed explicitly, never kept in module state."""

    quick: bool = False
    results: Optional[Path] = (
        None  # default: benchmarks/results or benchmarks/out/quick
    )
    cached_only: bool = False  # run nothing, report what is cached
    refresh_stale: bool = False  # rerun jobs whose cached result came from other code
    only: Tuple[str, ...] = ()  # run only the jobs whose name matches one (fnmatch)

    @property
    def results_dir(self) -> Path:
        if self.results is not None:
            return Path(self.results).resolve()
        return ROOT / "benchmarks" / ("out/quick" if self.quick else "results")


# ---------------------------------------------------------------------------- cache keys
def job_digest(job: Dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(job, sort_keys=True).encode()).hexdigest()[:10]


def job_stem(job: Dict[str, Any]) -> str:
    """The job's name in the results folder, without a code version (as the first suite
    named its result files)."""
    label = "-".join(str(job[k]) for k in ("section", "name") if k in job)
    extra = job.get("seed", job.get("items", ""))
    return f"{label}-{extra}-{job_digest(job)}".replace("/", "_")


def cache_key(job: Dict[str, Any], code: str) -> str:
    return f"{job_stem(job)}-{code}"


def companions(path: Path) -> List[Path]:
    """Files a run wrote beside its JSON result (``<stem>-<code>.users.npz``, say), not
    its lock or log."""
    prefix = path.name[: -len(".json")] + "."
    return [
        p
        for p in path.parent.glob(glob.escape(prefix) + "*")
        if p != path and p.suffix not in (".lock", ".log")
    ]


def claim(path: Path) -> Optional[Path]:
    """Lock a run for this process; None when a live process holds it or it is done."""
    lock = path.with_suffix(".lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(lock.read_text() or 0), 0)
                return None  # held by a live process
            except (ProcessLookupError, ValueError):
                lock.unlink(missing_ok=True)  # left by a process that died: take over
                continue
            except FileNotFoundError:
                continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        if path.is_file():  # finished by another process meanwhile
            lock.unlink()
            return None
        return lock
    return None


def write_atomically(
    path: Path, data: Dict[str, Any], default: Optional[Callable] = None
) -> None:
    """A half-written result never counts: write aside, then rename."""
    write_text_atomically(path, json.dumps(data, indent=1, default=default))


# ---------------------------------------------------------------------------- the runner
def record_difference(
    expected: Dict[str, Dict[str, Any]], result: Dict[str, Any]
) -> Optional[str]:
    """None when ``result`` holds every value of ``expected`` (``{field: {key:
    value}}``) exactly, else the first that differs."""
    for field, values in expected.items():
        for key, value in values.items():
            found = result.get(field, {}).get(key)
            if found != value:
                return f"{field} {key}: {value} -> {found}"
    return None


class Runner:
    """Runs and reads one suite's jobs. ``sections`` maps a section name to an object with
    ``worker`` and ``code_hash()`` (the registry's ``Section``); ``code_versions``
    overrides their code hashes (tests)."""

    def __init__(
        self,
        spec: Dict[str, Any],
        options: Options,
        sections: Mapping[str, Any],
        code_versions: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.spec, self.options, self.sections = spec, options, sections
        self._code: Dict[str, str] = dict(code_versions or {})
        self._scoped: Dict[Tuple[str, Optional[str]], str] = {}
        # (job, its unfinished run, log file) -> the commit that finished it with the
        # run's code, or None when no commit has that code (finish_older).
        self.older_code: Optional[
            Callable[[Dict[str, Any], Unfinished, Path], Optional[str]]
        ] = None
        # Results read for the report -> (their code version, this checkout's for them).
        self.shown: Dict[Path, Tuple[str, str]] = {}
        self.listed: Set[str] = (
            set()
        )  # names of the jobs listed to run (``--only``'s check)

    @property
    def results_dir(self) -> Path:
        return self.options.results_dir

    def cached_view(self) -> "Runner":
        """A runner over the same results that runs nothing; what it reads counts in this
        runner's ``shown`` (the report header's code versions)."""
        view = Runner(
            self.spec,
            replace(self.options, cached_only=True, refresh_stale=False),
            self.sections,
        )
        view._code, view._scoped, view.shown = self._code, self._scoped, self.shown
        return view

    def code_version(self, job: Dict[str, Any]) -> str:
        """The hash of the code ``job``'s run depends on: its section's worker code and
        the package as seen by the job's ``model`` (codeversion.model_scoped_files)."""
        section = job["section"]
        if section in self._code:
            return self._code[section]
        if getattr(self.sections[section], "hash_by_model", False) and not job.get(
            "model"
        ):
            raise ValueError(
                f"{section} job {job.get('name')!r} names no model; a section hashed "
                "by model needs job['model'] on every job"
            )
        key = (section, job.get("model"))
        if key not in self._scoped:
            self._scoped[key] = self.sections[section].code_hash(job.get("model"))
        return self._scoped[key]

    def result_path(self, job: Dict[str, Any]) -> Path:
        """Where this checkout's result of ``job`` goes."""
        code = self.code_version(job)
        return self.results_dir / job["section"] / f"{cache_key(job, code)}.json"

    def versions(self, job: Dict[str, Any]) -> List[Path]:
        """Every cached result of ``job``, this checkout's first, then newest first."""
        folder = self.results_dir / job["section"]
        stem = glob.escape(job_stem(job))
        found = glob.glob(str(folder / f"{stem}.json")) + glob.glob(
            str(folder / f"{stem}-*.json")
        )
        fresh = self.result_path(job)
        return sorted(
            (Path(p) for p in found),
            key=lambda p: (p != fresh, -p.stat().st_mtime),
        )

    @staticmethod
    def stored_code(path: Path) -> str:
        """The code version a stored result records (UNKNOWN: written before results
        recorded one)."""
        return json.loads(path.read_text()).get("code_hash", UNKNOWN)

    def cached(self, job: Dict[str, Any]) -> bool:
        return bool(self.versions(job))

    def stale(self, job: Dict[str, Any]) -> bool:
        found = self.versions(job)
        return bool(found) and found[0] != self.result_path(job)

    def read(self, job: Dict[str, Any]) -> Dict[str, Any]:
        path = self.versions(job)[0]
        result = json.loads(path.read_text())
        self.shown[path] = (result.get("code_hash", UNKNOWN), self.code_version(job))
        return result

    def stale_mark(self, jobs: Iterable[Dict[str, Any]]) -> str:
        """The table marker for a row built from ``jobs``, when any came from other code."""
        return STALE_MARK if any(self.stale(j) for j in jobs) else ""

    # ------------------------------------------------------------------------ running
    def needs_run(self, job: Dict[str, Any]) -> bool:
        if not self.cached(job):
            return True
        return self.options.refresh_stale and self.stale(job)

    def chosen(self, job: Dict[str, Any]) -> bool:
        """Whether ``job`` is this process's to run: every job, or with ``--only`` those
        whose name matches one of its patterns (a job left out stays pending)."""
        name = job.get("name", "")
        return not self.options.only or any(fnmatch(name, p) for p in self.options.only)

    def unmatched_only(self) -> List[str]:
        """The ``--only`` patterns that match no job listed so far (a misspelt name
        would otherwise run nothing without a word)."""
        return [
            p for p in self.options.only if not any(fnmatch(n, p) for n in self.listed)
        ]

    def execute(self, jobs: List[Dict[str, Any]], label: str) -> None:
        """Run the jobs not cached yet (and the stale ones with ``refresh_stale``), each
        under a lock so that several suite processes can share the work."""
        self.listed.update(j.get("name", "") for j in jobs)
        if self.options.cached_only:
            return
        from tqdm import tqdm

        jobs = [j for j in jobs if self.chosen(j)]
        if not jobs:
            return
        todo = [j for j in jobs if self.needs_run(j)]
        with tqdm(
            total=len(jobs), initial=len(jobs) - len(todo), desc=label, unit="run"
        ) as bar:
            for job in todo:
                path = self.result_path(job)
                path.parent.mkdir(parents=True, exist_ok=True)
                lock = claim(path)
                if lock is None:  # another suite process is on it, or it is done
                    bar.update(1)
                    continue
                bar.set_postfix_str(
                    f"{job.get('name')} {job.get('seed', job.get('items', ''))}"
                )
                try:
                    self.prepare(job)
                    if not self.finish_older(job):
                        self.run_fresh(job)
                finally:
                    lock.unlink(missing_ok=True)
                bar.update(1)

    def finish_older(self, job: Dict[str, Any]) -> bool:
        """When older code started ``job`` and was interrupted (its section's
        ``unfinished`` finds that run: a Tune search with trials done), finish it with
        that code (``self.older_code``, set by the suite: ``benchmarks.oldcode`` runs it
        from a git worktree of the code's commit), so that a code change loses none of
        its trials. Its result is then a stale one, which ``--revalidate`` carries
        forward once a rerun shows the two codes agree. Returns False, and the job runs
        with this code, when there is no such run or its commit is not in this clone."""
        unfinished = getattr(self.sections[job["section"]], "unfinished", None)
        if unfinished is None or self.older_code is None:
            return False
        found = unfinished(self, job)
        if found is None:
            return False
        name = f"{job['name']} ({job.get('phase', job.get('seed', ''))})"
        old_path = (
            self.results_dir / job["section"] / f"{cache_key(job, found.code)}.json"
        )
        # The lock a suite process running that code itself would take.
        lock = claim(old_path)
        if lock is None:
            print(f"{name}: a suite process of code {found.code} is on it", flush=True)
            return True
        print(
            f"{name}: finishing it with code {found.code}, which started it", flush=True
        )
        try:
            with self.safeguard(job, found.code):
                commit = self.older_code(job, found, old_path.with_suffix(".log"))
        except RuntimeError as err:
            raise SystemExit(
                f"{name}: finishing it with code {found.code} failed: {err}"
            ) from err
        finally:
            lock.unlink(missing_ok=True)
        if commit is None:
            print(
                f"{name}: no commit in this clone's history has code {found.code}; "
                "starting it over with this code",
                flush=True,
            )
            return False
        print(
            f"{name}: finished with code {found.code} (commit {commit[:10]}); "
            "`python -m benchmarks.suite --revalidate` carries it forward",
            flush=True,
        )
        return True

    def prepare(self, job: Dict[str, Any]) -> None:
        """Before ``job`` runs (under its lock): its section's ``prepare`` hook, which
        puts back what a lost machine took (a search's Tune folder from its snapshot).
        """
        prepare = getattr(self.sections[job["section"]], "prepare", None)
        if prepare is not None:
            prepare(self, job)

    def safeguard(self, job: Dict[str, Any], code: str) -> ContextManager[None]:
        """Around a run of ``job`` by code version ``code``, in the process that watches
        it: its section's ``safeguard`` hook (a running search's snapshot), if any."""
        safeguard = getattr(self.sections[job["section"]], "safeguard", None)
        return safeguard(self, job, code) if safeguard is not None else nullcontext()

    def run_job(self, job: Dict[str, Any]) -> None:
        """Run one job; its result replaces the job's results from other code."""
        code = self.code_version(job)  # the code this run starts with
        section = self.sections[job["section"]]
        with self.safeguard(job, code):
            result = section.worker(self, job)
            if getattr(section, "annotate", None) is not None:
                section.annotate(self, job, result)
            path = self.result_path(job)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, {"job": job, "code_hash": code, **result})
        for old in self.versions(job):
            if old != path:
                for file in [old, *companions(old)]:
                    file.unlink(missing_ok=True)

    def run_fresh(self, job: Dict[str, Any]) -> None:
        """Run ``job`` with this checkout's code (its lock held by the caller): in this
        process with ``quick`` (tests), else in a worker process."""
        if self.options.quick:
            self.run_in_process(job)
        else:
            self.run_in_worker(job, self.result_path(job))

    def run_in_worker(self, job: Dict[str, Any], path: Path) -> None:
        """A real run in its own process, so its peak memory is its own."""
        log = path.with_suffix(".log")
        command = [sys.executable, "-m", "benchmarks.suite", "--job", json.dumps(job)]
        command += ["--results", str(self.results_dir)]
        with open(log, "w") as err:
            proc = subprocess.run(
                command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err
            )
        if proc.returncode != 0:
            raise SystemExit(f"run failed ({job}); see {log}")

    def run_in_process(self, job: Dict[str, Any]) -> None:
        """A --quick job in this process (one start-up of RecBole and torch instead of one
        per run), in the folder where RecBole writes its log/ and saved/."""
        here = os.getcwd()
        self.results_dir.mkdir(parents=True, exist_ok=True)
        os.chdir(self.results_dir)
        try:
            self.run_job(job)
        except Exception as err:
            raise SystemExit(f"run failed ({job}): {err!r}") from err
        finally:
            os.chdir(here)

    # ------------------------------------------------------------------------ revalidation
    def revalidate(
        self,
        witness: Dict[str, Any],
        vouched: List[Dict[str, Any]],
        differ: Callable[[Path, Path], Optional[str]],
        reference: Optional[Callable[..., Tuple[Optional[Path], str]]] = None,
    ) -> str:
        """Carry results from older code forward when a rerun shows the code change did
        not change them. ``witness`` is a cheap job of the group, ``vouched`` the rest.

        1. A stale witness is rerun with this checkout's code. If ``differ(old, new)``
           finds no difference from its stored result, every vouched result of the same
           old code is marked as this checkout's, the check recorded in its JSON under
           ``revalidated``.
        2. A stored result may differ for another reason than the code: it came from
           another session's machine, where a near-tie fell the other way. So when the
           stored result differs, or the witness is already current while vouched
           results of older code remain, the old code itself is rerun on this machine
           (``reference(old_code, witness, folder)`` returns its result file, or None
           and why not; ``benchmarks.oldcode``) and compared with this code's witness.
           Identical: the code change is shown to change nothing, the vouched results
           are carried forward (their record says so and what the stored result
           differed in). A vouched result of old code whose group already passed the
           check (results computed after it) is carried on that record.
        Otherwise nothing is carried. Returns one line saying what happened."""
        import shutil
        import tempfile

        name = f"{witness['name']} ({witness.get('seed', '')})"
        if not self.cached(witness):
            return f"{name}: nothing to revalidate (not run yet)"
        code = self.code_version(witness)
        path = self.result_path(witness)
        if self.stale(witness):
            old_path = self.versions(witness)[0]
            old_code = self.stored_code(old_path)
            if old_code == UNKNOWN:
                return f"{name}: its result has no code version; rerun it instead"
            lock = claim(path)
            if lock is None:
                return f"{name}: another suite process is running it"
            with tempfile.TemporaryDirectory() as folder:
                kept = Path(folder) / old_path.name
                for file in [old_path, *companions(old_path)]:
                    shutil.copy2(file, Path(folder) / file.name)
                try:
                    self.run_fresh(witness)
                finally:
                    lock.unlink(missing_ok=True)
                difference = differ(kept, path)
            if difference is None:
                record = {"against": "its stored result"}
                carried = self.carry(witness, vouched, old_code, code, record)
                return (
                    f"{name}: rerun with code {code} is identical to code {old_code}; "
                    f"{carried} result(s) of the group carried forward"
                )
            pending = {old_code: difference}
        else:
            pending = {
                self.stored_code(self.versions(j)[0]): None
                for j in vouched
                if self.stale(j)
            }
            pending.pop(UNKNOWN, None)
            if not pending:
                return f"{name}: nothing to revalidate (already current)"
        lines = []
        for old_code, stored in pending.items():
            lines.append(
                self.check_old_code(
                    name, witness, vouched, differ, reference, old_code, stored
                )
            )
        return "; ".join(lines)

    def check_old_code(
        self,
        name: str,
        witness: Dict[str, Any],
        vouched: List[Dict[str, Any]],
        differ: Callable[[Path, Path], Optional[str]],
        reference: Optional[Callable[..., Tuple[Optional[Path], str]]],
        old_code: str,
        stored: Optional[str],
    ) -> str:
        """Step 2 of :meth:`revalidate` for one old code version. The old code's rerun
        is locked: a second suite process reaching the group meanwhile moves on rather
        than rerun it too, and one that gets the lock after a check has passed carries
        on that check's record."""
        head = f"{name}: code {old_code}"
        if stored is not None:
            head += f" (the stored result differs from this code's rerun: {stored})"
        if reference is None:
            return self._check_old_code(witness, vouched, differ, None, old_code, head)
        path = self.result_path(witness)
        lock = claim(path.with_name(f"{path.stem}.check-{old_code}.json"))
        if lock is None:
            return f"{head}: another suite process is checking it"
        try:
            return self._check_old_code(
                witness, vouched, differ, reference, old_code, head, stored
            )
        finally:
            lock.unlink(missing_ok=True)

    def _check_old_code(
        self,
        witness: Dict[str, Any],
        vouched: List[Dict[str, Any]],
        differ: Callable[[Path, Path], Optional[str]],
        reference: Optional[Callable[..., Tuple[Optional[Path], str]]],
        old_code: str,
        head: str,
        stored: Optional[str] = None,
    ) -> str:
        import tempfile

        code = self.code_version(witness)
        passed = [
            r
            for j in [witness, *vouched]
            if self.cached(j) and not self.stale(j)
            for r in self.read(j).get("revalidated", [])
            if r.get("from_code") == old_code and r.get("identical")
        ]
        if passed:
            record = {**passed[-1], "carried_later": True}
            carried = self.carry(witness, vouched, old_code, code, record)
            return f"{head}: the group passed its check earlier; {carried} result(s) carried forward"
        if reference is None:
            return f"{head}: the group's results of that code stay stale"
        # The old code runs in a throwaway worktree, so its run cannot resume in a later
        # session: one longer than a session would be killed and retried every time.
        limit = float(os.environ.get("BENCH_REFERENCE_MAX_SECONDS", 9000))
        took = self.read(witness).get("time_to_result")
        if took is not None and took > limit:
            return (
                f"{head}: not rerun here (the witness took {took / 3600:.1f} h with "
                f"this code; an old-code rerun cannot resume, and runs over "
                f"BENCH_REFERENCE_MAX_SECONDS={limit:.0f} are not tried); its results "
                "stay stale"
            )
        with tempfile.TemporaryDirectory(dir=self.results_dir) as folder:
            rerun, note = reference(old_code, witness, Path(folder))
            if rerun is None:
                return f"{head}: cannot rerun it here ({note}); its results stay stale"
            difference = differ(rerun, self.result_path(witness))
        if difference is not None:
            return (
                f"{head}: rerun here ({note}) it differs from code {code} "
                f"({difference}); the group's results of that code stay stale"
            )
        record = {"against": f"a rerun of code {old_code} on this machine ({note})"}
        if stored is not None:
            record["stored_result_differed"] = stored
        carried = self.carry(witness, vouched, old_code, code, record)
        return (
            f"{head}: rerun here ({note}) it is identical to code {code}; "
            f"{carried} result(s) of the group carried forward"
        )

    def vouch_by_record(
        self,
        witness: Dict[str, Any],
        vouched: Dict[str, Any],
        expected: Dict[str, Dict[str, Any]],
        against: str,
    ) -> str:
        """Carry one result of older code forward on the numbers it recorded itself,
        for a result that no witness run of its own code can vouch for (a search whose
        seeds all ran after a code change, so :meth:`revalidate` has nothing of the old
        code to compare). ``witness`` is run with this checkout's code unless it has
        been (a resumable run: it may take several sessions); it must reproduce every
        value of ``expected`` (``{field: {key: value}}``, what ``vouched`` recorded for
        the same setting, ``against`` naming it) exactly. A weaker check than
        :meth:`revalidate`'s (only the recorded numbers are compared), so the record
        says which check carried the result."""
        name = f"{witness['name']} ({witness.get('seed', '')})"
        if not self.stale(vouched):
            return f"{name}: nothing to vouch for by record (already current)"
        old_code = json.loads(self.versions(vouched)[0].read_text()).get(
            "code_hash", UNKNOWN
        )
        if old_code == UNKNOWN:
            return f"{name}: the vouched result has no code version; rerun it instead"
        path = self.result_path(witness)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = claim(path)
            if lock is None:
                return f"{name}: another suite process is running it"
            try:
                self.run_fresh(witness)
            finally:
                lock.unlink(missing_ok=True)
        difference = record_difference(expected, json.loads(path.read_text()))
        code = self.code_version(witness)
        if difference is not None:
            return (
                f"{name}: with code {code} it differs from {against} of code "
                f"{old_code} ({difference}); that result stays stale"
            )
        record = {"against": against, "by_record": sorted(expected)}
        carried = self.carry(witness, [vouched], old_code, code, record)
        return (
            f"{name}: with code {code} it reproduces {against} of code {old_code}; "
            f"{carried} result carried forward"
        )

    def carry(
        self,
        witness: Dict[str, Any],
        vouched: List[Dict[str, Any]],
        old_code: str,
        code: str,
        record: Dict[str, Any],
    ) -> int:
        """Mark each vouched result of ``old_code`` as this checkout's, recording the
        check (``record`` with ``from_code``, ``witness`` and ``identical``); returns how
        many were carried."""
        record = {
            **record,
            "from_code": old_code,
            "witness": job_stem(witness),
            "identical": True,
        }
        carried = 0
        for job in vouched:
            found = self.versions(job)
            if not found or found[0] == self.result_path(job):
                continue
            result = json.loads(found[0].read_text())
            if result.get("code_hash") != old_code:
                continue
            result["code_hash"] = self.code_version(job)
            result["revalidated"] = [*result.get("revalidated", []), record]
            target = self.result_path(job)
            for file in companions(found[0]):
                file.rename(
                    target.with_name(target.stem + file.name[len(found[0].stem) :])
                )
            write_atomically(target, result)
            found[0].unlink()
            carried += 1
        # The witness keeps the check too: results of the old code that turn up later
        # (a run still going when the check was made) are carried on it.
        path = self.result_path(witness)
        result = json.loads(path.read_text())
        if not any(
            r.get("from_code") == old_code for r in result.get("revalidated", [])
        ):
            result["revalidated"] = [*result.get("revalidated", []), record]
            write_atomically(path, result)
        return carried

    # ------------------------------------------------------------------------ report lines
    def notes(self, jobs: List[Dict[str, Any]]) -> str:
        """The section's pending and stale lines (empty when all are done and fresh)."""
        return self.pending_line(jobs) + self.stale_line(jobs)

    def pending_line(self, jobs: List[Dict[str, Any]]) -> str:
        missing = [j for j in jobs if not self.cached(j)]
        if not missing:
            return ""
        names = sorted(
            {f"{j['name']} ({j.get('seed', j.get('items', ''))})" for j in missing}
        )
        return (
            f"\n**Pending: {len(missing)} of {len(jobs)} runs not done yet** "
            f"({', '.join(names)}); `python -m benchmarks.suite` runs them.\n"
        )

    def stale_line(self, jobs: List[Dict[str, Any]]) -> str:
        stale = [j for j in jobs if self.stale(j)]
        if not stale:
            return ""
        unknown = sum(
            "code_hash" not in json.loads(self.versions(j)[0].read_text())
            for j in stale
        )
        counts: Dict[str, int] = {}
        for job in stale:
            counts[job["name"]] = counts.get(job["name"], 0) + 1
        names = ", ".join(
            n if c == 1 else f"{n} x{c}" for n, c in sorted(counts.items())
        )
        return (
            f"\n**Stale: {len(stale)} of {len(jobs)} results come from older code** "
            f"({unknown} of them of unknown code version, written before code hashes "
            f"were recorded): {names}. Marked{STALE_MARK} in the table; "
            "`python -m benchmarks.suite --refresh-stale` recomputes them.\n"
        )
