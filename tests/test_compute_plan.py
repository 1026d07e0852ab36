"""The compute plan's projection (benchmarks/bench_compute_plan.py): a model's measured
ml-1m_clean cost scaled by the ratio of a mean trial's cost on the two datasets, and the
report's rows and totals, on hand-made measurements."""

import pytest

from benchmarks import bench_compute_plan as plan


def short_run(epoch, valid, start, test):
    return {
        "complete": True,
        "epoch_seconds": [epoch, epoch],
        "validation_seconds": [valid, valid],
        "start_seconds": start,
        "test_seconds": test,
        "total_seconds": start + 2 * epoch + 2 * valid + test,
        "peak_rss_mb": 100.0,
    }


@pytest.fixture
def measured(tmp_path, monkeypatch):
    monkeypatch.setattr(plan, "RESULTS", tmp_path)
    searches = {"A": {"search_seconds": 3600.0, "trials": [{"epochs run": 10}] * 3}}
    searches["A"]["trials"] = [
        {"epochs run": 10},
        {"epochs run": 20},
        {"epochs run": 30},
    ]
    seeds = {"A": [{"time_to_result": 300.0, "epochs": 20}] * 5}
    # On "big", A's search and seeds are done: 7200 s while its trials ran (over two
    # sessions, so the wall time of the process that finished it is less), five seeds.
    big = {
        "A": {
            "search_seconds": 1000.0,
            "search_active_seconds": 7200.0,
            "trials": [{"epochs run": 8}],
        }
    }
    big_seeds = {"A": [{"time_to_result": 600.0}] * 5}
    monkeypatch.setattr(
        plan,
        "search_result",
        lambda m, d="ml-1m_clean": (searches if d == "ml-1m_clean" else big).get(m),
    )
    monkeypatch.setattr(
        plan,
        "seed_results",
        lambda m, d="ml-1m_clean": (seeds if d == "ml-1m_clean" else big_seeds).get(
            m, []
        ),
    )
    runs = {
        ("A", "ml-1m_clean"): short_run(epoch=1.0, valid=5.0, start=5.0, test=5.0),
        ("A", "big"): short_run(epoch=4.0, valid=20.0, start=20.0, test=20.0),
        ("B", "ml-1m_clean"): short_run(1.0, 1.0, 1.0, 1.0),
        ("B", "big"): {"complete": False, "total_seconds": 600.0},
    }
    for (model, dataset), run in runs.items():
        plan.write_atomically(plan.result_file(model, dataset), run)
    return runs


def test_the_projection_scales_the_measured_cost_by_a_mean_trials_ratio(measured):
    wall = plan.measured_wall("A")
    # only the wall time of the process that finished its search: a lower bound
    assert wall == {
        "search": 3600.0,
        "runs": 1800.0,
        "trial_epochs": 20.0,
        "seeds": 5,
        "exact": False,
    }
    # the time its trials ran, where recorded, over the finishing process's wall time
    assert plan.measured_wall("A", "big")["search"] == 7200.0
    assert plan.measured_wall("A", "big")["exact"]
    # a mean trial: start + test + 20 x (epoch + valid / 5)
    assert plan.run_cost(measured["A", "ml-1m_clean"], 20, 5) == 5 + 5 + 20 * 2.0
    ratio = plan.ratio("A", measured["A", "ml-1m_clean"], measured["A", "big"], 5)
    assert ratio == pytest.approx((20 + 20 + 20 * 8.0) / 50.0)  # 4x
    # no ratio without a finished run on both datasets or a measured search
    assert (
        plan.ratio("B", measured["B", "ml-1m_clean"], measured["B", "big"], 5) is None
    )
    assert (
        plan.ratio("C", measured["A", "ml-1m_clean"], measured["A", "big"], 5) is None
    )


def test_the_report_shows_each_model_and_totals_what_is_known(measured):
    text = plan.render(["A", "B"], ["ml-1m_clean", "big"], eval_step=5)
    row_a = next(line for line in text.splitlines() if line.startswith("| A |"))
    # measured on big: 7200 s of search + 6 x 600 s of runs = 3.0 h
    assert (
        "| 1.0 | 5.0 | 5 | 100 | 4.0 | 20.0 | 20 | 100 | ≥ 1.5 | 4.0x, 6.0 | 3.0 |"
        in row_a
    )
    row_b = next(line for line in text.splitlines() if line.startswith("| B |"))
    assert "> 600 s in all (cut)" in row_b and row_b.endswith("| - | - | - |")
    assert "**ml-1m_clean**: measured ≥ 1.5 wall hours" in text
    assert "without B (not measured yet or cut short)" in text
    assert "**big**: projected 6.0 wall hours on this machine (12 CPU-hours)" in text
    assert "done so far: A, measured 3.0 wall hours against 6.0 projected" in text
    # with more seeds asked for than A has on big, A is not done there
    text = plan.render(["A", "B"], ["ml-1m_clean", "big"], eval_step=5, seeds=6)
    row_a = next(line for line in text.splitlines() if line.startswith("| A |"))
    assert row_a.endswith("| 4.0x, 6.0 | - |") and "done so far" not in text
