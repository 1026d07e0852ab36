"""The report's sections: each module here declares one ``SECTION = Section(...)``.

Adding a section: write ``benchmarks/sections/<name>.py`` with its jobs, worker and render
functions and a ``SECTION`` entry (plus its settings in the experiment yaml, or a
``spec_file`` of its own). The registry finds it; ``--sections`` offers it; its place in
``RESULTS.md`` is its ``order``. Put the report code after a line
``# ---- report`` (any number of dashes): the module above that line is part of the
hash of the code its results depend on (benchmarks/codeversion.py), the report code is not.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Mapping, Optional, Tuple

from ..codeversion import model_code_hash, worker_code_hash
from ..runner import Runner

Job = Dict[str, Any]


@dataclass(frozen=True)
class Section:
    """One section of the report.

    - ``jobs(runner, needed)``: the section's jobs, run (``runner.execute``) as they are
      listed, so that later jobs can depend on earlier results; ``needed`` maps each name
      in ``needs`` to that section's jobs. Returns whatever ``render`` takes.
    - ``render(runner, jobs, figures)``: the section's markdown (figures go in
      ``figures``); reads results with ``runner.read``.
    - ``worker(runner, job)``: runs one job, returns its result (a JSON-able dict);
      None for a section made from other sections' results.
    - ``quick(spec)``: trims the spec for ``--quick``.
    - ``spec_file``: a yaml loaded as ``spec[name]``.
    - ``witnesses(listed)``: for ``--revalidate``, groups ``(witness, vouched)`` of what
      ``jobs`` returned: when the code changes, rerunning the cheap ``witness`` and
      finding its result unchanged (``differ(old_json, new_json)`` returns None, or a
      line saying what differs) carries the ``vouched`` results forward
      (``Runner.revalidate``). Sections without it are never carried forward.
    - ``recorded_witnesses(runner, listed)``: for ``--revalidate`` too, for stale
      results that no ``witnesses`` group can vouch for (nothing of their code is left
      to compare with): ``(witness, vouched, expected, against)``, where ``witness``,
      run with this checkout's code, must reproduce ``expected``, the numbers the
      ``vouched`` result recorded for the same setting (``against`` names them;
      ``Runner.vouch_by_record``).
    - ``hash_by_model``: every job names the one model it runs (``job["model"]``), and
      its code hash covers only the part of the package that model uses
      (``codeversion.model_scoped_files``): editing one model leaves the others' results
      current and their searches running. Otherwise the whole package counts.
    - ``unfinished(runner, job)``: for a job not done with this checkout's code, the
      code version of an interrupted run of it by older code that can resume (a Tune
      search's folder), else None. The runner then finishes that run with that code
      instead of starting it over (``Runner.execute``), so a code change loses no
      trials; ``--revalidate`` decides afterwards whether it counts for the new code.
    - ``annotate(runner, job, result)``: adds bookkeeping to a run's result before it is
      written (how long a search's trials ran, over every session that worked on it).
      Report-side code, outside the code hash: it must not change what the run computed.
    - ``prepare(runner, job)``: called under the job's lock before it runs (or before
      older code finishes it): puts back what a lost machine took that the run can
      resume from (a search's Tune folder, from the snapshot ``safeguard`` kept).
    - ``safeguard(runner, job, code)``: a context manager around a run of ``job`` by
      code version ``code`` (this checkout's, or the older code ``Runner.finish_older``
      finishes it with), up to its result being written: keeps what survives the
      machine (a running search's snapshot, refreshed as trials finish, dropped once
      the result is written). Bookkeeping, outside the code hash like ``annotate``.
    """

    name: str
    order: int
    jobs: Callable[[Runner, Mapping[str, Any]], Any]
    render: Callable[[Runner, Any, Path], str]
    worker: Optional[Callable[[Runner, Job], Dict[str, Any]]] = None
    needs: Tuple[str, ...] = ()
    quick: Optional[Callable[[Dict[str, Any]], None]] = None
    spec_file: Optional[Path] = None
    witnesses: Optional[Callable[[Any], List[Tuple[Job, List[Job]]]]] = None
    differ: Optional[Callable[[Path, Path], Optional[str]]] = None
    recorded_witnesses: Optional[
        Callable[[Runner, Any], List[Tuple[Job, Job, Dict[str, Any], str]]]
    ] = None
    hash_by_model: bool = False
    unfinished: Optional[Callable[[Runner, Job], Optional[str]]] = None
    annotate: Optional[Callable[[Runner, Job, Dict[str, Any]], None]] = None
    prepare: Optional[Callable[[Runner, Job], None]] = None
    safeguard: Optional[Callable[[Runner, Job, str], ContextManager[None]]] = None

    def code_hash(self, model: Optional[str] = None) -> Optional[str]:
        """The hash of the code this section's runs (of ``model``, for a section hashed
        by model) depend on (see runner)."""
        if self.worker is None:
            return None
        if self.hash_by_model:
            return model_code_hash(self.worker, model)
        return worker_code_hash(self.worker)


def registry() -> Dict[str, Section]:
    """Every section declared in this package, in report order."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        section = getattr(module, "SECTION", None)
        if isinstance(section, Section):
            found.append(section)
    return {s.name: s for s in sorted(found, key=lambda s: s.order)}
