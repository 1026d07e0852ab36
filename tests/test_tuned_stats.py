"""The tuned head-to-head's statistics and report logic (benchmarks/stats.py,
benchmarks/sections/tuned*.py) on hand-computed cases; the section's runs themselves are
exercised by the --quick suite in test_suite.py."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.sections import tuned, tuned_folders, tuned_report
from benchmarks.stats import align_users, holm, mean_ci, paired_pvalue


def test_mean_ci_is_the_student_t_interval():
    mean, half = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    # sd = sqrt(2.5), sem = sd / sqrt(5), t(4, 0.975) = 2.776445
    assert mean == 3.0
    assert half == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert mean_ci([0.3, 0.3, 0.3]) == (pytest.approx(0.3), 0.0)
    assert math.isnan(mean_ci([0.1])[1])
    with pytest.raises(ValueError, match="non-empty"):
        mean_ci([])


def test_holm_steps_down_and_stays_monotone():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    # sorted: a (x3) = 0.03, c (x2) = 0.06, b (x1) = 0.04 -> raised to 0.06 (monotone)
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert holm({"x": 0.6, "y": 0.7}) == pytest.approx({"x": 1.0, "y": 1.0})
    assert holm({"only": 0.02}) == {"only": 0.02}


def test_paired_pvalues_on_exact_cases():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    b = a - np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    # Six positive, distinct differences: the exact two-sided signed-rank p is 2 / 2**6.
    assert paired_pvalue(a, b) == pytest.approx(2 / 64)
    assert paired_pvalue(a, a) == 1.0
    # Pairs with no difference are dropped by the signed-rank test, not counted as ties.
    assert paired_pvalue(np.r_[a, 0, 0], np.r_[b, 0, 0]) == pytest.approx(2 / 64)
    noisy = np.random.default_rng(0).normal(size=200)
    assert paired_pvalue(noisy + 0.5, noisy, test="ttest") < 1e-10
    with pytest.raises(ValueError, match="allowed: wilcoxon, ttest"):
        paired_pvalue(a, b, test="sign")
    with pytest.raises(ValueError, match="one length"):
        paired_pvalue(a, b[:3])


def test_users_are_aligned_by_id_and_mismatches_refused():
    x, y = align_users([3, 1, 2], [0.3, 0.1, 0.2], [1, 2, 3], [1.0, 2.0, 3.0])
    assert x.tolist() == [0.1, 0.2, 0.3] and y.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="different users"):
        align_users([1, 2], [0.0, 0.0], [1, 3], [0.0, 0.0])


def test_per_user_ndcg_by_hand_and_against_recbole(monkeypatch):
    # hits at ranks 1 and 3, two positives: (1 + 1/log2 4) / (1 + 1/log2 3)
    topk = np.array([[1, 0, 1, 2], [0, 0, 0, 5], [0, 1, 0, 1]])
    expected = [1.5 / (1 + 1 / math.log2(3)), 0.0, (1 / math.log2(3)) / 1.0]
    assert tuned.per_user_ndcg(topk, 3) == pytest.approx(expected)

    from recbole.evaluator.metrics import NDCG

    # RecBole's NDCG reads np.float, which its Config restores on NumPy >= 1.24.
    monkeypatch.setattr(np, "float", float, raising=False)

    rng = np.random.default_rng(1)
    hits = rng.random((50, 20)) < 0.2
    positives = rng.integers(1, 30, size=50)
    ours = tuned.per_user_ndcg(np.column_stack([hits, positives]), 20)
    metric = NDCG({"topk": [20], "metric_decimal_place": 6})
    theirs = metric.metric_info(torch.from_numpy(hits).numpy(), positives)[:, 19]
    assert ours == pytest.approx(theirs)


def test_a_grid_space_is_refused_for_the_equal_budget(tmp_path, monkeypatch):
    space = tmp_path / "Grid.yaml"
    space.write_text("space:\n  reg_weight: {grid: [1.0, 2.0]}\n")
    monkeypatch.setattr(tuned, "space_file", lambda model: space)
    with pytest.raises(ValueError, match="multiplies the tuned suite's equal trial"):
        tuned.check_space("Grid")


def rows_for(scores: dict, valid: dict) -> dict:
    """Report rows: each model's per-user scores and its seed results."""
    users = np.arange(len(next(iter(scores.values()))))
    return {
        m: {
            "per_user": (users, np.asarray(s, float)),
            "results": [
                {
                    "test": {"ndcg@20": float(np.mean(s))},
                    "valid": {"recall@20": valid[m]},
                }
            ],
        }
        for m, s in scores.items()
    }


