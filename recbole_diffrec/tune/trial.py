"""One trial of a search, run in a Ray worker: train through the runner with the trial's
settings and report validation metrics to Ray after every evaluation.

Ray is imported inside :func:`run_trial` only, so importing this module never imports it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import torch
import yaml

from ..compat import trial_info, tune_report
from ..quick_start import run
from ..registry import get_model
from ..trainer import get_trainer
from ..training_state import STATE_SUFFIX
from ..utils import plain_argv


def device_settings(gpu_ids: Sequence[Any]) -> Dict[str, Any]:
    """RecBole's Config sets CUDA_VISIBLE_DEVICES from ``gpu_id``; give it exactly the GPUs
    Ray assigned to the trial (none: CPU)."""
    return {"gpu_id": ",".join(str(int(g)) for g in gpu_ids)}


def trial_index(trial_id: str) -> int:
    """Ray trial ids end in a zero-padded counter (``a1b2c_00003``)."""
    return int(trial_id.rsplit("_", 1)[-1])


class _Reporter:
    """What a trial tells Ray: every evaluation, then the outcome (finished or invalid).

    Every report carries the best validation score so far, so the driver can rank a
    trial the scheduler stopped by its last report."""

    def __init__(self, metric: str, bigger: bool, seed: int, report: Callable):
        self.metric, self.bigger, self.seed = metric, bigger, seed
        self.report = report
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.last: Optional[Dict[str, float]] = None
        self.epoch = 0

    def evaluation(self, trainer, epoch_idx: int, valid_score, valid_result) -> None:
        self._record(epoch_idx, valid_score, valid_result)
        self._send(model_file=trainer.saved_model_file)

    def replay(self, valid_curve) -> None:
        """A trial resumed from its training state: the evaluations before the
        interruption count towards the best (reported again with the next one)."""
        for entry in valid_curve:
            self._record(int(entry["epoch"]), entry["score"], curve_result(entry))

    def _record(self, epoch_idx: int, valid_score, valid_result) -> None:
        score = float(valid_result.get(self.metric, valid_score))
        if self.best is None or (
            score > self.best if self.bigger else score < self.best
        ):
            self.best, self.best_epoch = score, epoch_idx + 1
        self.epoch = epoch_idx + 1
        self.last = {
            "valid_score": score,
            **{f"valid_{k}": float(v) for k, v in valid_result.items()},
        }

    def invalid(self, err: Exception) -> None:
        # The worst score, so the scheduler and the search never prefer it.
        self.report(
            {
                "valid_score": -math.inf if self.bigger else math.inf,
                "invalid": str(err),
                "seed": self.seed,
            }
        )

    def finished(self, result: Dict[str, Any]) -> None:
        if self.last is None:  # no evaluation ran
            self.last = {"valid_score": float(result["best_valid_score"])}
        self._send(
            model_file=result["model_file"],
            finished=True,
            **{f"test_{k}": float(v) for k, v in result["test_result"].items()},
        )

    def _send(self, **extra: Any) -> None:
        self.report(
            {
                **self.last,
                "best_valid_score": self.best,
                "best_epoch": self.best_epoch,
                "epoch": self.epoch,
                "seed": self.seed,
                **extra,
            }
        )


def curve_result(entry: Dict[str, Any]) -> Dict[str, Any]:
    """The validation metrics of one ``valid_curve`` entry of the plugin's trainers."""
    return {k: v for k, v in entry.items() if k not in ("epoch", "score")}


def _reporting_trainer(
    base: type, on_evaluation_done: Callable, on_resume: Callable
) -> type:
    class ReportingTrainer(base):
        """Reports validation metrics to Ray after every evaluation."""

        def fit(
            self,
            train_data,
            valid_data=None,
            verbose=True,
            saved=True,
            show_progress=False,
            callback_fn=None,
        ):
            def on_evaluation(epoch_idx, valid_score):
                # The plugin's trainers record every evaluation in valid_curve.
                on_evaluation_done(
                    self, epoch_idx, valid_score, curve_result(self.valid_curve[-1])
                )
                if callback_fn:
                    callback_fn(epoch_idx, valid_score)

            on_resume(self.valid_curve)  # empty unless resumed
            return super().fit(
                train_data, valid_data, verbose, saved, show_progress, on_evaluation
            )

    return ReportingTrainer


def _write_settings(
    job: Dict[str, Any], params: Dict[str, Any], trial_dir: Path, seed: int
) -> Path:
    """The trial's settings (fixed, searched, seed, folders, GPUs) as a yaml file for the
    runner; also a record of the trial beside its results."""
    import ray

    settings = {
        **job["fixed"],
        **params,
        "seed": seed,
        "checkpoint_dir": str(trial_dir / "checkpoints"),
        **device_settings(ray.get_gpu_ids()),
    }
    # A restarted trial (a resumed search, a failed worker) continues from the training
    # state its first start left instead of training again from epoch 0.
    if any((trial_dir / "checkpoints").glob(f"*{STATE_SUFFIX}")):
        settings["resume"] = "auto"
    if job.get("item_emb_cache_dir") and "item_emb_cache_dir" not in job["fixed"]:
        settings["item_emb_cache_dir"] = job["item_emb_cache_dir"]
    path = trial_dir / "settings.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=True))
    return path


def run_trial(params: Dict[str, Any], job: Dict[str, Any]) -> None:
    """One trial (runs in a Ray worker): train with ``params`` over the fixed settings,
    reporting validation metrics after every evaluation, then the best checkpoint's test
    metrics."""
    trial_dir_name, trial_id = trial_info(job["exp_dir"])
    trial_dir = Path(trial_dir_name)
    # Written straight into the experiment folder, so nothing waits on Ray's copying.
    trial_dir.mkdir(parents=True, exist_ok=True)
    with open(trial_dir / "starts.log", "a", encoding="utf-8") as f:
        f.write(f"{time.time()}\n")  # one line per start: a resumed search adds none
    seed = int(job["base_seed"]) + trial_index(trial_id)
    torch.set_num_threads(max(1, int(job["cpus_per_trial"])))
    settings_path = _write_settings(job, params, trial_dir, seed)

    reporter = _Reporter(job["metric"], job["bigger"], seed, tune_report())
    base = get_trainer(get_model(job["model"]))
    try:
        with plain_argv():
            result = run(
                job["model"],
                job["dataset"],
                config_file_list=list(job["config_files"]) + [str(settings_path)],
                saved=True,
                trainer_class=_reporting_trainer(
                    base, reporter.evaluation, reporter.replay
                ),
            )
    except ValueError as err:
        if reporter.last is not None:
            raise
        # A combination the model rejects (say noise_min >= noise_max): checked before any
        # data is loaded; recorded as invalid with the worst score instead of a crash.
        reporter.invalid(err)
        return
    reporter.finished(result)
