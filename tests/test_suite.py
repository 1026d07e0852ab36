"""The benchmark suite (the ``benchmarks`` package): the --quick pipeline end to end, the
result cache and its code versions (stale and legacy results), the section registry, the
early-stopping selection and the run locks."""

import importlib.util
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

from benchmarks import report, suite  # noqa: E402
from benchmarks.runner import (  # noqa: E402
    STALE_MARK,
    Options,
    Runner,
    Unfinished,
    cache_key,
    claim,
    job_stem,
)
from benchmarks.codeversion import model_scoped_files, worker_code_hash  # noqa: E402
from benchmarks.sections import Section, registry  # noqa: E402
from benchmarks.selection import kept_validation  # noqa: E402
from benchmarks.spec import load_spec  # noqa: E402


def point(epoch, valid, test):
    return {"epoch": epoch, "valid": {"recall@20": valid}, "test": {"ndcg@20": test}}


def test_patience_selection_follows_recbole_early_stopping():
    curve = [
        point(5, 0.10, 0.01),
        point(10, 0.12, 0.02),
        point(15, 0.11, 0.03),
        point(
            20, 0.12, 0.04
        ),  # a tie is the new best (RecBole's >=) and resets the wait
        point(25, 0.11, 0.05),
        point(30, 0.11, 0.06),
        point(35, 0.11, 0.07),  # third worse validation in a row: patience 2 stops here
        point(40, 0.13, 0.08),
    ]

    def score(p):
        return p["valid"]["recall@20"]

    chosen = [kept_validation(curve, score, p) for p in (0, 2, 3, None)]
    assert [c["epoch"] for c in chosen] == [10, 20, 40, 40]
    assert chosen[1]["test"]["ndcg@20"] == 0.04
    assert kept_validation(curve[:4], score)["epoch"] == 20  # last of equal maxima
    assert kept_validation([], score) is None


def test_a_run_locked_by_a_live_process_is_skipped_and_a_dead_ones_lock_is_taken(
    tmp_path,
):
    result = tmp_path / "run.json"
    lock = claim(result)
    assert lock == tmp_path / "run.lock" and lock.read_text() == str(os.getpid())
    assert claim(result) is None  # held by this (live) process
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    lock.write_text(dead)
    taken = claim(result)
    assert taken == lock and lock.read_text() == str(os.getpid())
    lock.unlink()
    result.write_text("{}")  # already done: nothing to claim
    assert claim(result) is None and not lock.exists()


# ---------------------------------------------------------------------------- a toy section
def toy_worker(runner, job):
    runner.calls.append(job["seed"])
    return {"value": job["seed"] * 10}


def toy_jobs(runner, needed):
    listed = [{"section": "toy", "name": "Toy", "seed": s} for s in (1, 2)]
    runner.execute(listed, "toy")
    return listed


def toy_render(runner, listed, figures):
    rows = [
        f"| {j['seed']}{runner.stale_mark([j])} | {runner.read(j)['value']} |"
        for j in listed
        if runner.cached(j)
    ]
    return "## Toy\n" + "\n".join(rows) + runner.notes(listed)


TOY = Section(name="toy", order=1, jobs=toy_jobs, render=toy_render, worker=toy_worker)


def toy_runner(tmp_path, code, **options):
    runner = Runner(
        {"quick": True},
        Options(quick=True, results=tmp_path / "results", **options),
        {"toy": TOY},
        code_versions={"toy": code},
    )
    runner.calls = []
    return runner


def test_the_cache_key_changes_with_the_code_hash(tmp_path):
    job = {"section": "toy", "name": "Toy", "seed": 1}
    assert cache_key(job, "aaa") != cache_key(job, "bbb")
    assert cache_key(job, "aaa").startswith(job_stem(job))
    old, new = toy_runner(tmp_path, "aaa"), toy_runner(tmp_path, "bbb")
    assert old.result_path(job) != new.result_path(job)


def write_module(path: Path, body: str, report_code: str):
    path.write_text(
        f"def worker(runner, job):\n    return {body}\n\n\n"
        f"# ---------------------------------------------------------- report\n"
        f"def render(runner, jobs, figures):\n    return {report_code!r}\n"
    )
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def test_the_code_hash_follows_the_worker_code_not_the_report_code(tmp_path):
    try:
        base = write_module(tmp_path / "bench_a.py", "{'x': 1}", "report")
        worker_edit = write_module(tmp_path / "bench_b.py", "{'x': 2}", "report")
        report_edit = write_module(tmp_path / "bench_c.py", "{'x': 1}", "other")
        hashes = [worker_code_hash(m.worker) for m in (base, worker_edit, report_edit)]
    finally:
        for name in ("bench_a", "bench_b", "bench_c"):
            sys.modules.pop(name, None)
    # the module name is not hashed, only its source and the plugin's
    assert hashes[0] != hashes[1] and hashes[0] == hashes[2]


