"""Rerunning a job with the code an older result was computed by, on this machine.

``--revalidate`` decides whether a code change altered a model's numbers by rerunning one
witness job with the new code and comparing it with the stored result. That comparison
mixes two causes: the code change and the machine (a stored result may come from another
session's environment, where a near-tie in one user's ranking fell the other way). When
the stored result differs, the fair question is whether the *old code on this machine*
gives what the new code gives. This module answers it from git alone:

- :func:`hash_at` computes a section's code hash (``codeversion.worker_code_hash``, or
  ``codeversion.model_code_hash`` for one model) at any commit, from the committed files;
- :func:`commit_for` finds a commit whose code has a given hash (results record only the
  hash);
- :func:`rerun_at` runs one job with that commit's suite and package in a temporary git
  worktree beside this checkout (so the dataset yaml's relative paths, ``../shared`` and
  ``dataset/``, point where they do here) and returns its result file.

The same worktree run finishes a long job that older code started and a code change
interrupted (a Tune search with trials done, :func:`older_code_runner`): the suite
resumes it with the code that started it rather than losing its trials.
"""

from __future__ import annotations

import glob
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .codeversion import PACKAGE, REPORT_MARKER, ROOT, SHARED_WORKER_CODE, parts_hash
from .runner import Unfinished, job_stem


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout


def hashed_paths(worker_file: Path, root: Path = ROOT) -> List[str]:
    """The paths (relative to ``root``) whose committed content makes a section's code
    hash: the package, the workers' shared helpers and the section's module."""
    files = [PACKAGE, *SHARED_WORKER_CODE, worker_file]
    return [os.path.relpath(p, ROOT) for p in files]


@dataclass(frozen=True)
class Snapshot:
    """What a section's code hash is made of, as committed at one revision."""

    package: Dict[str, bytes]  # root-relative path -> content, the package's sources
    shared: List[Tuple[str, bytes]]  # the workers' shared helpers
    worker_text: str  # the section's module above its report marker

    def code_hash(self, model: Optional[str] = None, by_model: bool = False) -> str:
        """``codeversion.worker_code_hash`` (the whole package), or with ``by_model``
        ``codeversion.model_code_hash`` for ``model``."""
        return parts_hash(self.package, self.shared, self.worker_text, model, by_model)


def snapshot(rev: str, worker_file: Path, root: Path = ROOT) -> Snapshot:
    package, *shared, module = hashed_paths(worker_file, root)
    names = git(root, "ls-tree", "-r", "--name-only", rev, "--", package).split()
    sources = [
        n
        for n in names
        if Path(n).suffix in (".py", ".yaml") and "__pycache__" not in Path(n).parts
    ]

    def blob(path: str) -> bytes:
        return subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, check=True
        ).stdout

    text = REPORT_MARKER.split(blob(module).decode(), maxsplit=1)[0]
    return Snapshot({n: blob(n) for n in sources}, [(p, blob(p)) for p in shared], text)


def hash_at(
    rev: str,
    worker_file: Path,
    root: Path = ROOT,
    model: Optional[str] = None,
    by_model: bool = False,
) -> str:
    """The code hash the suite gives, from the files committed at ``rev``, for the
    section whose worker module is ``worker_file`` (see :meth:`Snapshot.code_hash`)."""
    return snapshot(rev, worker_file, root).code_hash(model, by_model)


def commit_for(
    code: str,
    worker_file: Path,
    root: Path = ROOT,
    limit: int = 400,
    model: Optional[str] = None,
) -> Optional[str]:
    """The newest commit (of the last ``limit`` that changed the hashed files) whose code
    hash is ``code``, hashed over the whole package or scoped to ``model`` (a result
    records only the hash, and sections moved from the first to the second); None when
    there is none (say, a shallow clone)."""
    commits = git(
        root,
        "rev-list",
        f"--max-count={limit}",
        "HEAD",
        "--",
        *hashed_paths(worker_file, root),
    ).split()
    for commit in commits:
        files = snapshot(commit, worker_file, root)
        if code in (files.code_hash(), files.code_hash(model, by_model=True)):
            return commit
    return None


# The lock reason of the worktrees rerun_at makes: a killed session leaves its worktree
# behind, and the pid tells whether its run is still going.
WORKTREE_LOCK = "benchmarks.oldcode run, pid "


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_abandoned_worktrees(root: Path = ROOT) -> List[Path]:
    """Remove the worktrees :func:`rerun_at` made for runs whose process has died (a
    session killed mid-run leaves its worktree behind); returns their paths."""
    removed = []
    for entry in git(root, "worktree", "list", "--porcelain").split("\n\n"):
        fields = dict(line.split(" ", 1) for line in entry.splitlines() if " " in line)
        reason = fields.get("locked", "")
        if not reason.startswith(WORKTREE_LOCK):
            continue
        if process_alive(int(reason[len(WORKTREE_LOCK) :])):
            continue
        git(root, "worktree", "remove", "--force", "--force", fields["worktree"])
        shutil.rmtree(fields["worktree"], ignore_errors=True)
        removed.append(Path(fields["worktree"]))
    return removed


