"""One-call training and evaluation for plugin and RecBole models, and model reloading."""

from __future__ import annotations

import os
import time
from logging import getLogger
from typing import Any, Dict, List, Optional, Union

from recbole.data import create_dataset
from recbole.utils import init_logger, init_seed, set_color

from . import distributed
from .config import Config, config_from_settings
from .convert import ensure_release_converted
from .data import data_preparation
from .models.checks import RUN, check_settings
from .pipeline import build_model
from .registry import get_model
from .trainer import CHECKPOINT_FORMAT, decode_array, get_trainer, load_checkpoint
from .training_state import latest_state_file
from .utils import plain


def check_model_config(config) -> None:
    """Validate the run's and the model's settings before any data is loaded."""
    check_settings(config, RUN)
    check = getattr(config.model_class, "check_config", None)
    if check is not None:
        check(config)


def run(
    model: Union[str, type],
    dataset: str,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[Dict[str, Any]] = None,
    saved: Optional[bool] = None,
    trainer_class: Optional[type] = None,
) -> Dict[str, Any]:
    """Train ``model`` on ``dataset`` with RecBole's pipeline; evaluate the best model on test.

    ``saved`` defaults to the ``saved`` setting (True); ``trainer_class`` replaces the
    trainer :func:`get_trainer` picks (e.g. one that records timings).

    Returns a dict with the best validation score and results, the test results, the
    checkpoint path (when ``saved``), the parameter count and timings.

    With ``nproc`` > 1 or ``world_size`` > 1 (RecBole's flags) the run is data-parallel:
    ``nproc`` processes are started on this machine (see :mod:`.distributed`) and rank 0's
    result is returned; a failing rank raises :class:`~.distributed.DistributedRunError`.
    """
    config = Config(model, dataset, config_file_list, config_dict)
    check_model_config(config)
    found = distributed.check_run(config)
    if found.enabled and "local_rank" not in config.external_config_dict:
        settings = plain(config.external_config_dict)
        clusters = _clusters_before_launch(config)
        return distributed.launch(
            _run_rank,
            (model, dataset, settings, saved, trainer_class, clusters),
            found.nproc,
        )
    return run_config(config, saved, trainer_class)


def _clusters_before_launch(config):
    """L-DiffRec's item clusters, prepared once here before the processes start (a
    LightGCN training would otherwise keep the other ranks waiting on rank 0); the same
    steps and seeds as in one process, so the clusters are the same."""
    if not getattr(config.model_class, "needs_item_clusters", False):
        return None
    from .clustering import prepare_item_clusters

    init_seed(config["seed"], config["reproducibility"])
    _, train_data, _, _ = load_splits(config)
    init_seed(config["seed"], config["reproducibility"])
    return prepare_item_clusters(config, train_data.dataset)


def _run_rank(local_rank, model, dataset, settings, saved, trainer_class, clusters):
    """One launched process: the parent's settings, this rank's process group."""
    import warnings

    from .errors import UnknownSettingWarning

    warnings.simplefilter("ignore", UnknownSettingWarning)  # the parent warned once
    settings = {k: v for k, v in settings.items() if k not in ("model", "dataset")}
    config = config_from_settings(model, dataset, settings)
    return run_config(config, saved, trainer_class, item_clusters=clusters)