# A package shaped like recbole_diffrec: a registry importing two model modules that
# share a base, one with a helper of its own, and a trainer that imports the checks.
FAKE_PACKAGE = {
    "recbole_diffrec/__init__.py": b"from .registry import get_model\n",
    "recbole_diffrec/registry.py": b"from .models.alpha import Alpha, AlphaPlus\n"
    b"from .models.beta import Beta as B\n",
    "recbole_diffrec/trainer.py": b"from .models.checks import RULES\n"
    b"def f():\n    from .core import step\n",
    "recbole_diffrec/core/__init__.py": b"",
    "recbole_diffrec/core/step.py": b"import torch\n",
    "recbole_diffrec/models/__init__.py": b"",
    "recbole_diffrec/models/checks.py": b"RULES = ()\n",
    "recbole_diffrec/models/base.py": b"from .checks import RULES\n",
    "recbole_diffrec/models/helper.py": b"X = 1\n",
    "recbole_diffrec/models/alpha.py": b"from . import base\nfrom .helper import X\n"
    b"class Alpha: config_files = ('Alpha.yaml', 'Common.yaml')\n"
    b"class AlphaPlus(Alpha): pass\n",
    "recbole_diffrec/models/beta.py": b"from .base import RULES\nclass Beta: pass\n",
    "recbole_diffrec/properties/overall.yaml": b"a: 1\n",
    "recbole_diffrec/properties/model/Alpha.yaml": b"b: 1\n",
    "recbole_diffrec/properties/model/AlphaPlus.yaml": b"b: 2\n",
    "recbole_diffrec/properties/model/Common.yaml": b"c: 1\n",
    "recbole_diffrec/properties/model/Beta.yaml": b"d: 1\n",
}


def short(paths):
    return {p[len("recbole_diffrec/") :] for p in paths}


def test_a_models_code_hash_covers_its_own_files_and_the_shared_ones_only():
    shared = {
        "__init__.py",
        "registry.py",
        "trainer.py",
        "core/__init__.py",
        "core/step.py",  # imported inside a function: still counted
        "models/__init__.py",
        "models/checks.py",  # imported by the trainer: shared by every model
        "properties/overall.yaml",
    }
    alpha = {
        "models/alpha.py",
        "models/base.py",
        "models/helper.py",
        "properties/model/Alpha.yaml",
        "properties/model/AlphaPlus.yaml",  # a class defined in its module
        "properties/model/Common.yaml",  # a yaml its module names
    }
    beta = {"models/beta.py", "models/base.py", "properties/model/Beta.yaml"}
    assert short(model_scoped_files(FAKE_PACKAGE, "Alpha")) == shared | alpha
    assert short(model_scoped_files(FAKE_PACKAGE, "AlphaPlus")) == shared | alpha
    assert short(model_scoped_files(FAKE_PACKAGE, "B")) == shared | beta  # as named
    assert short(model_scoped_files(FAKE_PACKAGE, "EASE")) == shared  # not a plugin's
    assert short(model_scoped_files(FAKE_PACKAGE, None)) == shared
    assert model_scoped_files(FAKE_PACKAGE, "Alpha") == sorted(
        model_scoped_files(FAKE_PACKAGE, "Alpha"), key=Path
    )


def test_the_real_packages_model_scopes():
    from benchmarks.codeversion import ROOT as root, package_files

    sources = {os.path.relpath(p, root): p.read_bytes() for p in package_files()}
    models = "recbole_diffrec/models/"
    scoped = {
        m: set(model_scoped_files(sources, m))
        for m in ("EASE", "DiffRec", "TDiffRec", "GFCF", "DiffuRec")
    }
    assert models + "checks.py" in scoped["EASE"]
    assert not {models + f for f in ("base.py", "diffrec.py", "graph_filters.py")} & (
        scoped["EASE"]
    )
    assert models + "diffrec.py" in scoped["DiffRec"]
    assert models + "graph_filters.py" not in scoped["DiffRec"]
    assert models + "graph_filters.py" in scoped["GFCF"]
    assert models + "diffrec.py" not in scoped["GFCF"]
    assert models + "sequential.py" in scoped["DiffuRec"]
    # T-DiffRec is DiffRec and L-DiffRec's subclass module: their files and yaml count.
    assert {models + "diffrec.py", models + "ldiffrec.py"} <= scoped["TDiffRec"]
    assert {
        f"recbole_diffrec/properties/model/{n}.yaml"
        for n in ("DiffRec", "LDiffRec", "TDiffRec")
    } <= scoped["TDiffRec"]
    # The diffusion core and the trainer reach every model.
    for files in scoped.values():
        assert {"recbole_diffrec/trainer.py", "recbole_diffrec/registry.py"} <= files
        assert "recbole_diffrec/diffusion/gaussian_diffusion.py" in files
    assert len({len(f) for f in scoped.values()}) > 1