def rerun_at(
    commit: str,
    job: Dict[str, Any],
    results: Path,
    root: Path = ROOT,
    quick: bool = False,
    log: Optional[Path] = None,
    prepare: Optional[Callable[[Path], None]] = None,
) -> Tuple[Path, Dict[str, Any]]:
    """Run ``job`` with the suite and package of ``commit`` (a worker process of that
    checkout, as the suite runs every job; with ``quick``, the suite's ``--quick`` spec)
    writing into ``results``; returns the result file and its data. The worker's stderr
    goes to ``log`` when given (a long run's), else is kept for the error message;
    ``prepare(worktree)`` runs first when given. Raises RuntimeError when the run
    fails."""
    worktree = Path(
        tempfile.mkdtemp(prefix=f".{root.name}-at-{commit[:10]}-", dir=root.parent)
    )
    worktree.rmdir()  # git worktree add wants to create it
    remove_abandoned_worktrees(root)
    lock = ["--lock", "--reason", f"{WORKTREE_LOCK}{os.getpid()}"]
    git(root, "worktree", "add", "--detach", *lock, str(worktree), commit)
    folder = results / job["section"]
    pattern = f"{glob.escape(job_stem(job))}-*.json"
    try:
        converted = root / "dataset"
        if converted.is_dir():  # the same atomic files as this checkout's runs read
            (worktree / "dataset").symlink_to(converted)
        # The suite makes a job's folder before its worker runs (companions go there).
        folder.mkdir(parents=True, exist_ok=True)
        if prepare is not None:
            prepare(worktree)
        before = {p: p.stat().st_mtime_ns for p in folder.glob(pattern)}
        env = {**os.environ, "PYTHONPATH": str(worktree)}
        command = [sys.executable, "-m", "benchmarks.suite", "--job", json.dumps(job)]
        command += ["--results", str(results)] + (["--quick"] if quick else [])
        with open(log, "w") if log else tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run(
                command, cwd=worktree, env=env, stdout=subprocess.DEVNULL, stderr=err
            )
            if proc.returncode != 0:
                if log:
                    raise RuntimeError(
                        f"the run with commit {commit[:10]} failed; see {log}"
                    )
                err.seek(0)
                raise RuntimeError(
                    f"the rerun with commit {commit[:10]} failed: {err.read()[-2000:]}"
                )
    finally:
        git(root, "worktree", "remove", "--force", "--force", str(worktree))
        shutil.rmtree(worktree, ignore_errors=True)
    # What this run wrote: other code versions' results of the job may sit beside it.
    found = [p for p in folder.glob(pattern) if before.get(p) != p.stat().st_mtime_ns]
    if len(found) != 1:
        raise RuntimeError(f"the rerun with commit {commit[:10]} wrote {found}")
    return found[0], json.loads(found[0].read_text())


def section_file(section: Any) -> Path:
    """The module of a section's worker (its code hash's section part)."""
    return Path(inspect.getsourcefile(section.worker))


def older_code_runner(
    sections: Mapping[str, Any], results: Path, root: Path = ROOT, quick: bool = False
) -> Callable[[Dict[str, Any], Unfinished, Path], Optional[str]]:
    """For ``Runner.older_code``: a function ``(job, unfinished, log) -> commit`` that
    finishes ``job``'s interrupted run with the commit whose code started it, in a
    worktree writing into ``results`` (the run's recorded paths moved to the worktree's
    first, and to this checkout's once it is done), or returns None when this clone has
    no such commit. Raises RuntimeError when the run fails or the commit turns out to
    run other code."""

    def finish(job: Dict[str, Any], unfinished: Unfinished, log: Path) -> Optional[str]:
        worker_file = section_file(sections[job["section"]])
        commit = commit_for(unfinished.code, worker_file, root, model=job.get("model"))
        if commit is None:
            return None
        _, result = rerun_at(
            commit, job, results, root, quick, log=log, prepare=unfinished.move_to
        )
        if result.get("code_hash") != unfinished.code:
            raise RuntimeError(
                f"commit {commit[:10]} ran with code {result.get('code_hash')}, "
                f"not {unfinished.code}"
            )
        if unfinished.move_to is not None:  # the worktree is gone: name this checkout
            unfinished.move_to(root)
        return commit

    return finish


Reference = Callable[[str, Dict[str, Any], Path], Tuple[Optional[Path], str]]


def same_machine_reference(
    worker_file: Path, root: Path = ROOT, quick: bool = False
) -> Reference:
    """For ``Runner.revalidate``: a function ``(old_code, witness, folder) -> (path,
    note)`` that reruns the witness with the commit of ``old_code`` on this machine
    (its result goes in ``folder``), or returns ``(None, why)`` when it cannot."""

    def reference(old_code: str, witness: Dict[str, Any], folder: Path):
        commit = commit_for(old_code, worker_file, root, model=witness.get("model"))
        if commit is None:
            return None, f"no commit in this clone's history has code {old_code}"
        try:
            path, result = rerun_at(commit, witness, folder, root, quick)
        except RuntimeError as err:  # one group's failure must not stop the others
            return None, str(err).splitlines()[0]
        if result.get("code_hash") != old_code:
            return None, (
                f"commit {commit[:10]} ran with code {result.get('code_hash')}, "
                f"not {old_code}"
            )
        return path, f"commit {commit[:10]}"

    return reference
