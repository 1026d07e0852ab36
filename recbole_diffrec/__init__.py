"""recbole-diffrec: diffusion recommenders as a RecBole plugin."""

__version__ = "0.1.0"

from . import compat  # noqa: E402

# Before anything builds a RecBole Config: RecBole 1.2.1 needs patches on NumPy 2 / SciPy 1.13+.
compat.apply()

from .config import Config  # noqa: E402
from .data import data_preparation  # noqa: E402
from .models.diffrec import DiffRec  # noqa: E402
from .models.diffurec import DiffuRec  # noqa: E402
from .models.ldiffrec import LDiffRec  # noqa: E402
from .models.seqdiffrec import SeqDiffRec  # noqa: E402
from .models.tdiffrec import LTDiffRec, TDiffRec  # noqa: E402
from .quick_start import load_model, run  # noqa: E402
from .registry import available_models, get_model  # noqa: E402
from .trainer import Trainer, get_trainer  # noqa: E402

__all__ = [
    "Config",
    "DiffRec",
    "DiffuRec",
    "LDiffRec",
    "LTDiffRec",
    "SeqDiffRec",
    "TDiffRec",
    "Trainer",
    "available_models",
    "data_preparation",
    "get_model",
    "get_trainer",
    "load_model",
    "run",
]
