"""One-call training and evaluation for plugin and RecBole models, and model reloading."""

from __future__ import annotations

import os
import time
from logging import getLogger
from typing import Any, Dict, List, Optional, Union

from recbole.data import create_dataset
from recbole.utils import init_logger, init_seed, set_color

from .config import Config, config_from_settings
from .convert import ensure_release_converted
from .data import data_preparation
from .models.checks import RUN, check_settings
from .pipeline import build_model
from .registry import get_model
from .trainer import CHECKPOINT_FORMAT, decode_array, get_trainer, load_checkpoint
from .training_state import latest_state_file


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
    """
    config = Config(model, dataset, config_file_list, config_dict)
    check_model_config(config)
    saved = bool(config["saved"]) if saved is None else saved
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    getLogger().info(config)
    _, train_data, valid_data, test_data = load_splits(config)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = build_model(config, train_data.dataset)
    getLogger().info(model)
    trainer = (trainer_class or get_trainer(config.model_class))(config, model)
    resume = resume_file(config)
    if resume is not None:
        trainer.resume_training(resume)
    result = fit_and_test(trainer, train_data, valid_data, test_data, saved)
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