def test_the_tuned_sections_results_are_keyed_by_their_models_code():
    sections = registry()
    tuned, scale = sections["tuned"], sections["scale"]
    assert tuned.code_hash("GFCF") != tuned.code_hash("DiffRec")
    assert tuned.code_hash("EASE") == tuned.code_hash("ItemKNN")  # RecBole's: shared
    assert scale.code_hash("GFCF") == scale.code_hash("DiffRec")  # whole package
    assert {n for n, s in sections.items() if s.hash_by_model} == {
        "tuned",
        "accuracy",
        "stopping",
        "sequential",
    }
    runner = Runner({"quick": True}, Options(quick=True), sections)
    gfcf = {"section": "tuned", "name": "d-GFCF", "model": "GFCF", "seed": 1}
    ease = {"section": "tuned", "name": "d-EASE", "model": "EASE", "seed": 1}
    assert runner.result_path(gfcf).stem.endswith(tuned.code_hash("GFCF"))
    assert runner.result_path(ease).stem.endswith(tuned.code_hash("EASE"))
    with pytest.raises(ValueError, match="names no model"):
        runner.result_path({"section": "tuned", "name": "d-x", "seed": 1})


def test_results_of_older_code_are_read_marked_stale_and_rerun_only_on_request(
    tmp_path,
):
    old = toy_runner(tmp_path, "old")
    listed = toy_jobs(old, {})
    assert old.calls == [1, 2] and not any(old.stale(j) for j in listed)
    assert old.read(listed[0])["code_hash"] == "old"

    new = toy_runner(tmp_path, "new")
    listed = toy_jobs(new, {})
    assert new.calls == []  # cached results are not recomputed by default
    assert all(new.cached(j) and new.stale(j) for j in listed)
    text = toy_render(new, listed, tmp_path)
    assert f"| 1{STALE_MARK} | 10 |" in text
    assert "**Stale: 2 of 2 results come from older code** (0 of them" in text
    assert "2 from older code" in report.code_versions_line(new)

    refresh = toy_runner(tmp_path, "new", refresh_stale=True)
    toy_jobs(refresh, {})
    assert refresh.calls == [1, 2]
    assert not any(refresh.stale(j) for j in listed)
    assert (
        len(list((tmp_path / "results" / "toy").glob("*.json"))) == 2
    )  # old ones gone
    text = toy_render(refresh, listed, tmp_path)
    assert STALE_MARK not in text and "Stale" not in text
    assert "All 2 results shown come from this checkout" in report.code_versions_line(
        refresh
    )


def test_a_run_older_code_started_is_finished_with_that_code_not_started_over(
    tmp_path, capsys
):
    # A section whose job 1 was started by code "old" and interrupted (a Tune search with
    # trials done, in the tuned section); job 2 has no such run.
    started = {1: "old"}
    resumable = Section(
        **{
            **TOY.__dict__,
            "unfinished": lambda runner, job: (
                Unfinished(started[job["seed"]]) if job["seed"] in started else None
            ),
        }
    )
    finished = []

    def older_code(job, unfinished, log):
        # what benchmarks.oldcode does: run the job with that code's commit, which
        # writes the job's result under that code
        old_code = unfinished.code
        finished.append((job["seed"], old_code, log.name))
        assert log.with_suffix(".lock").is_file()  # held while it runs
        path = runner.results_dir / "toy" / f"{cache_key(job, old_code)}.json"
        path.write_text(json.dumps({"job": job, "code_hash": old_code, "value": 7}))
        return "0123456789abcdef"

    runner = toy_runner(tmp_path, "new")
    runner.sections = {"toy": resumable}
    runner.older_code = older_code
    listed = toy_jobs(runner, {})
    stem = job_stem(listed[0])
    assert finished == [(1, "old", f"{stem}-old.log")]
    assert runner.calls == [2]  # only the job nobody had started ran with this code
    assert runner.stale(listed[0]) and runner.read(listed[0])["value"] == 7
    assert not runner.stale(listed[1])
    assert not list((tmp_path / "results" / "toy").glob("*.lock"))
    assert "finished with code old (commit 0123456789)" in capsys.readouterr().out

    # A suite process of that code already on it: nothing runs here.
    started = {3: "old"}
    job = {"section": "toy", "name": "Toy", "seed": 3}
    busy = tmp_path / "results" / "toy" / f"{cache_key(job, 'old')}.json"
    held = claim(busy)
    runner.execute([job], "toy")
    assert runner.calls == [2] and len(finished) == 1 and not runner.cached(job)
    held.unlink()

    # No commit of that code in this clone: the job starts over with this code.
    runner.older_code = lambda job, unfinished, log: None
    runner.execute([job], "toy")
    assert runner.calls == [2, 3] and not runner.stale(job)
    assert "no commit in this clone's history" in capsys.readouterr().out

    # Its run failing stops the suite with one error naming the job and the code.
    def failing(job, unfinished, log):
        raise RuntimeError("the run with commit 0123456789 failed; see x.log")

    started = {4: "old"}
    runner.older_code = failing
    with pytest.raises(SystemExit, match=r"Toy \(4\): finishing it with code old"):
        runner.execute([{"section": "toy", "name": "Toy", "seed": 4}], "toy")
    assert not list((tmp_path / "results" / "toy").glob("*.lock"))