def test_family_bests_come_from_validation_and_the_verdict_follows_the_test():
    rng = np.random.default_rng(2)
    base = rng.random(300)
    rows = rows_for(
        {
            "DiffRec": base + 0.05,  # clearly better per user
            "TDiffRec": base + 0.2,  # best on test, but worse on validation
            "EASE": base,
        },
        {"DiffRec": 0.30, "TDiffRec": 0.20, "EASE": 0.25},
    )
    adjusted, bests = tuned_report.comparisons(
        {"d": rows}, ["DiffRec", "TDiffRec"], "recall@20", "wilcoxon"
    )
    assert bests == {"d": ("DiffRec", "EASE")}  # by validation, not by test
    assert set(adjusted) == {("d", "DiffRec"), ("d", "TDiffRec"), ("d", "EASE")}
    text = tuned_report.verdict("d", rows, adjusted, "DiffRec", "EASE")
    assert "the diffusion family wins" in text and "DiffRec beats EASE" in text

    # As many users gain as lose, by the same amounts: no significant difference.
    tied = rows_for(
        {"DiffRec": base + np.tile([0.01, -0.01], 150), "EASE": base},
        {"DiffRec": 0.3, "EASE": 0.3},
    )
    adjusted, _ = tuned_report.comparisons(
        {"d": tied}, ["DiffRec"], "recall@20", "wilcoxon"
    )
    assert adjusted[("d", "DiffRec")] > 0.5
    assert "no significant difference" in tuned_report.verdict(
        "d", tied, adjusted, "DiffRec", "EASE"
    )
    assert "No verdict" in tuned_report.verdict("d", tied, adjusted, None, "EASE")


def test_tuned_revalidation_compares_metrics_and_every_users_score(tmp_path):
    from benchmarks.sections.tuned_report import differ, users_file, witnesses

    folder = Path(__file__).resolve().parents[1] / "benchmarks/results/tuned"
    committed = sorted(folder.glob("tuned-ml-1m_clean-TDiffRec-2020-*.json"))[0]
    old = tmp_path / "old" / committed.name
    new = tmp_path / "new" / committed.name
    for target in (old, new):
        target.parent.mkdir()
        shutil.copy(committed, target)
        shutil.copy(users_file(committed), users_file(target))
    assert differ(old, new) is None

    saved = dict(np.load(users_file(new)))
    saved["scores"] = saved["scores"].copy()
    saved["scores"][0] += 1e-6  # one user's score, in the 7th decimal
    np.savez_compressed(users_file(new), **saved)
    assert differ(old, new) == "per-user scores differ"

    result = json.loads(committed.read_text())
    result["test"]["ndcg@20"] += 1e-9
    new.write_text(json.dumps(result))
    assert differ(old, new).startswith("test: ")

    listed = {
        "searches": {("d", "M"): "search"},
        "seeds": {("d", "M"): ["s1", "s2", "s3"]},
        "reruns": {("d", "M"): "rerun"},
    }
    assert witnesses(listed) == [("s1", ["search", "s2", "s3", "rerun"])]