def run_config(
    config, saved: Optional[bool] = None, trainer_class=None, item_clusters=None
):
    """:func:`run` for a built ``config`` (in this process; data-parallel when the
    config joined a process group)."""
    parallel = not config["single_spec"]
    if parallel:
        check_model_config(config)
        distributed.check_run(config)
    saved = bool(config["saved"]) if saved is None else saved
    init_seed(config["seed"], config["reproducibility"])
    if distributed.is_main():
        init_logger(config)
    else:
        distributed.quiet_logging()
    getLogger().info(config)
    try:
        _, train_data, valid_data, test_data = load_splits(config)

        # The same seed on every rank: batch-shaped draws are drawn for the whole
        # global batch alike on all ranks (RecBole adds local_rank here; one process
        # has local_rank 0, so nothing changes there).
        init_seed(config["seed"], config["reproducibility"])
        model = _build_model(config, train_data.dataset, item_clusters)
        getLogger().info(model)
        trainer = (trainer_class or get_trainer(config.model_class))(config, model)
        resume = resume_file(config) if distributed.is_main() else None
        resume = distributed.broadcast_object(resume)
        if resume is not None:
            trainer.resume_training(resume)
        result = fit_and_test(trainer, train_data, valid_data, test_data, saved)
    finally:
        # A launched process leaves its group to the launcher (it may run more jobs).
        if parallel and distributed.worker_context() is None:
            distributed.destroy_process_group()
    return {
        "model": config["model"],
        "model_class": f"{config.model_class.__module__}.{config.model_class.__name__}",
        "dataset": config["dataset"],
        "valid_score_bigger": config["valid_metric_bigger"],
        **result,
        "model_file": trainer.saved_model_file if saved else None,
        "state_file": getattr(trainer, "state_file", None) if saved else None,
        "valid_curve": list(getattr(trainer, "valid_curve", [])),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _build_model(config, train_dataset, item_clusters=None):
    """:func:`build_model`; data-parallel, item clusters are prepared once, by rank 0 in
    a one-process setting (a LightGCN it may train, and the cache it writes), and sent
    to the other ranks."""
    if (
        config["single_spec"]
        or item_clusters is not None
        or not getattr(config.model_class, "needs_item_clusters", False)
    ):
        return build_model(config, train_dataset, item_clusters=item_clusters)
    from .clustering import prepare_item_clusters

    clusters = None
    if distributed.is_main():
        with distributed.local_only(config):
            clusters = prepare_item_clusters(config, train_dataset)
    clusters = distributed.broadcast_object(clusters)
    return build_model(config, train_dataset, item_clusters=clusters)


def resume_file(config) -> Optional[str]:
    """The training-state file the ``resume`` setting names: a path, or ``auto`` for the
    newest one of this model and dataset in ``checkpoint_dir`` (none yet: a fresh start).
    """
    resume = config["resume"]
    if not resume:
        return None
    if str(resume).lower() != "auto":
        if not os.path.isfile(resume):
            raise FileNotFoundError(f"resume: no training-state file {resume}")
        return str(resume)
    found = latest_state_file(
        config["checkpoint_dir"], config["model"], config["dataset"]
    )
    if found is None:
        getLogger().warning(
            f"resume=auto: no training state for {config['model']} on "
            f"{config['dataset']} in {config['checkpoint_dir']}; starting afresh"
        )
    return found


def load_splits(config):
    """``(dataset, train_data, valid_data, test_data)``; a DiffRec release folder named
    by ``release_path`` is converted to atomic files first."""
    # Data-parallel, rank 0 converts first and the others find the files made.
    if distributed.is_main():
        ensure_release_converted(config)
    distributed.barrier()
    if not distributed.is_main():
        ensure_release_converted(config)
    data = create_dataset(config)
    getLogger().info(data)
    return (data, *data_preparation(config, data))


def fit_and_test(trainer, train_data, valid_data, test_data, saved: bool):
    """Train with validation, then score the test set (with the best checkpoint when
    ``saved``); results and timings."""
    show = trainer.config["show_progress"]
    start = time.perf_counter()
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=show
    )
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=show)
    test_seconds = time.perf_counter() - start
    logger = getLogger()
    logger.info(
        set_color("best valid ", "yellow") + f": {dict(best_valid_result or {})}"
    )
    logger.info(set_color("test result", "yellow") + f": {dict(test_result or {})}")
    return {
        "best_valid_score": best_valid_score,
        "best_valid_result": dict(best_valid_result or {}),
        "test_result": dict(test_result or {}),
        "fit_seconds": fit_seconds,
        "test_seconds": test_seconds,
    }


def load_model(model_file: str, trusted: bool = False):
    """Rebuild config, data and model from a checkpoint for inference.

    Checkpoints written by this plugin hold only tensors and plain values and load with
    ``weights_only=True``. Other checkpoints (RecBole's own, which pickle the Config) are
    unpickled only with ``trusted=True``.

    Returns ``(config, model, dataset, train_data, valid_data, test_data)``.
    """
    # Imported here: this function's edits stay inside it (run() is edited elsewhere).
    from .errors import BadInputError

    checkpoint = load_checkpoint(model_file, trusted=trusted, map_location="cpu")
    fields = ("external_config", "registry_name", "dataset", "state_dict")
    if not isinstance(checkpoint, dict):
        checkpoint = {}  # e.g. a bare tensor or list saved with torch.save
    if checkpoint.get("format") == CHECKPOINT_FORMAT and all(
        k in checkpoint for k in fields
    ):
        external = dict(checkpoint["external_config"])
        external.pop("model", None)
        external.pop("dataset", None)
        config = config_from_settings(
            get_model(checkpoint["registry_name"]), checkpoint["dataset"], external
        )
    elif trusted and "config" in checkpoint and "state_dict" in checkpoint:
        config = checkpoint["config"]
    else:
        raise BadInputError(
            f"checkpoint {model_file}: not a recognised model checkpoint (keys "
            f"{sorted(map(str, checkpoint))[:8]}); allowed: a model file saved by a run "
            f"(format {CHECKPOINT_FORMAT!r} with {', '.join(fields)})"
        )

    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    data, train_data, valid_data, test_data = load_splits(config)
    clusters = checkpoint["state_dict"].get("item_clusters")
    model = build_model(
        config,
        train_data.dataset,
        item_clusters=None if clusters is None else clusters.numpy(),
    )
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        # Size mismatch or missing keys: a checkpoint of another dataset or model.
        first = str(err).splitlines()[0]
        raise BadInputError(
            f"checkpoint {model_file}: its weights do not fit {config['model']} on "
            f"{config['dataset']} ({first}); allowed: the checkpoint of this model and data"
        ) from None
    model.load_other_parameter(decode_array(checkpoint.get("other_parameter")))
    model.eval()
    return config, model, data, train_data, valid_data, test_data