def test_prepare_and_safeguard_hooks_surround_every_run_this_code_or_older(tmp_path):
    # The tuned section restores a lost search in `prepare` and keeps its snapshot in
    # `safeguard`; here a toy section records when the runner calls them.
    events = []

    def prepare(runner, job):
        lock = runner.result_path(job).with_suffix(".lock")
        events.append(("prepare", job["seed"], lock.is_file()))

    @contextmanager
    def safeguard(runner, job, code):
        events.append(("enter", job["seed"], code))
        try:
            yield
        except BaseException as err:
            events.append(("failed", job["seed"], type(err).__name__))
            raise
        # a run of this code has written its result by now
        events.append(("exit", job["seed"], runner.cached(job)))

    hooked = Section(
        **{
            **TOY.__dict__,
            "prepare": prepare,
            "safeguard": safeguard,
            "unfinished": lambda runner, job: (
                Unfinished("old") if job["seed"] == 2 else None
            ),
        }
    )
    runner = toy_runner(tmp_path, "new")
    runner.sections = {"toy": hooked}
    runner.older_code = lambda job, unfinished, log: "0123456789abcdef"
    toy_jobs(runner, {})
    assert events == [
        ("prepare", 1, True),  # under the job's lock
        ("enter", 1, "new"),
        ("exit", 1, True),
        ("prepare", 2, True),
        ("enter", 2, "old"),  # finished by the code that started it
        ("exit", 2, False),  # (a stub: no result of the old code was written)
    ]
    assert runner.calls == [1]

    def failing(job, unfinished, log):
        raise RuntimeError("the run with commit 0123456789 failed; see x.log")

    events.clear()
    runner.older_code = failing
    with pytest.raises(SystemExit):
        runner.execute([{"section": "toy", "name": "Toy", "seed": 2}], "toy")
    assert events == [("prepare", 2, True), ("enter", 2, "old")] + [
        ("failed", 2, "RuntimeError")
    ]


def test_a_legacy_result_without_a_code_hash_is_read_and_marked_unknown(tmp_path):
    runner = toy_runner(tmp_path, "now", cached_only=True)
    job = {"section": "toy", "name": "Toy", "seed": 1}
    legacy = tmp_path / "results" / "toy" / f"{job_stem(job)}.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"job": job, "value": 7}))
    listed = toy_jobs(runner, {})
    assert runner.calls == []  # --cached-only
    assert runner.cached(job) and runner.stale(job)
    text = toy_render(runner, listed, tmp_path)
    assert f"| 1{STALE_MARK} | 7 |" in text
    assert "**Pending: 1 of 2 runs not done yet** (Toy (2))" in text
    assert "(1 of them of unknown code version" in text
    assert "1 of unknown code version" in report.code_versions_line(runner)


def test_the_committed_legacy_results_are_found_and_reported_stale():
    """The first suite's result files (no code hash) keep their names: every job the
    spec lists for the scale section finds its file, read as stale."""
    sections = registry()
    runner = Runner(load_spec(False, sections), Options(cached_only=True), sections)
    listed = sections["scale"].jobs(runner, {})
    assert len(listed) == 10
    assert all(runner.cached(j) and runner.stale(j) for j in listed)
    assert runner.read(listed[0])["parameters"] > 0
    assert "10 of them of unknown code version" in runner.notes(listed)


def test_the_registry_drives_the_sections_jobs_and_render(tmp_path):
    sections = registry()
    assert list(sections) == [
        "tuned",
        "accuracy",
        "speed",
        "stopping",
        "scale",
        "steps",
        "sequential",
    ]
    assert suite.parse([], list(sections)).sections == list(sections)
    spec = load_spec(True, sections)
    assert spec["sequential"]["datasets"] == {"quick-seq": None}  # spec_file + quick
    assert spec["scale"]["items"] == [500, 1000]

    seen = []

    def first_jobs(runner, needed):
        seen.append("first")
        return ["a"]

    def second_jobs(runner, needed):
        return needed["first"] + ["b"]

    toy = {
        "first": Section("first", 1, first_jobs, lambda r, j, f: f"first {j}"),
        "second": Section(
            "second", 2, second_jobs, lambda r, j, f: f"second {j}", needs=("first",)
        ),
    }
    runner = Runner({}, Options(), toy)
    parts = suite.build_parts(runner, toy, ["second", "first"], tmp_path)
    assert list(parts) == ["first", "second"]  # registry order, not the command's
    assert parts == {"first": "first ['a']", "second": "second ['a', 'b']"}
    assert seen == ["first"]  # a section's jobs are listed once

    # A run of some sections still writes the whole report: the others are rendered
    # from the cache by a runner that runs nothing.
    modes = []

    def third_jobs(runner, needed):
        modes.append(runner.options.cached_only)
        return ["c"]

    toy["third"] = Section("third", 3, third_jobs, lambda r, j, f: f"third {j}")
    parts = suite.build_parts(runner, toy, ["third"], tmp_path)
    assert parts == {
        "first": "first ['a']",
        "second": "second ['a', 'b']",
        "third": "third ['c']",
    }
    assert modes == [False]  # the chosen section was listed (and run) for real
    assert seen == ["first", "first"]
    view = runner.cached_view()
    assert view.options.cached_only and view.shown is runner.shown


