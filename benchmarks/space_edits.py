"""Keeping tuned searches through an edit of their space file that changes nothing a search
uses (comments, layout, how a number is written).

A tuned search's job holds the text of its space file (``properties/hyper/<model>.yaml``),
so any edit of that file gives the search a new cache key and the suite would run it
again: hours for a trained model on Amazon. This module checks, for each stored search of
a model, that the file as it is now parses to the same space (the same settings and
distributions in the same order: the order fixes Ray's random draws) and the same tune
options as the text the search ran with; if so the search's result is renamed to the new
key, its job takes the new text, and the carry is recorded under ``space_edits`` in the
result. Seeds and reruns are keyed by the chosen setting and ``best.yaml``, not by the
space text, so they stay as they are. Its Tune folder keeps its name (the result's
``exp_dir`` names it).

A search of the model still in progress (a Tune folder or snapshot with no result) is
refused: it would start over under the new key. Finish it first (``python -m
benchmarks.suite --sections tuned --only DATASET-MODEL``) with the file's old text, then
edit the file and run this.

    python -m benchmarks.space_edits MultiVAE BPR     # after editing their comments

Bookkeeping only: not part of any result's code hash.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .runner import ROOT, companions, job_digest, job_stem, write_atomically
from .sections.tuned_folders import SNAPSHOT_SUFFIX

# <dataset>-<model>-<job digest>-<code version>, a Tune folder's or snapshot's name.
SEARCH_FOLDER = re.compile(
    r"^(?P<name>.+)-(?P<digest>[0-9a-f]{10})-(?P<code>[0-9a-f]{12})$"
)


def space_file(model: str) -> Path:
    return ROOT / "properties" / "hyper" / f"{model}.yaml"


@lru_cache(maxsize=None)
def parsed(text: str) -> Tuple[Tuple[Tuple[str, Any], ...], Dict[str, Any]]:
    """What a search uses of a space file's text: its space, in order, and its tune
    options (defaults filled in). Read through a temporary file because the plugin's
    reader takes a path (changing it would change every tuned code hash); cached, since
    the report asks once per table row for the same few texts. Callers must not mutate
    what it returns."""
    from recbole_diffrec.tune.space import load_search_space

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(text)
    try:
        spec = load_search_space(handle.name)
    finally:
        Path(handle.name).unlink()
    return tuple(spec.space.items()), spec.options


def stored_searches(tuned: Path, model: str) -> List[Tuple[Path, Dict[str, Any]]]:
    """The stored search results of ``model`` in the tuned results folder ``tuned``, with
    their JSON."""
    found = []
    for path in sorted(tuned.glob(f"tuned-*-{model}--*.json")):
        result = json.loads(path.read_text())
        job = result.get("job", {})
        if job.get("phase") == "search" and job.get("model") == model:
            found.append((path, result))
    return found


def in_progress(tuned: Path, model: str) -> List[Path]:
    """Tune folders and snapshots of ``model``'s searches with no result of their job
    (of any code version, under its current key or one it was carried from)."""
    done = set()
    for _, result in stored_searches(tuned, model):
        # A carried search's Tune folder keeps the name of its job before the edit.
        digests = [job_digest(result["job"])]
        digests += [r["from_digest"] for r in result.get("space_edits", [])]
        done.update((result["job"]["name"], digest) for digest in digests)
    entries = [p for p in (tuned / "tune").glob(f"*-{model}-*") if p.is_dir()]
    entries += list((tuned / "snapshots").glob(f"*-{model}-*{SNAPSHOT_SUFFIX}"))
    running = []
    for entry in sorted(entries):
        name = entry.name[: -len(SNAPSHOT_SUFFIX)] if entry.is_file() else entry.name
        match = SEARCH_FOLDER.match(name)
        if not match or match["name"].split("-")[-1] != model:
            continue
        if (match["name"], match["digest"]) not in done:
            running.append(entry)
    return running


def difference(old: str, new: str) -> Optional[str]:
    """None when the two texts of a space file give the same search; else what differs."""
    (old_space, old_options), (new_space, new_options) = parsed(old), parsed(new)
    if old_space != new_space:
        return f"space {dict(old_space)} -> {dict(new_space)}"
    if old_options != new_options:
        changed = sorted(k for k in new_options if old_options.get(k) != new_options[k])
        return f"tune options {changed}"
    return None


def carry_search(path: Path, result: Dict[str, Any], text: str) -> Path:
    """Rename the stored search at ``path`` (and the files beside it) to the key of its
    job with the space text ``text``, recording the carry; returns the new path."""
    old_job = result["job"]
    new_job = {**old_job, "space": text}
    old_stem, new_stem = job_stem(old_job), job_stem(new_job)
    target = path.with_name(new_stem + path.name[len(old_stem) :])
    for file in [*companions(path), path.with_suffix(".log")]:
        if file.exists():
            file.rename(target.with_name(new_stem + file.name[len(old_stem) :]))
    record = {
        "from_digest": job_digest(old_job),
        "to_digest": job_digest(new_job),
        "check": "the space file's new text parses to the same space and tune options",
    }
    carried = {
        **result,
        "job": new_job,
        "space_edits": [*result.get("space_edits", []), record],
    }
    write_atomically(target, carried)
    path.unlink()
    return target


def carry(model: str, results: Path) -> List[str]:
    """Carry every stored search of ``model`` under ``results`` (``<results>/tuned``) to
    the current text of its space file; one line per search, or why none is carried."""
    tuned = results / "tuned"
    text = space_file(model).read_text()
    running = in_progress(tuned, model)
    if running:
        names = ", ".join(str(p.relative_to(results)) for p in running)
        return [
            f"{model}: not carried: searches in progress ({names}) would start over "
            "under the new key; finish them with the file's old text first"
        ]
    lines = []
    for path, result in stored_searches(tuned, model):
        name = result["job"]["name"]
        if result["job"]["space"] == text:
            lines.append(f"{name}: already keyed by the current text")
            continue
        changed = difference(result["job"]["space"], text)
        if changed is not None:
            lines.append(
                f"{name}: not carried, the edit changes the search ({changed})"
            )
            continue
        target = carry_search(path, result, text)
        lines.append(f"{name}: carried to {target.name}")
    return lines or [f"{model}: no stored search"]


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.space_edits", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("models", nargs="+", help="models whose space file was edited")
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="the suite's results folder (default: benchmarks/results)",
    )
    args = parser.parse_args(argv)
    for model in args.models:
        if not space_file(model).is_file():
            raise SystemExit(f"{model}: no space file {space_file(model)}")
        for line in carry(model, args.results):
            print(line)


if __name__ == "__main__":
    main()