def test_a_pending_models_progress_is_read_from_the_results_and_tune_folder(tmp_path):
    from benchmarks.runner import Options, Runner, job_digest
    from benchmarks.sections import registry

    runner = Runner(
        {"quick": True},
        Options(results=tmp_path),
        registry(),
        code_versions={"tuned": "new"},
    )
    base = {"section": "tuned", "dataset": "d", "model": "M", "name": "d-M"}
    search = {**base, "phase": "search", "trials": 16}
    seeds = [{**base, "phase": "seed", "seed": s} for s in (1, 2, 3, 4, 5)]
    listed = {"searches": {("d", "M"): search}, "seeds": {("d", "M"): seeds}}
    assert tuned_report.progress(runner, listed, ("d", "M")) == ""  # nothing yet
    assert tuned_report.progress(runner, listed, ("d", "X")) == ""

    # A search under way, in the Tune folder of older code: Ray 2.6's state format.
    folder = tmp_path / "tuned" / "tune" / f"d-M-{job_digest(search)}-old"
    folder.mkdir(parents=True)
    statuses = ["TERMINATED"] * 5 + ["ERROR", "RUNNING", "RUNNING"] + ["PENDING"] * 8
    state = {
        "checkpoints": [
            json.dumps({"status": s, "trial_id": f"abcde_{i:05d}"})
            for i, s in enumerate(statuses)
        ]
    }
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))

    # Only its committed snapshot here (the folder is on another machine, or was lost):
    # the trials that finished, as the snapshot keeps them.
    snapshot = tuned_folders.write_snapshot(folder)
    shutil.move(folder, tmp_path / "away")
    assert tuned_report.progress(runner, listed, ("d", "M")) == (
        " (search: 5 of 16 trials done, as its snapshot has it)"
    )
    shutil.move(tmp_path / "away", folder)
    snapshot.touch()  # the folder wins over its snapshot, even an older folder
    # an older state of the same search is ignored
    (folder / "experiment_state-2025-01-01_00-00-00.json").write_text("{}")
    assert tuned_report.progress(runner, listed, ("d", "M")) == (
        " (search: 6 of 16 trials done)"
    )

    # The search finished: its seeds are counted.
    for job in [search, *seeds[:2]]:
        path = runner.result_path(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"job": job, "code_hash": "new"}))
    assert tuned_report.progress(runner, listed, ("d", "M")) == (
        " (search done; seeds: 2 of 5 done)"
    )