def named_jobs(runner, needed):
    listed = [
        {"section": "toy", "name": name, "seed": seed}
        for name, seed in (("ds-A", 1), ("ds-B", 2), ("other-A", 3))
    ]
    runner.execute(listed, "toy")
    return listed


def test_only_runs_the_named_jobs_and_leaves_the_others_pending(tmp_path):
    named = Section(
        name="toy", order=1, jobs=named_jobs, render=toy_render, worker=toy_worker
    )

    def run(*only):
        runner = Runner(
            {"quick": True},
            Options(quick=True, results=tmp_path / "results", only=only),
            {"toy": named},
            code_versions={"toy": "c1"},
        )
        runner.calls = []
        listed = named_jobs(runner, {})
        assert runner.unmatched_only() == [p for p in only if p == "nope"]
        return runner.calls, [runner.cached(j) for j in listed]

    assert run("ds-B", "nope") == ([2], [False, True, False])
    assert run("*-A") == ([1, 3], [True, True, True])
    assert run("*") == ([], [True, True, True])  # all done: nothing reruns
    assert suite.parse(["--only", "ds-A", "x-*"], ["toy"]).only == ["ds-A", "x-*"]
    with pytest.raises(SystemExit):
        suite.parse(["--only", "ds-A", "--cached-only"], ["toy"])


def test_only_with_a_name_no_job_has_stops_with_the_names_there_are(tmp_path):
    with pytest.raises(SystemExit, match="nope-EASE: no job .* quick-synth-EASE"):
        suite.main(
            ["--quick", "--results", str(tmp_path), "--sections", "tuned"]
            + ["--only", "nope-EASE"]
        )
    assert not (tmp_path / "RESULTS.md").exists()  # nothing rewritten


def test_the_suite_refuses_to_run_as_a_script_and_conflicting_flags():
    script = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--quick"],
        capture_output=True,
        text=True,
    )
    assert script.returncode == 1 and "python -m benchmarks.suite" in script.stderr
    with pytest.raises(SystemExit):
        suite.parse(["--cached-only", "--refresh-stale"], ["accuracy"])
    for other in ("--cached-only", "--refresh-stale"):
        with pytest.raises(SystemExit):
            suite.parse(["--revalidate", other], ["accuracy"])


# ---------------------------------------------------------------------------- revalidation
SCALE = {"factor": 10}  # the toy model's "behaviour": a code change may alter it


def witness_worker(runner, job):
    runner.calls.append(job["seed"])
    extra = runner.result_path(job).with_suffix(".extra.txt")  # a companion file
    extra.write_text(str(job["seed"]))
    value = job["seed"] * SCALE["factor"]
    return {"value": value, "test": {"m": value}}


def witness_differ(old: Path, new: Path):
    before, after = (json.loads(p.read_text())["value"] for p in (old, new))
    return None if before == after else f"value: {before} -> {after}"


WITNESSED = Section(
    name="toy",
    order=1,
    jobs=toy_jobs,
    render=toy_render,
    worker=witness_worker,
    witnesses=lambda listed: [(listed[0], listed[1:])],
    differ=witness_differ,
)


def witnessed_runner(tmp_path, code):
    runner = Runner(
        {"quick": True},
        Options(quick=True, results=tmp_path / "results"),
        {"toy": WITNESSED},
        code_versions={"toy": code},
    )
    runner.calls = []
    return runner


