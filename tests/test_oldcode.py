"""Rerunning a job with older code on this machine (benchmarks/oldcode.py), as
``python -m benchmarks.suite --revalidate`` does when a stored result differs: the code
hash computed from git equals the suite's own, the commit of a hash is found, and a job
reruns in a throwaway worktree of that commit."""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import oldcode
from benchmarks.sections import registry

ROOT = Path(__file__).resolve().parents[1]
# Under pytest-xdist these tests stay on one worker: they add and remove git worktrees of
# this checkout.
pytestmark = pytest.mark.xdist_group("git-worktrees")


def git(*args):
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


def module_file(section):
    return Path(inspect.getsourcefile(registry()[section].worker))


@pytest.fixture
def added_worktrees(monkeypatch):
    """The paths of the worktrees ``benchmarks.oldcode`` adds during the test (a suite
    running beside the tests may have worktrees of its own)."""
    added = []
    real_git = oldcode.git

    def recording_git(root, *args):
        if args[:2] == ("worktree", "add"):
            added.append(Path(args[-2]))
        return real_git(root, *args)

    monkeypatch.setattr(oldcode, "git", recording_git)
    return added


def assert_removed(worktrees):
    assert worktrees  # the run did make its worktree
    listed = git("worktree", "list", "--porcelain").splitlines()
    for path in worktrees:
        assert f"worktree {path}" not in listed and not path.exists()


needs_git = pytest.mark.skipif(
    not (ROOT / ".git").exists()
    or git("rev-parse", "--is-shallow-repository") != "false",
    reason="needs a full git clone of the project",
)


@needs_git
@pytest.mark.parametrize(
    "section, model",
    [("tuned", "GFCF"), ("tuned", "EASE"), ("tuned", "TDiffRec"), ("scale", None)],
)
def test_the_code_hash_from_git_is_the_suites_own(section, model):
    worker = module_file(section)
    if git("status", "--porcelain", "--", *oldcode.hashed_paths(worker)):
        pytest.skip("the hashed files have uncommitted changes")
    by_model = registry()[section].hash_by_model
    assert by_model == (section != "scale")
    current = registry()[section].code_hash(model)
    assert oldcode.hash_at("HEAD", worker, model=model, by_model=by_model) == current
    commit = oldcode.commit_for(current, worker, model=model)
    assert commit is not None
    assert oldcode.hash_at(commit, worker, model=model, by_model=by_model) == current
    assert oldcode.commit_for("000000000000", worker, limit=3, model=model) is None


@needs_git
def test_a_commit_is_found_by_its_whole_package_hash_too():
    # Results written before the tuned section was hashed by model record the whole
    # package's hash; --revalidate must still find their commit.
    worker = module_file("tuned")
    head = git("rev-parse", "HEAD")
    whole = oldcode.hash_at(head, worker)
    assert whole != oldcode.hash_at(head, worker, model="GFCF", by_model=True)
    found = oldcode.commit_for(whole, worker, model="GFCF")
    assert found is not None and oldcode.hash_at(found, worker) == whole


@pytest.mark.slow
@needs_git
def test_a_job_reruns_with_the_code_of_a_commit_in_a_throwaway_worktree(
    tmp_path, added_worktrees
):
    # A tuned seed run (the witness --revalidate reruns), on the --quick data.
    job = {"section": "tuned", "name": "quick-synth-EASE", "phase": "seed"}
    job.update(dataset="quick-synth", model="EASE", settings={"reg_weight": 100.0})
    job.update(common={"show_progress": False}, per_user_metric="ndcg@20", seed=2020)
    path, result = oldcode.rerun_at("HEAD", job, tmp_path, quick=True)
    tuned = module_file("tuned")
    assert result["code_hash"] == oldcode.hash_at(
        "HEAD", tuned, model="EASE", by_model=True
    )
    assert path.parent == tmp_path / "tuned" and result["job"] == job
    assert 0 < result["test"]["ndcg@20"] <= 1
    assert path.with_suffix(".users.npz").is_file()  # its per-user scores beside it
    assert_removed(added_worktrees)

    with pytest.raises(subprocess.CalledProcessError):
        oldcode.rerun_at("no-such-commit", job, tmp_path)


@pytest.mark.slow
@needs_git
def test_a_search_older_code_started_is_finished_with_that_code(
    tmp_path, added_worktrees
):
    # The --quick suite's EASE search, run by the committed code (HEAD) in a worktree:
    # the Tune folder it leaves stands for a search a code change interrupted (its
    # result file removed), and a suite of other code ("new") finishes it with HEAD's.
    from benchmarks.runner import Options, Runner
    from benchmarks.spec import load_spec

    sections = registry()
    options = Options(quick=True, results=tmp_path)
    runner = Runner(
        load_spec(True, sections), options, sections, code_versions={"tuned": "new"}
    )
    listed = sections["tuned"].jobs(runner.cached_view(), {})
    search = listed["searches"][("quick-synth", "EASE")]
    first, result = oldcode.rerun_at("HEAD", search, tmp_path, quick=True)
    old_code = result["code_hash"]
    tune = tmp_path / "tuned" / "tune"
    folders = sorted(tune.iterdir())
    assert [f.name.split("-")[-1] for f in folders] == [old_code]
    trials = {t["trial"] for t in result["trials"]}
    first.unlink()  # interrupted before its result was written
    assert not runner.cached(search)

    runner.older_code = oldcode.older_code_runner(sections, tmp_path, quick=True)
    runner.execute([search], "search")
    assert runner.cached(search) and runner.stale(search)  # for --revalidate
    finished = runner.read(search)
    assert finished["code_hash"] == old_code
    assert sorted(tune.iterdir()) == folders  # resumed: no new search started
    assert {t["trial"] for t in finished["trials"]} == trials
    assert finished["best_settings"] == result["best_settings"]
    # It resumed from a worktree beside this checkout, its manifest moved there, and
    # back to this checkout once done, with its best.yaml and result.
    moved = json.loads((folders[0] / "search.json").read_text())["moved"]
    assert len(moved) == 2 and Path(moved[0]["to"]).parent == ROOT.parent
    assert moved[1] == {"from": moved[0]["to"], "to": str(ROOT)}
    assert finished["moved"] == moved[1:]
    assert f".{ROOT.name}-at-" not in finished["best_yaml"]
    assert finished["exp_dir"] == os.path.relpath(folders[0], ROOT)
    # How long its trials ran, recorded when it is moved back (older code may not).
    assert finished["search_active_seconds"] > 0
    log = runner.results_dir / "tuned" / f"{first.stem}.log"
    assert log.is_file()
    assert not list((tmp_path / "tuned").glob("*.lock"))
    assert len(added_worktrees) == 2  # the first run's and the one that finished it
    assert_removed(added_worktrees)


@needs_git
def test_worktrees_left_by_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    made = {}
    for who, pid in (("dead", dead), ("live", os.getpid())):
        made[who] = ROOT.parent / f".{ROOT.name}-at-test-{who}-{os.getpid()}"
        reason = f"{oldcode.WORKTREE_LOCK}{pid}"
        git("worktree", "add", "--detach", "--lock", "--reason", reason, str(made[who]))
    try:
        assert made["dead"].is_dir()
        assert oldcode.remove_abandoned_worktrees() == [made["dead"]]
        assert not made["dead"].exists() and made["live"].is_dir()
        assert str(made["dead"]) not in git("worktree", "list")
    finally:
        for path in made.values():
            git("worktree", "remove", "--force", "--force", str(path))
