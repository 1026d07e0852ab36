"""Noise schedules for Gaussian diffusion over interaction vectors.

Each schedule returns the per-step betas as a float64 numpy array of length ``steps``,
following the DiffRec reference code (Wang et al., SIGIR 2023) and Improved DDPM.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

NOISE_SCHEDULES = ("linear", "linear-var", "cosine", "binomial", "trunc-linear")

# Cap used by Improved DDPM to avoid singular steps at the end of the chain.
MAX_BETA = 0.999


def betas_from_linear_variance(variance: np.ndarray, max_beta: float = MAX_BETA):
    """Betas whose cumulative variance 1 - alpha_bar_t follows ``variance`` exactly."""
    alpha_bar = 1.0 - np.asarray(variance, dtype=np.float64)
    betas = np.empty_like(alpha_bar)
    betas[0] = 1.0 - alpha_bar[0]
    betas[1:] = np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], max_beta)
    return betas


def betas_for_alpha_bar(
    steps: int, alpha_bar: Callable[[float], float], max_beta: float = MAX_BETA
) -> np.ndarray:
    """Discretise a continuous alpha_bar(t), t in [0, 1], into ``steps`` betas."""
    return np.array(
        [
            min(1.0 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta)
            for i in range(steps)
        ],
        dtype=np.float64,
    )


def cosine_alpha_bar(t: float) -> float:
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def truncated_linear_betas(steps: int) -> np.ndarray:
    """DiffuRec's schedule (Li et al., TOIS 2023): DDPM's linear betas rescaled to ``steps``
    (scale 1000 / steps) and shifted up by 0.01, so short chains still reach heavy noise.

    For chains shorter than 21 steps the last beta would exceed 1; the reference code then
    ends the ramp at scale x 0.001 + 0.01 instead, and so does this.
    """
    scale = 1000.0 / steps
    end = scale * 0.02 + 0.01
    if end > 1:
        end = scale * 0.001 + 0.01
    return np.linspace(scale * 1e-4 + 0.01, end, steps, dtype=np.float64)


def get_betas(
    schedule: str,
    steps: int,
    noise_scale: float,
    noise_min: float,
    noise_max: float,
) -> np.ndarray:
    """Betas of ``schedule``; ``noise_*`` only matter for ``linear`` and ``linear-var``."""
    if schedule in ("linear", "linear-var"):
        ramp = np.linspace(
            noise_scale * noise_min, noise_scale * noise_max, steps, dtype=np.float64
        )
        return ramp if schedule == "linear" else betas_from_linear_variance(ramp)
    if schedule == "cosine":
        return betas_for_alpha_bar(steps, cosine_alpha_bar)
    if schedule == "trunc-linear":
        return truncated_linear_betas(steps)
    if schedule == "binomial":
        # Sohl-Dickstein et al. 2015, section 2.4.1: beta_t = 1 / (T - t + 1)
        return 1.0 / (steps - np.arange(steps, dtype=np.float64) + 1.0)
    raise ValueError(
        f"noise_schedule: unknown schedule {schedule!r}; allowed: {', '.join(NOISE_SCHEDULES)}"
    )