def test_revalidate_carries_results_forward_only_when_the_witness_is_unchanged(
    tmp_path,
):
    folder = tmp_path / "results" / "toy"
    old = witnessed_runner(tmp_path, "old")
    listed = toy_jobs(old, {})
    assert old.calls == [1, 2]

    # A code change that leaves the numbers alone: only the witness reruns.
    new = witnessed_runner(tmp_path, "new")
    line = new.revalidate(listed[0], listed[1:], witness_differ)
    assert new.calls == [1]
    assert "identical to code old; 1 result(s) of the group carried forward" in line
    assert not any(new.stale(j) for j in listed)
    carried = new.read(listed[1])
    assert carried["code_hash"] == "new" and carried["value"] == 20
    check = {
        "from_code": "old",
        "witness": job_stem(listed[0]),
        "identical": True,
        "against": "its stored result",
    }
    assert carried["revalidated"] == [check]
    assert new.read(listed[0])["revalidated"] == [check]  # the witness keeps it too
    # the companion file moved with its result; nothing of the old code is left
    assert new.result_path(listed[1]).with_suffix(".extra.txt").read_text() == "2"
    assert sorted(p.name.rsplit("-", 1)[1] for p in folder.iterdir()) == [
        "new.extra.txt",
        "new.extra.txt",
        "new.json",
        "new.json",
    ]
    # nothing left to do: a second revalidation runs nothing
    assert "nothing to revalidate (already current)" in new.revalidate(
        listed[0], listed[1:], witness_differ
    )
    assert new.calls == [1]

    # A code change that alters the numbers: nothing is carried.
    SCALE["factor"] = 11
    try:
        newer = witnessed_runner(tmp_path, "newer")
        line = newer.revalidate(listed[0], listed[1:], witness_differ)
    finally:
        SCALE["factor"] = 10
    assert "the stored result differs from this code's rerun: value: 10 -> 11" in line
    assert "stay stale" in line
    assert newer.read(listed[0])["value"] == 11 and not newer.stale(listed[0])
    assert newer.stale(listed[1]) and newer.read(listed[1])["code_hash"] == "new"
    assert "revalidated" not in newer.read(listed[0])


def fake_reference(value, calls):
    """A stand-in for benchmarks.oldcode's rerun of the old code on this machine."""

    def reference(old_code, witness, folder):
        calls.append(old_code)
        if value is None:
            return None, "no commit has it"
        path = folder / "old.json"
        path.write_text(json.dumps({"value": value, "code_hash": old_code}))
        return path, "commit abc"

    return reference


def test_revalidate_reruns_the_old_code_here_when_the_stored_result_differs(tmp_path):
    old = witnessed_runner(tmp_path, "old")
    listed = toy_jobs(old, {})
    SCALE["factor"] = 11  # this machine computes 11 where the stored run had 10
    try:
        # The old code, rerun here, also gives 11: the stored result's machine made the
        # difference, not the code change; the group is carried forward.
        new = witnessed_runner(tmp_path, "new")
        calls = []
        line = new.revalidate(
            listed[0], listed[1:], witness_differ, fake_reference(11, calls)
        )
    finally:
        SCALE["factor"] = 10
    assert calls == ["old"] and new.calls == [1]
    assert "rerun here (commit abc) it is identical to code new" in line
    assert "1 result(s) of the group carried forward" in line
    record = new.read(listed[1])["revalidated"][-1]
    assert record["against"] == "a rerun of code old on this machine (commit abc)"
    assert record["stored_result_differed"] == "value: 10 -> 11"
    assert not new.stale(listed[1]) and new.read(listed[1])["value"] == 20


@pytest.mark.parametrize("value", [12, None])
def test_revalidate_keeps_results_stale_when_the_old_code_here_differs_or_is_missing(
    tmp_path, value
):
    old = witnessed_runner(tmp_path, "old")
    listed = toy_jobs(old, {})
    SCALE["factor"] = 11
    try:
        new = witnessed_runner(tmp_path, "new")
        calls = []
        line = new.revalidate(
            listed[0], listed[1:], witness_differ, fake_reference(value, calls)
        )
    finally:
        SCALE["factor"] = 10
    assert calls == ["old"]
    if value is None:
        assert "cannot rerun it here (no commit has it)" in line
    else:
        assert "it differs from code new (value: 12 -> 11)" in line
    assert new.stale(listed[1]) and new.read(listed[1])["code_hash"] == "old"


def test_revalidate_checks_a_current_witness_against_late_results_of_old_code(
    tmp_path,
):
    old = witnessed_runner(tmp_path, "old")
    listed = toy_jobs(old, {})
    # The witness is rerun with new code (say by an earlier --revalidate whose stored
    # comparison failed); the seed-2 result is still old code's.
    new = witnessed_runner(tmp_path, "new")
    new.run_job(listed[0])
    calls = []
    line = new.revalidate(
        listed[0], listed[1:], witness_differ, fake_reference(10, calls)
    )
    assert calls == ["old"] and new.calls == [1]  # only the old code was rerun
    assert "code old: rerun here (commit abc) it is identical" in line
    assert not new.stale(listed[1])

    # A result of the old code that turns up after its group passed the check (a run
    # that was still going) is carried on the recorded check, with no rerun.
    late = dict(listed[1], seed=3)
    old.run_job(late)
    calls.clear()
    line = new.revalidate(listed[0], [*listed[1:], late], witness_differ, None)
    assert calls == [] and "passed its check earlier; 1 result(s) carried" in line
    assert new.read(late)["revalidated"][-1]["carried_later"] is True


