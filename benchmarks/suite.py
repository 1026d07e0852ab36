"""The benchmark suite: regenerates benchmarks/RESULTS.md and its plots.

Run from the repository root:

    python -m benchmarks.suite                  # everything, reusing cached results
    python -m benchmarks.suite --quick          # the whole pipeline on tiny generated data
    python -m benchmarks.suite --sections accuracy steps
    python -m benchmarks.suite --cached-only    # report cached runs only; missing = pending
    python -m benchmarks.suite --refresh-stale  # also rerun results computed by older code
    python -m benchmarks.suite --revalidate     # carry results forward after a code change
                                                # that a rerun shows changed nothing
    python -m benchmarks.suite --sections tuned --only 'amazon-beauty-general-*'
                                                # run only the jobs of these names

Sections (benchmarks/sections/, settings in properties/experiment/ml1m_clean_suite.yaml and
sequential_suite.yaml): accuracy, speed, stopping, scale, steps, sequential; each module's
docstring says what it measures.

Every run is a subprocess writing one JSON file under the results folder (so its peak
memory is its own); with --quick the runs go in the suite's own process instead, which
saves one start-up of RecBole and torch per run (10-15 s each here) in a rehearsal whose
numbers mean nothing anyway. A run whose result exists is skipped, so an interrupted suite
resumes where it stopped. Several suite processes may share the work (e.g. two with
OMP_NUM_THREADS=1 on a 2-core machine): a run being done by a live process is locked and
skipped by the others. Each result records the hash of the code it was computed with
(benchmarks/codeversion.py); one from other code is reported, marked stale, and rerun only with
--refresh-stale. With --cached-only nothing runs. After a code change that should not
change a section's numbers (a refactoring, a feature behind a new key), --revalidate reruns
one witness run per group (for the tuned section: each model's first seed) and, where its
new result is identical to the old one, carries the group's other results forward (their
JSON records the check under "revalidated"); where it differs, they stay stale. A result
no witness of its own code is left to check (a tuned search whose seeds all ran with newer
code) is carried on its own record: the rerun of its best setting must reproduce it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

if __name__ == "__main__" and not __package__:
    raise SystemExit(
        "run the suite as a module from the repository root: python -m benchmarks.suite"
    )

from .oldcode import older_code_runner, same_machine_reference  # noqa: E402
from .report import write_report  # noqa: E402
from .runner import ROOT, Options, Runner  # noqa: E402
from .sections import Section, registry  # noqa: E402
from .spec import load_spec  # noqa: E402


def extra_requirements(extra: str) -> List[str]:
    """The distribution names setup.cfg lists under ``extra`` (``[options.extras_require]``)
    for this interpreter (environment markers evaluated)."""
    import configparser

    from packaging.requirements import Requirement

    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser.get("options.extras_require", extra, fallback="").splitlines()
    requirements = [Requirement(line) for line in lines if line.strip()]
    return [r.name for r in requirements if r.marker is None or r.marker.evaluate()]


def missing_bench_requirements() -> List[str]:
    """The ``bench`` extra's packages that are not installed: a full suite run reaches
    RecBole's LDiffRec, which imports kmeans_pytorch without declaring it, only after an
    hour of other runs, so the suite checks before it starts."""
    from importlib.metadata import PackageNotFoundError, version

    missing = []
    for name in extra_requirements("bench"):
        try:
            version(name)
        except PackageNotFoundError:
            missing.append(name)
    return missing


def parse(argv: Optional[List[str]], names: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.suite", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny data, a couple of epochs"
    )
    parser.add_argument("--sections", nargs="*", choices=names, default=names)
    parser.add_argument(
        "--results",
        help="results folder (default benchmarks/results, "
        "or benchmarks/out/quick with --quick)",
    )
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="run nothing: report the cached runs and list the pending ones",
    )
    parser.add_argument(
        "--refresh-stale",
        action="store_true",
        help="rerun the jobs whose cached result was computed by other code "
        "(by default such results are reported, marked stale)",
    )
    parser.add_argument(
        "--revalidate",
        action="store_true",
        help="after a code change: rerun one witness per group and carry the group's "
        "results forward where the witness's result is unchanged; runs nothing else",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        default=[],
        help="run (or revalidate) only the jobs with these names, e.g. "
        "amazon-beauty-general-BPR (tuned: DATASET-MODEL); shell-style wildcards "
        "allowed; the other jobs stay pending and the whole report is still written",
    )
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cached_only and args.refresh_stale:
        parser.error("--refresh-stale: runs jobs, --cached-only runs none; pick one")
    if args.only and args.cached_only:
        parser.error(
            "--only: chooses the jobs to run, --cached-only runs none; pick one"
        )
    if args.revalidate and (args.cached_only or args.refresh_stale):
        parser.error(
            "--revalidate: runs only witness runs; not with --cached-only or "
            "--refresh-stale"
        )
    return args


def revalidate(
    runner: Runner, sections: Dict[str, Section], chosen: List[str]
) -> List[str]:
    """``--revalidate``: one line per group of each chosen section that has witnesses."""
    lines = []
    parts_of: Dict[str, Any] = {}

    def jobs_of(name: str) -> Any:
        if name not in parts_of:
            section = sections[name]
            parts_of[name] = section.jobs(
                runner, {n: jobs_of(n) for n in section.needs}
            )
        return parts_of[name]

    for name in chosen:
        section = sections[name]
        if section.witnesses is None or section.differ is None:
            continue
        # Where the stored result differs, the old code is rerun on this machine (a git
        # worktree of its commit).
        reference = same_machine_reference(
            Path(inspect.getsourcefile(section.worker)), quick=runner.options.quick
        )
        for witness, vouched in section.witnesses(jobs_of(name)):
            if not runner.chosen(witness):
                continue
            lines.append(runner.revalidate(witness, vouched, section.differ, reference))
            print(lines[-1], flush=True)
        # Then, on their own records, what no witness of their code can vouch for (after
        # the groups above, which may have carried it already).
        if section.recorded_witnesses is not None:
            for found in section.recorded_witnesses(runner, jobs_of(name)):
                if not runner.chosen(found[0]):
                    continue
                lines.append(runner.vouch_by_record(*found))
                print(lines[-1], flush=True)
    return lines


def build_parts(
    runner: Runner, sections: Dict[str, Section], chosen: List[str], figures: Path
) -> Dict[str, str]:
    """Every section's markdown, in registry order. The chosen sections' jobs (and those
    of the sections they need) are listed and run by ``runner``; the other sections are
    rendered from the cache alone, so a run of some sections still writes the whole
    report. A section's jobs are listed once, before the first section that needs them.
    """
    listed: Dict[str, Any] = {}
    from_cache = runner.cached_view()

    def jobs_of(name: str, active: Runner) -> Any:
        if name not in listed:
            section = sections[name]
            needed = {n: jobs_of(n, active) for n in section.needs}
            listed[name] = section.jobs(active, needed)
        return listed[name]

    for name in sections:
        if name in chosen:
            jobs_of(name, runner)
    return {
        name: sections[name].render(
            runner if name in chosen else from_cache,
            jobs_of(name, from_cache),
            figures,
        )
        for name in sections
    }


def main(argv: Optional[List[str]] = None) -> None:
    sections = registry()
    args = parse(argv, list(sections))
    options = Options(
        quick=args.quick,
        results=Path(args.results).resolve() if args.results else None,
        cached_only=args.cached_only or args.revalidate,
        refresh_stale=args.refresh_stale,
        only=tuple(args.only),
    )
    runner = Runner(load_spec(args.quick, sections), options, sections)
    # A search older code started and a code change interrupted is finished with that
    # code (in a git worktree of its commit), not started over.
    runner.older_code = older_code_runner(
        sections, options.results_dir, quick=args.quick
    )
    if args.job:  # a worker process started by Runner.run_in_worker
        runner.run_job(json.loads(args.job))
        return
    if not (args.cached_only or args.quick):
        missing = missing_bench_requirements()
        if missing:
            raise SystemExit(
                f"the benchmark suite needs setup.cfg's bench extra; not installed: "
                f"{', '.join(missing)}. Install it with: pip install -e \".[bench]\" "
                '(with uv: uv pip install -e ".[dev,bench]" --override overrides.txt)'
            )
    if args.revalidate:  # listing runs nothing (cached_only); only witnesses run
        revalidate(runner, sections, args.sections)

    import matplotlib

    matplotlib.use("Agg")
    folder = options.results_dir if args.quick else ROOT / "benchmarks"
    figures = folder / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    parts = build_parts(runner, sections, args.sections, figures)
    unmatched = runner.unmatched_only()
    if unmatched:
        raise SystemExit(
            f"--only {' '.join(unmatched)}: no job of the sections "
            f"{', '.join(args.sections)} has such a name; theirs: "
            f"{', '.join(sorted(runner.listed))}"
        )
    given = sys.argv[1:] if argv is None else argv
    command = "python -m benchmarks.suite" + "".join(
        f" {shlex.quote(a)}" for a in given
    )
    write_report(folder / "RESULTS.md", runner, command, parts)
    print(f"wrote {folder / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
