"""benchmarks.space_edits: a stored tuned search follows an edit of its space file's
comments to the new key, and only such an edit."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.runner import cache_key, job_digest  # noqa: E402
from benchmarks.space_edits import carry, main, space_file  # noqa: E402

CODE = "0123456789ab"


def stored_search(results: Path, space_text: str, dataset: str = "ds") -> Path:
    """A search result as the suite stores it, run with ``space_text``."""
    job = {
        "section": "tuned",
        "name": f"{dataset}-MultiVAE",
        "phase": "search",
        "dataset": dataset,
        "model": "MultiVAE",
        "trials": 16,
        "tune": {"scheduler": "asha", "grace_period": 4, "search_seed": 2020},
        "common": {"show_progress": False},
        "space": space_text,
    }
    folder = results / "tuned"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cache_key(job, CODE)}.json"
    result = {"job": job, "code_hash": CODE, "best_settings": {"anneal_cap": 0.2}}
    path.write_text(json.dumps(result))
    path.with_suffix(".log").write_text("trial log")
    return path


def test_a_comment_edit_carries_the_search_to_the_new_key(tmp_path):
    text = space_file("MultiVAE").read_text()
    old_text = "# An older header comment.\n" + text.replace("  # (float)", "# (float)")
    old = stored_search(tmp_path, old_text)
    [line] = carry("MultiVAE", tmp_path)
    assert not old.exists() and not old.with_suffix(".log").exists()
    [new] = sorted((tmp_path / "tuned").glob("*.json"))
    result = json.loads(new.read_text())
    assert result["job"]["space"] == text
    assert new.name == f"{cache_key(result['job'], CODE)}.json" and new.name in line
    assert new.with_suffix(".log").read_text() == "trial log"
    [record] = result["space_edits"]
    assert record["to_digest"] == job_digest(result["job"])
    assert record["from_digest"] == job_digest({**result["job"], "space": old_text})
    assert (
        result["best_settings"] == {"anneal_cap": 0.2} and result["code_hash"] == CODE
    )
    # Run again: nothing left to carry, and the search's Tune folder, which keeps the
    # name of its key before the edit, is not taken for a search in progress.
    finished = (
        tmp_path / "tuned" / "tune" / f"ds-MultiVAE-{record['from_digest']}-{CODE}"
    )
    finished.mkdir(parents=True)
    assert carry("MultiVAE", tmp_path) == [
        "ds-MultiVAE: already keyed by the current text"
    ]


def test_an_edit_that_changes_the_search_is_not_carried(tmp_path):
    text = space_file("MultiVAE").read_text()
    assert "uniform: [0.2, 0.6]" in text
    wider = stored_search(tmp_path, text.replace("[0.2, 0.6]", "[0.2, 0.7]"), "a")
    lines = text.splitlines(keepends=True)
    keys = [i for i, line in enumerate(lines) if line.startswith("  ") and "{" in line]
    lines[keys[0]], lines[keys[1]] = (
        lines[keys[1]],
        lines[keys[0]],
    )  # same keys, reordered
    reordered = stored_search(tmp_path, "".join(lines), "b")
    tuned = stored_search(
        tmp_path, text.replace("grace_period: 4", "grace_period: 2"), "c"
    )
    out = carry("MultiVAE", tmp_path)
    assert [line.split(":")[0] for line in out] == [
        "a-MultiVAE",
        "b-MultiVAE",
        "c-MultiVAE",
    ]
    assert all("not carried, the edit changes the search" in line for line in out)
    assert "tune options ['grace_period']" in out[2]
    assert wider.exists() and reordered.exists() and tuned.exists()


def test_a_search_in_progress_blocks_the_carry(tmp_path, capsys):
    text = space_file("MultiVAE").read_text()
    old = stored_search(tmp_path, "# old\n" + text)
    running = tmp_path / "tuned" / "tune" / f"other-MultiVAE-{'a' * 10}-{CODE}"
    running.mkdir(parents=True)
    main(["MultiVAE", "--results", str(tmp_path)])
    out = capsys.readouterr().out
    assert "not carried: searches in progress" in out and running.name in out
    assert old.exists()
    # A finished search's Tune folder does not block it.
    running.rename(running.with_name(f"ds-MultiVAE-{old.name.split('-')[-2]}-{CODE}"))
    assert "carried to" in carry("MultiVAE", tmp_path)[0]


def test_the_report_names_the_searches_kept_through_an_edit():
    from benchmarks.sections.tuned_report import space_edits_line

    stored = {
        "a-MultiVAE": {"space_edits": [{"from_digest": "0" * 10}]},
        "a-BPR": {},
    }

    class Stored:
        def cached(self, job):
            return job["name"] in stored

        def read(self, job):
            return stored[job["name"]]

    listed = {"searches": {k: {"name": k} for k in [*stored, "a-EASE"]}}
    line = space_edits_line(Stored(), listed)
    assert line.strip().endswith("under the new text's key: a-MultiVAE.")
    del stored["a-MultiVAE"]["space_edits"]
    assert space_edits_line(Stored(), listed) == ""


def test_the_report_marks_settings_chosen_at_an_edge_of_their_range():
    from benchmarks.sections.tuned_report import at_edge, setting_text

    space = (
        "space:\n"
        "  a: {choice: [1, 2, 3]}\n"
        "  b: {choice: [64, 128]}\n"
        "  c: {loguniform: [1.0e-4, 1.0]}\n"
        "  d: {uniform: [0.0, 1.0]}\n"
        "  e: {quniform: [0.1, 0.5, 0.1]}\n"
        "  f: {choice: [x, y, z]}\n"
    )
    # c = 1.5e-4 sits 4.4% up its log range; two choices have no inside, names no order.
    chosen = {"a": 3, "b": 128, "c": 1.5e-4, "d": 0.5, "e": 0.1, "f": "z"}
    assert at_edge(space, chosen) == ["a", "c", "e"]
    inside = {"a": 2, "b": 64, "c": 1.0e-3, "d": 0.97, "e": 0.30000000000000004}
    assert at_edge(space, inside) == ["d"]
    # d's range starts at 0, where its term is off: its low end is no edge to widen.
    assert at_edge(space, {**inside, "d": 0.01}) == []
    assert setting_text({"a": 3, "d": 0.5}, ["a"]) == "a=3†, d=0.5"


def test_the_trials_column_counts_the_draws_a_model_refused():
    from benchmarks.sections.tuned_report import trials_text

    trials = [{"status": "finished"}] * 14 + [{"status": "stopped by scheduler"}]
    assert trials_text(trials) == "15"
    refused = {"status": "invalid: noise_min: got 0.005 with noise_max=0.005"}
    assert trials_text(trials + [refused]) == "16 (1 invalid)"