def test_a_second_process_does_not_rerun_an_old_code_check_under_way(tmp_path):
    """Two suite processes revalidating together: while one reruns the old code for a
    group, the other moves on and leaves the group as it is; once the lock is free the
    group is checked."""
    old = witnessed_runner(tmp_path, "old")
    listed = toy_jobs(old, {})
    new = witnessed_runner(tmp_path, "new")
    new.run_job(listed[0])  # the witness is current, seed 2 still old code's
    path = new.result_path(listed[0])
    held = path.with_name(f"{path.stem}.check-old.lock")
    held.write_text(str(os.getpid()))  # a live process is checking the old code
    calls = []
    line = new.revalidate(
        listed[0], listed[1:], witness_differ, fake_reference(10, calls)
    )
    assert calls == [] and "code old: another suite process is checking it" in line
    assert new.stale(listed[1])

    held.unlink()  # that process finished
    line = new.revalidate(
        listed[0], listed[1:], witness_differ, fake_reference(10, calls)
    )
    assert calls == ["old"] and "1 result(s) of the group carried forward" in line
    assert not new.stale(listed[1]) and not held.exists()


def test_an_old_code_rerun_longer_than_a_session_is_not_tried(tmp_path, monkeypatch):
    old = witnessed_runner(tmp_path, "old")
    listed = toy_jobs(old, {})
    new = witnessed_runner(tmp_path, "new")
    new.run_job(listed[0])
    path = new.result_path(listed[0])
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "time_to_result": 5 * 3600.0}))
    calls = []
    line = new.revalidate(
        listed[0], listed[1:], witness_differ, fake_reference(10, calls)
    )
    assert calls == [] and "not rerun here (the witness took 5.0 h" in line
    assert new.stale(listed[1])

    monkeypatch.setenv("BENCH_REFERENCE_MAX_SECONDS", str(6 * 3600))
    line = new.revalidate(
        listed[0], listed[1:], witness_differ, fake_reference(10, calls)
    )
    assert calls == ["old"] and not new.stale(listed[1])


