"""recbole-diffrec: diffusion recommenders as a RecBole plugin.

The public names below load on first use, so ``import recbole_diffrec.diffusion`` (the
pure-PyTorch diffusion core) does not import RecBole.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import compat  # noqa: E402

# Before anything builds a RecBole Config: RecBole 1.2.1 needs patches on NumPy 2 / SciPy 1.13+.
compat.apply()

from .utils import lazy_exports  # noqa: E402

# Public name -> the module that defines it.
_EXPORTS = {
    "Config": ".config",
    "config_from_settings": ".config",
    "data_preparation": ".data",
    "DiffRec": ".models.diffrec",
    "DiffuRec": ".models.diffurec",
    "LDiffRec": ".models.ldiffrec",
    "SeqDiffRec": ".models.seqdiffrec",
    "TDiffRec": ".models.tdiffrec",
    "LTDiffRec": ".models.tdiffrec",
    "prepare_item_clusters": ".clustering",
    "build_model": ".pipeline",
    "run": ".quick_start",
    "load_model": ".quick_start",
    "available_models": ".registry",
    "get_model": ".registry",
    "Trainer": ".trainer",
    "get_trainer": ".trainer",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
