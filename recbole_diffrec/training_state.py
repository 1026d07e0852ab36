"""Training-state files: everything a killed run needs to continue bit-for-bit.

A state file is written at an epoch boundary (after that epoch's evaluation) beside the
best-model file, as ``<best-model file>.state``. It holds only tensors and plain values,
so it loads with ``torch.load(weights_only=True)``: the model and optimizer, every random
number generator (torch, CUDA, numpy, Python's ``random``, the train dataloader's
shuffling generator), the early-stopping counters and the best-model file's path.
"""

from __future__ import annotations

import glob
import os
import random
from typing import Any, Dict, Optional

import numpy as np
import torch

from .utils import write_atomically

STATE_FORMAT = "recbole_diffrec-training-state-1"
STATE_SUFFIX = ".state"


class NonFiniteLossError(ValueError):
    """A training loss became NaN or infinite (message: :func:`non_finite_message`)."""


def non_finite_message(epoch: int, batch: int, batches: int, files=()) -> str:
    """Where the loss broke (epoch as logged, batch counted from 1), the usual causes and
    the files written before it, which stay as they were."""
    kept = [f for f in files if f and os.path.exists(f)]
    return (
        f"training loss is not finite (NaN or Inf) at epoch {epoch}, batch {batch} "
        f"(of {batches}); usually a learning rate too high for the model, or noise "
        "schedule bounds (noise_min, noise_max, noise_scale) that make a step divide "
        "by almost 0. "
        + (
            "Last good files kept: " + ", ".join(kept)
            if kept
            else "No checkpoint was written yet."
        )
    )


def state_file_for(model_file: str) -> str:
    """The training-state file written beside a best-model file."""
    return f"{model_file}{STATE_SUFFIX}"


def capture_rng(generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
    """Every generator a training epoch draws from, as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {
            "version": version,
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "loader": None if generator is None else generator.get_state(),
    }
    return state


def restore_rng(
    state: Dict[str, Any], generator: Optional[torch.Generator] = None
) -> None:
    """Put back what :func:`capture_rng` recorded."""
    torch.set_rng_state(state["torch"].cpu())
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["gauss"],
        )
    )
    python = state["python"]
    internal = tuple(int(v) for v in python["internal"].tolist())
    random.setstate((python["version"], internal, python["gauss_next"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:  # a different GPU count: only the first device's stream can carry over
            torch.cuda.set_rng_state(cuda[0].cpu())
    if generator is not None and state.get("loader") is not None:
        generator.set_state(state["loader"].cpu())


def save_atomic(state: Dict[str, Any], path: str) -> None:
    """``torch.save`` through a sibling temporary file and a rename, so a kill during the
    save never leaves a truncated file."""
    write_atomically(path, lambda handle: torch.save(state, handle), binary=True)


def latest_state_file(checkpoint_dir: str, model: str, dataset: str) -> Optional[str]:
    """The newest state file in ``checkpoint_dir`` written for ``model`` on ``dataset``."""
    pattern = os.path.join(glob.escape(checkpoint_dir), f"{model}-*{STATE_SUFFIX}")
    for path in sorted(glob.glob(pattern), key=os.path.getmtime, reverse=True):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # unreadable or foreign: not ours to resume
            continue
        if (
            state.get("format") == STATE_FORMAT
            and state.get("model") == model
            and state.get("dataset") == dataset
        ):
            return path
    return None
