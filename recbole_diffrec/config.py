"""RecBole ``Config`` that knows the plugin's models and their default yaml.

RecBole's Config merges ``recbole/properties/model/<ClassName>.yaml`` for any class whose
name matches one of its models, so a plugin ``DiffRec`` would silently get RecBole's DiffRec
defaults. This Config loads the plugin's own yaml (shipped as package data) instead, and
resolves model names through the explicit registry.
"""

from __future__ import annotations

import difflib
import os
import warnings
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Dict, FrozenSet, Optional, Sequence

import recbole
import yaml
from recbole.config import Config as RecBoleConfig

from . import __version__
from .atomic_check import check_dataset_files
from .errors import BadInputError, MissingInputError, UnknownSettingWarning
from .registry import get_model, is_plugin_model
from .utils import plain_argv, settings_file

PROPERTIES = resources.files("recbole_diffrec") / "properties"
RECBOLE_PROPERTIES = Path(recbole.__file__).parent / "properties"
# Settings read by RecBole or the plugin that no yaml declares.
UNDECLARED_KEYS = frozenset(
    {
        "model",
        "dataset",
        "config_files",
        "device",
        "encoding",
        "local_rank",
        "world_size",
        "single_spec",
        "ip",
        "port",
        "nproc",
        "offset",
        "group_offset",
        "MODEL_TYPE",
        "release_path",
        "sequence_file",
        "recbole_diffrec",
    }
)


class Config(RecBoleConfig):
    """Drop-in replacement for ``recbole.config.Config``.

    ``model`` may be a plugin or RecBole model class, a registry name (``"DiffRec"``) or a
    qualified RecBole name (``"recbole.DiffRec"``); the plugin's model wins a bare name.
    """

    def __init__(
        self, model=None, dataset=None, config_file_list=None, config_dict=None
    ):
        super().__init__(model, dataset, config_file_list, config_dict)
        warn_unknown_settings(self.external_config_dict, self.model_class)
        # Malformed atomic files fail here, named, not deep inside RecBole's loading.
        check_dataset_files(self)

    def _init_device(self):
        """RecBole's device choice; in a data-parallel process (started by
        :func:`.distributed.launch`, or given ``local_rank`` as RecBole's ``run_recboles``
        does) the process group is joined with the backend that fits the device, where
        RecBole always initialises NCCL."""
        from . import distributed

        worker = distributed.worker_context()
        final = self.final_config_dict
        if worker is None and "local_rank" not in final:
            return super()._init_device()
        local_rank = int(worker["local_rank"] if worker else final["local_rank"])
        gpu_id = final.get("gpu_id")
        gpu_id = (
            ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else gpu_id
        )
        final["gpu_id"] = "" if gpu_id is None else str(gpu_id)
        os.environ["CUDA_VISIBLE_DEVICES"] = final["gpu_id"]
        final["local_rank"] = local_rank
        final["device"] = distributed.init_process_group(final, local_rank)
        found = distributed.settings(final)
        final["world_size"] = found.world_size
        final["offset"] = found.offset
        final["single_spec"] = False
        if found.offset + local_rank != 0:
            final["state"] = "error"
            final["show_progress"] = False
            final["verbose"] = False

    def _load_config_files(self, file_list) -> Dict[str, Any]:
        settings: Dict[str, Any] = {}
        for file in file_list or ():
            if not os.path.isfile(file):
                raise MissingInputError(
                    f"config_files: {file} does not exist (relative paths are read from "
                    f"{os.getcwd()}); allowed: existing yaml files separated by spaces"
                )
            settings.update(self._load_yaml(file))
        return settings

    def _load_cmd_line(self) -> Dict[str, Any]:
        try:
            return super()._load_cmd_line()
        except SyntaxError as err:  # RecBole's "duplicate commend arg"
            raise BadInputError(
                f"command line: {err}; allowed: each --key=value once"
            ) from None

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if isinstance(model, str):
            model = get_model(model)
        return super()._get_model_and_dataset(model, dataset)

    def _load_yaml(self, file: str) -> Dict[str, Any]:
        """A yaml file of settings; a syntax error names the file and line."""
        with open(file, encoding="utf-8", errors="replace") as f:
            text = f.read()
        try:
            settings = yaml.load(text, Loader=self.yaml_loader)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None) or getattr(
                err, "context_mark", None
            )
            line = f", line {mark.line + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise BadInputError(
                f"{file}{line}: not valid yaml ({problem}); allowed: key: value lines"
            ) from None
        if settings is not None and not isinstance(settings, dict):
            raise BadInputError(
                f"{file}: got a yaml {type(settings).__name__}; allowed: a mapping of "
                "settings (key: value lines)"
            )
        return settings or {}

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


@lru_cache(maxsize=None)
def _declared_keys() -> FrozenSet[str]:
    """Every top-level key of RecBole's and the plugin's yaml (models, datasets,
    quick-start settings), read once."""
    keys = set(UNDECLARED_KEYS)
    files = list(RECBOLE_PROPERTIES.rglob("*.yaml"))
    files += list(Path(str(PROPERTIES)).rglob("*.yaml"))
    for file in files:
        with open(file, encoding="utf-8") as f:
            settings = yaml.safe_load(f)
        if isinstance(settings, dict):
            keys.update(map(str, settings))
    return frozenset(keys)


def known_settings(model_class: Any = None) -> FrozenSet[str]:
    """The declared keys plus those the model's rules read."""
    keys = set(_declared_keys())
    for rule in getattr(model_class, "config_rules", ()):
        keys.update(getattr(rule, "keys", ()) or ())
        if isinstance(getattr(rule, "key", None), str):
            keys.add(rule.key)
    return frozenset(keys)


def warn_unknown_settings(settings: Dict[str, Any], model_class: Any = None) -> None:
    """Warn (RecBole accepts extra keys, so no error) about each key nobody declares,
    naming the closest known one: a misspelt key would otherwise be ignored silently."""
    known = known_settings(model_class)
    for key in sorted(map(str, settings)):
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else "; it is ignored"
        warnings.warn(
            f"{key} is not a known setting{hint}", UnknownSettingWarning, stacklevel=3
        )


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