# ---------------------------------------------------------------------------- end to end
def run_suite(results, *extra):
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.suite", "--quick", "--results", str(results)]
        + list(extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def make_legacy(path: Path) -> Path:
    """The result as the first suite wrote it: no code hash in the name or the data."""
    data = json.loads(path.read_text())
    del data["code_hash"]
    legacy = path.with_name(path.name.rsplit("-", 1)[0] + ".json")
    legacy.write_text(json.dumps(data))
    path.unlink()
    return legacy


def check_quick_report(report_text: str, results: Path) -> None:
    for heading in (
        "## Accuracy",
        "## Speed and memory",
        "## Scale",
        "## Fewer reverse steps",
        "## Sequential recommenders",
        "## Early stopping",
        "## Tuned head-to-head",
    ):
        assert heading in report_text
    figures = ("accuracy", "speed", "scale", "steps", "sequential", "stopping", "tuned")
    for figure in figures:
        assert (results / "figures" / f"{figure}.png").stat().st_size > 1000
        assert f"figures/{figure}.png" in report_text
    assert "QUICK MODE" in report_text
    assert "results shown come from this checkout's code" in report_text
    # Every model of the suite has a row, with mean +- std over the seeds.
    for model in ("BPR", "LightGCN", "MultiVAE", "CDAE", "EASE", "DiffRec", "LDiffRec"):
        assert f"| {model} |" in report_text
    for model in ("TDiffRec", "LTDiffRec", "recbole.DiffRec"):
        assert f"| {model} |" in report_text
    assert "±" in report_text
    for model in ("DiffuRec", "SeqDiffRec", "SASRec", "BERT4Rec", "GRU4Rec"):
        assert f"| quick-seq | {model} |" in report_text
    assert "**not masked**" in report_text  # the protocol is named
    # The long-patience reruns select what the accuracy runs kept under patience 2.
    assert "every curve selects the checkpoint its accuracy run kept" in report_text
    assert "| LDiffRec | " in report_text.split("## Early stopping")[1]
    # The tuned head-to-head: each model's row with its trials, seeds and rerun check, and
    # a verdict with a paired test.
    tuned = report_text.split("## Tuned head-to-head")[1].split("\n## ")[0]
    for model in ("EASE", "DiffRec"):
        row = next(line for line in tuned.splitlines() if line.startswith(f"| {model}"))
        cells = [c.strip() for c in row.split("|")]
        assert cells[4:6] == ["2", "2"]  # trials, seeds
        assert cells[-2] == "yes"  # best.yaml reruns to the trial's test numbers
    assert "**Verdict on quick-synth:" in tuned
    assert len(list(results.glob("tuned/*.users.npz"))) == 4


@pytest.mark.slow
def test_quick_suite_writes_every_section_and_reuses_cached_runs(tmp_path):
    results = tmp_path / "quick"
    first = run_suite(results)
    assert first.returncode == 0, first.stderr[-3000:]
    check_quick_report((results / "RESULTS.md").read_text(), results)

    runs = sorted(results.rglob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    # Each tuned search records how long its trials ran, within its process's wall time.
    searches = [
        json.loads(p.read_text())
        for p in runs
        if p.parent.name == "tuned" and p.name.endswith(".json") and "--" in p.name
    ]
    assert len(searches) == 2  # EASE and DiffRec on the quick data
    for search in searches:
        assert 0 < search["search_active_seconds"] <= search["search_seconds"]
    second = run_suite(results)
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(results.rglob("*.json")) == runs
    assert all(p.stat().st_mtime_ns == stamps[p] for p in runs)  # nothing re-ran
    assert not list(results.rglob("*.lock")) and not list(results.rglob("*.partial"))

    # --cached-only runs nothing: a missing run is reported as pending, not rerun, and
    # a result from the first suite (no code hash) is shown, marked stale.
    missing = next(p for p in runs if "sequential" in p.name and "GRU4Rec" in p.name)
    missing.unlink()
    legacy = make_legacy(next(p for p in runs if "scale-LDiffRec-500-" in p.name))
    third = run_suite(results, "--cached-only")
    assert third.returncode == 0, third.stderr[-3000:]
    assert not missing.exists() and legacy.exists()
    text = (results / "RESULTS.md").read_text()
    assert "**Pending: 1 of 5 runs not done yet** (quick-seq-GRU4Rec (2020))" in text
    assert "| quick-seq | GRU4Rec |" not in text
    assert "| quick-seq | SASRec |" in text
    assert f"| 500 | 573 | 16,568 | LDiffRec{STALE_MARK} |" in text
    assert "**Stale: 1 of 4 results come from older code** (1 of them" in text
    assert "1 of unknown code version" in text.split("## Accuracy")[0]


def test_bench_extra_is_read_from_setup_cfg():
    # RecBole's LDiffRec imports kmeans_pytorch without declaring it; the extra carries it.
    assert suite.extra_requirements("bench") == ["kmeans-pytorch"]
    assert "pytest-xdist" in suite.extra_requirements("dev")
    assert suite.extra_requirements("no-such-extra") == []


def test_suite_refuses_to_start_without_the_bench_extra(monkeypatch, tmp_path):
    monkeypatch.setattr(
        suite, "extra_requirements", lambda extra: ["no-such-dist-for-recbole-diffrec"]
    )
    with pytest.raises(SystemExit) as stop:
        suite.main(["--sections", "steps", "--results", str(tmp_path)])
    message = str(stop.value)
    assert "no-such-dist-for-recbole-diffrec" in message
    assert 'pip install -e ".[bench]"' in message
    assert not any(tmp_path.rglob("*.json"))  # nothing ran
    # Reporting the cache needs nothing beyond the package.
    monkeypatch.setattr(suite, "write_report", lambda *a, **k: None)
    monkeypatch.setattr(suite, "build_parts", lambda *a, **k: {})
    suite.main(["--cached-only", "--sections", "steps", "--results", str(tmp_path)])


def test_vouch_by_record_carries_a_result_its_witness_reproduces_and_only_that(
    tmp_path,
):
    """A result no witness of its own code can vouch for (a search whose seeds all ran
    after a code change) is carried on the numbers it recorded, when the witness run
    with the new code reproduces them exactly."""
    old = witnessed_runner(tmp_path, "old")
    witness, vouched = toy_jobs(old, {})
    new = witnessed_runner(tmp_path, "new")
    record = {"test": {"m": 10}}  # what the vouched result recorded for that setting
    line = new.vouch_by_record(witness, vouched, record, "the recorded trial")
    assert new.calls == [1]  # the witness ran with the new code
    assert "reproduces the recorded trial of code old; 1 result carried" in line
    assert not new.stale(vouched)
    check = new.read(vouched)["revalidated"][-1]
    assert check["against"] == "the recorded trial" and check["by_record"] == ["test"]
    assert check["from_code"] == "old" and check["identical"] is True
    assert "nothing to vouch for by record" in new.vouch_by_record(
        witness, vouched, record, "the recorded trial"
    )
    assert new.calls == [1]

    # A code change that alters the numbers: the witness is run, the result kept stale.
    newer = witnessed_runner(tmp_path, "newer")
    SCALE["factor"] = 11
    try:
        line = newer.vouch_by_record(witness, vouched, record, "the recorded trial")
    finally:
        SCALE["factor"] = 10
    assert "differs from the recorded trial of code new (test m: 10 -> 11)" in line
    assert newer.stale(vouched) and newer.read(witness)["test"] == {"m": 11}
    # The witness of this code is not run again (it may have taken sessions); a
    # missing recorded value is a difference too.
    line = newer.vouch_by_record(witness, vouched, {"valid": {"m": 10}}, "a record")
    assert newer.calls == [1] and "(valid m: 10 -> None)" in line

    # Another process running the witness: this one moves on.
    newest = witnessed_runner(tmp_path, "newest")
    held = newest.result_path(witness).with_suffix(".lock")
    held.parent.mkdir(parents=True, exist_ok=True)
    held.write_text(str(os.getpid()))  # a live process holds it
    line = newest.vouch_by_record(witness, vouched, record, "the recorded trial")
    assert "another suite process is running it" in line and newest.calls == []
