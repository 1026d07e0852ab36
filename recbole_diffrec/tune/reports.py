"""What a search leaves behind: the trials table (``trials.csv``, ``trials.md``), the chosen
trial (``best.yaml``, runnable as it is, and ``best.json``) and the printed summary.

The choice is made on validation only; test metrics are recorded, never used to choose.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from ..compat import experiment_state_trials, latest_experiment_state
from ..quick_start import load_model
from ..trainer import get_trainer
from ..utils import plain, plain_argv, write_atomically, write_text_atomically
from .space import PATH_SETTINGS, SearchSpace, YamlLoader
from .trial import trial_index

# Saved trial statuses of a trial that was cut short: it continues (from its last training
# state, when it wrote one) when the search resumes.
UNFINISHED = ("RUNNING", "PENDING", "PAUSED")


def summarize(
    results,
    spec: SearchSpace,
    manifest: Dict[str, Any],
    exp_dir: Path,
    model: str,
    dataset: str,
) -> Dict[str, Any]:
    """Write the tables and the chosen trial's files; returns the summary the command
    line prints (``best`` is None when no trial has a validation score)."""
    metric, bigger = manifest["metric"], manifest["bigger"]
    statuses = _trial_statuses(exp_dir)
    rows = [_trial_row(result, spec, metric, statuses) for result in results]
    summary: Dict[str, Any] = {
        "exp_dir": str(exp_dir),
        "trials": rows,
        "interrupted": any(r["status"].startswith("interrupted") for r in rows),
    }
    best = _choose(rows, metric, bigger)
    if best is None:
        _write_tables(rows, exp_dir, metric, None)
        summary["best"] = None
        return summary
    if not any(k.startswith("test_") for k in best) and best.get("model_file"):
        # Stopped by the scheduler before its own test evaluation.
        best.update(evaluate_checkpoint_on_test(best["model_file"]))
    best_settings = write_best(best, spec, manifest, exp_dir, model, dataset, metric)
    _write_tables(rows, exp_dir, metric, best["trial"])
    summary.update(best=best, best_settings=best_settings)
    return summary


def _trial_statuses(exp_dir: Path) -> Dict[str, str]:
    """Trial statuses as saved in the experiment state, which is what a resume reads
    (after Ctrl+C, Ray's in-memory trials all look terminated)."""
    return {
        trial.get("trial_id"): trial.get("status")
        for trial in experiment_state_trials(latest_experiment_state(exp_dir))
    }


def _trial_row(
    result, spec: SearchSpace, metric: str, statuses: Dict[str, str]
) -> Dict[str, Any]:
    """One trial's line of the tables: status, seed, searched values, scores, folder."""
    m = dict(result.metrics or {})
    params = dict(result.config or {})
    # A trial interrupted before its first report has no metrics: id from its folder.
    found = re.search(r"_([0-9a-f]+_\d{5})(?:_|$)", Path(result.path).name)
    trial_id = m.get("trial_id") or (
        found.group(1) if found else Path(result.path).name
    )
    if statuses.get(trial_id) in UNFINISHED:
        status = "interrupted (resumes)"
    elif result.error is not None:
        status = f"error: {str(result.error).strip().splitlines()[-1][:160]}"
    elif m.get("invalid"):
        status = f"invalid: {m['invalid']}"
    elif m.get("finished"):
        status = "finished"
    else:
        status = "stopped by scheduler"
    row = {
        "trial": trial_id,
        "status": status,
        "seed": m.get("seed"),
        **{k: params.get(k) for k in spec.space},
        f"best valid {metric}": m.get("best_valid_score"),
        "best epoch": m.get("best_epoch"),
        "epochs run": m.get("epoch"),
        "model_file": m.get("model_file"),
        "path": result.path,
    }
    row.update({k: v for k, v in m.items() if k.startswith("test_")})
    return row


def _choose(
    rows: List[Dict[str, Any]], metric: str, bigger: bool
) -> Optional[Dict[str, Any]]:
    """The row with the best validation score (ties: the earlier trial), or None."""
    key = f"best valid {metric}"
    # An interrupted trial has not finished training: not a candidate until it has.
    scored = [
        r
        for r in rows
        if r[key] is not None and not r["status"].startswith("interrupted")
    ]
    if not scored:
        return None
    sign = 1 if bigger else -1
    return max(scored, key=lambda r: (sign * r[key], -_index(r["trial"])))


def _index(trial: str) -> int:
    try:
        return trial_index(trial)
    except ValueError:
        return 0


def evaluate_checkpoint_on_test(model_file: str) -> Dict[str, float]:
    """Test metrics of a trial the scheduler stopped: its best checkpoint, evaluated here."""
    with plain_argv():
        config, model, _, _, _, test_data = load_model(model_file)
        trainer = get_trainer(type(model))(config, model)
        result = trainer.evaluate(test_data, load_best_model=False)
    return {f"test_{k}": float(v) for k, v in result.items()}


def write_best(
    best, spec, manifest, exp_dir: Path, model: str, dataset: str, metric: str
):
    """best.yaml: the config files' settings, the fixed settings, the chosen values and
    the trial's seed, in one file the runner accepts as it is. Returns the chosen values.
    """
    merged: Dict[str, Any] = {}
    with plain_argv():
        for f in manifest["config_files"]:
            with open(f, encoding="utf-8") as fh:
                merged.update(yaml.load(fh, Loader=YamlLoader) or {})
    merged.update(manifest["fixed"])
    for key in PATH_SETTINGS:
        if isinstance(merged.get(key), str):
            merged[key] = os.path.abspath(merged[key])
    chosen = {k: best[k] for k in spec.space}
    merged.update(chosen)
    merged["seed"] = best["seed"]
    tests = {k[5:]: v for k, v in best.items() if k.startswith("test_")}
    header = (
        f"# Best trial {best['trial']} of the search in {exp_dir}\n"
        f"# chosen on validation {metric} = {best[f'best valid {metric}']:.4f} "
        f"(epoch {best['best epoch']}); its test metrics, never used to choose: "
        + ", ".join(f"{k} {v:.4f}" for k, v in tests.items())
        + "\n# rerun: "
        + rerun_command(model, dataset, exp_dir / "best.yaml")
        + "\n"
    )
    # Written aside then renamed: an interrupted report never leaves half a best.yaml.
    write_text_atomically(
        exp_dir / "best.yaml", header + yaml.safe_dump(plain(merged), sort_keys=True)
    )
    write_text_atomically(exp_dir / "best.json", json.dumps(plain(best), indent=1))
    return chosen


def rerun_command(model: str, dataset: str, best_yaml: Path) -> str:
    return (
        f"python run_recbole_diffrec.py --model={model} --dataset={dataset} "
        f"--config_files={best_yaml}"
    )


def _write_tables(
    rows: List[Dict[str, Any]], exp_dir: Path, metric: str, best_trial
) -> None:
    columns: List[str] = []
    for row in rows:
        for key in row:
            if key not in columns and key not in ("path", "model_file"):
                columns.append(key)
    _write_csv(rows, columns, exp_dir / "trials.csv")
    _write_markdown(rows, columns, exp_dir / "trials.md", metric, best_trial)


def _write_csv(rows: List[Dict[str, Any]], columns: List[str], path: Path) -> None:
    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=columns + ["path"], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: json.dumps(v) if isinstance(v, (list, dict)) else v
                    for k, v in row.items()
                }
            )

    write_atomically(path, write)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return "" if v is None else str(v)


