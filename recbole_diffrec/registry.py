"""Explicit model registry: plugin models by name, RecBole's models by name or ``recbole.<Name>``.

Plugin names win: ``DiffRec`` is this plugin's model and ``recbole.DiffRec`` is RecBole's own.
RecBole's models are found by scanning its model packages (without importing the optional
``exlib`` package, whose import fails without lightgbm/xgboost).
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Type

from .models.diffrec import DiffRec
from .models.diffurec import DiffuRec
from .models.graph_filters import BSPM, GFCF
from .models.ldiffrec import LDiffRec
from .models.seqdiffrec import SeqDiffRec
from .models.tdiffrec import LTDiffRec, TDiffRec

PLUGIN_MODELS: Dict[str, type] = {
    "DiffRec": DiffRec,
    "LDiffRec": LDiffRec,
    "TDiffRec": TDiffRec,
    "LTDiffRec": LTDiffRec,
    # sequential
    "DiffuRec": DiffuRec,
    "SeqDiffRec": SeqDiffRec,
    # training-free graph filters
    "GFCF": GFCF,
    "BSPM": BSPM,
}

RECBOLE_PREFIX = "recbole."
_RECBOLE_PACKAGES = (
    "general_recommender",
    "sequential_recommender",
    "context_aware_recommender",
    "knowledge_aware_recommender",
)


def is_plugin_model(model_class: type) -> bool:
    return any(model_class is cls for cls in PLUGIN_MODELS.values())


def registry_name(model_class: type) -> str:
    """The name under which :func:`get_model` finds ``model_class``."""
    if is_plugin_model(model_class):
        return model_class.__name__
    return RECBOLE_PREFIX + model_class.__name__


@lru_cache(maxsize=None)
def recbole_models() -> Dict[str, str]:
    """RecBole model class name -> module path, read from the source files."""
    import recbole.model

    root = Path(recbole.model.__file__).parent
    found: Dict[str, str] = {}
    for package in _RECBOLE_PACKAGES:
        for path in sorted((root / package).glob("*.py")):
            if path.stem == "__init__":
                continue
            text = path.read_text(encoding="utf-8")
            for name in re.findall(r"^class (\w+)\(", text, flags=re.M):
                if name.lower() == path.stem:
                    found[name] = f"recbole.model.{package}.{path.stem}"
    return found


def available_models() -> List[str]:
    plugin = sorted(PLUGIN_MODELS)
    recbole = sorted(
        (RECBOLE_PREFIX + n if n in PLUGIN_MODELS else n) for n in recbole_models()
    )
    return plugin + recbole


def get_model(name: str) -> Type:
    """The model class for ``name``; one clear error listing the choices if unknown."""
    if not isinstance(name, str):
        return name
    if name in PLUGIN_MODELS:
        return PLUGIN_MODELS[name]
    recbole_name = (
        name[len(RECBOLE_PREFIX) :] if name.startswith(RECBOLE_PREFIX) else name
    )
    modules = recbole_models()
    if recbole_name in modules:
        return getattr(importlib.import_module(modules[recbole_name]), recbole_name)
    raise ValueError(
        f"model: unknown model {name!r}. Plugin models: {', '.join(sorted(PLUGIN_MODELS))}. "
        f"RecBole models: {', '.join(m for m in available_models() if m not in PLUGIN_MODELS)}"
    )
