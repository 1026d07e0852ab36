"""RecBole ``Config`` that knows the plugin's models and their default yaml.

RecBole's Config merges ``recbole/properties/model/<ClassName>.yaml`` for any class whose
name matches one of its models, so a plugin ``DiffRec`` would silently get RecBole's DiffRec
defaults. This Config loads the plugin's own yaml (shipped as package data) instead, and
resolves model names through the explicit registry.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
import os
from typing import Any, Dict, Optional, Sequence

import recbole
import yaml
from recbole.config import Config as RecBoleConfig

from . import __version__
from .registry import get_model, is_plugin_model
from .utils import plain_argv, settings_file

PROPERTIES = resources.files("recbole_diffrec") / "properties"
RECBOLE_PROPERTIES = Path(recbole.__file__).parent / "properties"


class Config(RecBoleConfig):
    """Drop-in replacement for ``recbole.config.Config``.

    ``model`` may be a plugin or RecBole model class, a registry name (``"DiffRec"``) or a
    qualified RecBole name (``"recbole.DiffRec"``); the plugin's model wins a bare name.
    """

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if isinstance(model, str):
            model = get_model(model)
        return super()._get_model_and_dataset(model, dataset)

    def _load_yaml(self, file: str) -> Dict[str, Any]:
        with open(file, encoding="utf-8") as f:
            return yaml.load(f.read(), Loader=self.yaml_loader) or {}

    def _load_internal_config_dict(self, model, model_class, dataset):
        plugin_model = is_plugin_model(model_class)
        # For a plugin model, pass a name with no RecBole yaml so RecBole's defaults stay out.
        super()._load_internal_config_dict(
            f"recbole_diffrec:{model}" if plugin_model else model, model_class, dataset
        )
        self.internal_config_dict.update(
            self._load_yaml(str(PROPERTIES / "overall.yaml"))
        )
        if not plugin_model:
            return
        for name in getattr(model_class, "config_files", (f"{model}.yaml",)):
            self.internal_config_dict.update(
                self._load_yaml(str(PROPERTIES / "model" / name))
            )
        dataset_yaml = RECBOLE_PROPERTIES / "dataset" / f"{dataset}.yaml"
        if dataset_yaml.is_file():
            # RecBole applies its dataset yaml after the model yaml; keep that order.
            self.internal_config_dict.update(self._load_yaml(str(dataset_yaml)))
        self.internal_config_dict["recbole_diffrec"] = __version__


def config_from_settings(
    model: Any,
    dataset: str,
    settings: Dict[str, Any],
    config_files: Optional[Sequence[str]] = None,
) -> Config:
    """A Config from yaml files plus explicit ``settings`` (applied last), ignoring the
    process's command line. The settings travel through a yaml file because RecBole
    eval()s string values of a ``config_dict``."""
    extra = settings_file(settings)
    try:
        with plain_argv():
            return Config(model, dataset, list(config_files or []) + [extra])
    finally:
        os.unlink(extra)