def test_an_interrupted_search_of_older_code_is_found_for_finishing(tmp_path):
    from benchmarks.runner import Options, Runner, cache_key, job_digest
    from benchmarks.sections import registry

    runner = Runner(
        {"quick": True},
        Options(results=tmp_path),
        registry(),
        code_versions={"tuned": "new"},
    )
    search = {"section": "tuned", "name": "d-M", "model": "M", "phase": "search"}
    assert tuned_folders.unfinished(runner, search) is None  # never started
    tune = tmp_path / "tuned" / "tune"

    def started_by(code, statuses):
        folder = tune / f"d-M-{job_digest(search)}-{code}"
        folder.mkdir(parents=True)
        state = {"checkpoints": [json.dumps({"status": s}) for s in statuses]}
        (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(
            json.dumps(state)
        )
        return folder

    started_by("older", ["RUNNING", "PENDING"])  # nothing done yet: nothing to keep
    assert tuned_folders.unfinished(runner, search) is None
    old = started_by("old", ["TERMINATED", "ERROR", "RUNNING"])
    found = tuned_folders.unfinished(runner, search)
    assert found.code == "old"

    # Its manifest names the checkout that started it; resuming from another checkout
    # (a worktree of that code) renames those paths, and only those.
    manifest = {
        "model": "M",
        "config_files": ["/a/main/properties/dataset/d.yaml", "/a/other.yaml"],
        "fixed": {"data_path": "/a/main/dataset", "file": "/a/main2/x", "n": 4},
    }
    (old / "search.json").write_text(json.dumps(manifest))
    found.move_to(Path("/b/wt"))
    found.move_to(Path("/c/wt2"))  # interrupted again, resumed from another worktree
    moved = json.loads((old / "search.json").read_text())
    assert moved["config_files"] == [
        "/c/wt2/properties/dataset/d.yaml",
        "/a/other.yaml",
    ]
    assert moved["fixed"] == {
        "data_path": "/c/wt2/dataset",
        "file": "/a/main2/x",
        "n": 4,
    }
    assert moved["moved"] == [
        {"from": "/a/main", "to": "/b/wt"},
        {"from": "/b/wt", "to": "/c/wt2"},
    ]
    assert moved["model"] == "M"
    # Done there: its best.yaml and result name this checkout's files instead.
    best = "# search in /r/tune/x\ndata_path: /c/wt2/dataset\nother: /c/wt22/y\n"
    (old / "best.yaml").write_text(best)
    result = tmp_path / "tuned" / f"{cache_key(search, 'old')}.json"
    result.write_text(json.dumps({"best_yaml": best, "exp_dir": "../x", "trials": []}))
    write_trial(old / "run_trial_x", [10.0], [12, 15])  # what its trials took
    found.move_to(tmp_path)
    best_now = best.replace("/c/wt2/dataset", f"{tmp_path}/dataset")
    assert best_now != best and (old / "best.yaml").read_text() == best_now
    done = json.loads(result.read_text())
    assert done["best_yaml"] == best_now and done["trials"] == []
    assert done["exp_dir"] == f"tuned/tune/{old.name}"
    assert done["moved"] == [{"from": "/c/wt2", "to": str(tmp_path)}]
    assert done["search_active_seconds"] == 5.0  # older code may not have recorded it
    found.move_to(tmp_path)  # already there: nothing changes
    assert json.loads(result.read_text()) == done
    (old / "search.json").write_text(
        json.dumps({**manifest, "config_files": ["/x.yaml"]})
    )
    with pytest.raises(RuntimeError, match="not a checkout's dataset yaml"):
        found.move_to(Path("/b/wt"))

    seed = {**search, "phase": "seed", "seed": 2020}
    assert tuned_folders.unfinished(runner, seed) is None  # seed runs do not resume
    # This code's own search of the job has started: it resumes itself.
    started_by("new", ["PENDING"])
    assert tuned_folders.unfinished(runner, search) is None
    assert tuned.SECTION.unfinished is tuned_folders.unfinished


def write_trial(folder: Path, starts, reports=None) -> None:
    """A Tune trial folder as the plugin's trials leave it: ``starts.log`` (one start
    time per line) and Ray's ``result.json`` (one report per line, whole-second
    ``timestamp``), or no result.json when ``reports`` is None."""
    folder.mkdir(parents=True)
    (folder / "starts.log").write_text("".join(f"{s}\n" for s in starts))
    if reports is not None:
        lines = [json.dumps({"timestamp": t, "valid_score": 0.1}) for t in reports]
        (folder / "result.json").write_text("".join(f"{x}\n" for x in lines))


def test_search_time_counts_every_session_its_trials_ran_and_no_gaps(tmp_path):
    tune = tmp_path / "search"
    write_trial(tune / "run_trial_a", [100.3], [101, 110, 120])
    # Killed at 200 (its last report), resumed in a later session at 300.2.
    write_trial(tune / "run_trial_b", [115.5, 300.2], [118, 125, 200, 305, 310])
    write_trial(tune / "run_trial_c", [400.0], [])  # killed before reporting
    write_trial(tune / "run_trial_d", [450.0])  # Ray never wrote its results
    # A report in the second its start fell in (Ray's timestamps are whole seconds).
    write_trial(tune / "run_trial_e", [500.7], [500, 503])
    # a: 100.3-120 and b: 115.5-200 overlap (99.7 s), b again 300.2-310, e 500.7-503
    expected = (200 - 100.3) + (310 - 300.2) + (503 - 500.7)
    assert tuned_folders.search_active_seconds(tune) == pytest.approx(expected)
    assert tuned_folders.search_active_seconds(tmp_path / "empty") is None

    # The report shows it; a result recorded before it was measured gets the finishing
    # process's wall time as a lower bound.
    search = {"search_seconds": 90.4, "search_active_seconds": expected}
    assert tuned_report.search_time_text(search) == "112"  # 111.8 s
    assert tuned_report.search_time_text({"search_seconds": 90.4}) == "≥ 90"

    # A search's result gets it once done; other phases' results are left alone.
    result = {"exp_dir": os.path.relpath(tune, tuned_folders.ROOT)}
    tuned_folders.annotate(None, {"phase": "search"}, result)
    assert result["search_active_seconds"] == pytest.approx(expected)
    seed_result = {"exp_dir": result["exp_dir"]}
    tuned_folders.annotate(None, {"phase": "seed"}, seed_result)
    assert "search_active_seconds" not in seed_result


def test_a_stale_search_without_seeds_of_its_code_is_vouched_for_by_its_rerun(
    tmp_path,
):
    """A search whose seeds all ran with newer code has no seed of its own code to
    compare: the rerun of its best.yaml must reproduce the best trial's recorded test
    metrics and best validation score, and the report says which check kept it."""
    from benchmarks.runner import Options, Runner, cache_key
    from benchmarks.sections import registry

    runner = Runner(
        {"quick": True},
        Options(results=tmp_path, cached_only=True),
        registry(),
        code_versions={"tuned": "new"},
    )
    base = {"section": "tuned", "dataset": "d", "model": "M", "name": "d-M"}
    search = {**base, "phase": "search", "trials": 16}
    seeds = [{**base, "phase": "seed", "seed": s} for s in (1, 2)]
    rerun = {**base, "phase": "rerun", "seed": "rerun", "best_yaml": "x"}
    listed = {
        "searches": {("d", "M"): search},
        "seeds": {("d", "M"): seeds},
        "reruns": {("d", "M"): rerun},
    }
    folder = tmp_path / "tuned"
    folder.mkdir()

    def write(job, code, **result):
        path = folder / f"{cache_key(job, code)}.json"
        path.write_text(json.dumps({"job": job, "code_hash": code, **result}))
        return path

    test = {"recall@20": 0.0567, "ndcg@20": 0.0272}
    trials = [
        {"trial": "t0", "best valid recall@20": 0.09, "best epoch": 10},
        {"trial": "t1", "best valid recall@20": 0.0926, "best epoch": 285},
    ]
    write(search, "old", best_trial="t1", best_trial_test=test, trials=trials)
    for job in seeds:
        write(job, "new")
    expected = {"test": test, "valid": {"recall@20": 0.0926}}
    assert tuned_report.recorded_witnesses(runner, listed) == [
        (rerun, search, expected, tuned_report.BEST_TRIAL_RECORD)
    ]
    assert "for d-M: `python -m benchmarks.suite --revalidate" in (
        tuned_report.awaiting_record_line(runner, listed)
    )
    # A seed of the search's code left: the seed witness's group checks it instead.
    older_seed = write(seeds[1], "old")
    assert tuned_report.recorded_witnesses(runner, listed) == []
    older_seed.unlink()

    # The rerun (already run with the new code) reproduces the record: carried.
    write(
        rerun, "new", test=dict(test, **{"ndcg@10": 0.02}), valid={"recall@20": 0.0926}
    )
    line = runner.vouch_by_record(*tuned_report.recorded_witnesses(runner, listed)[0])
    assert "1 result carried forward" in line and not runner.stale(search)
    assert tuned_report.recorded_witnesses(runner, listed) == []
    assert tuned_report.awaiting_record_line(runner, listed) == ""
    text = tuned_report.carried_line(runner, [search, *seeds, rerun])
    assert "Searches kept on their own record" in text and text.rstrip().endswith(
        ": d-M."
    )
    assert "first seed" not in text  # no seed witness was involved