def _write_markdown(
    rows: List[Dict[str, Any]], columns: List[str], path: Path, metric: str, best_trial
) -> None:
    """Trials sorted by best validation score (none last), the chosen one marked."""
    key = f"best valid {metric}"
    ordered = sorted(rows, key=lambda r: -(r[key] if r[key] is not None else -math.inf))
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in ordered:
        cells = [_cell(row.get(c)) for c in columns]
        if row["trial"] == best_trial:
            cells[0] = f"**{cells[0]}** (chosen)"
        lines.append("| " + " | ".join(cells) + " |")
    write_text_atomically(
        path,
        f"Trials sorted by best validation {metric} (the search selects on validation only; "
        "test metrics are reported, never used to choose).\n\n"
        + "\n".join(lines)
        + "\n",
    )


def print_summary(summary: Dict[str, Any], model: str, dataset: str) -> None:
    exp_dir = Path(summary["exp_dir"])
    print((exp_dir / "trials.md").read_text())
    if summary["interrupted"]:
        print("The search was interrupted; run the same command again to resume it.")
    if summary.get("best"):
        print(
            f"best settings: {summary['best_settings']} (seed {summary['best']['seed']})"
        )
        print(
            f"written: {exp_dir / 'trials.csv'}, {exp_dir / 'trials.md'}, {exp_dir / 'best.yaml'}"
        )
        print("rerun the best: " + rerun_command(model, dataset, exp_dir / "best.yaml"))
