"""Noise schedules for Gaussian diffusion over interaction vectors.

Each schedule returns the per-step betas as a float64 numpy array of length ``steps``,
following the DiffRec reference code (Wang et al., SIGIR 2023) and Improved DDPM;
:func:`schedule_quantities` derives everything the diffusion uses from the betas.
"""

from __future__ import annotations

import math
from typing import Callable, Dict

import numpy as np
import torch

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


def schedule_betas(
    schedule: str,
    steps: int,
    noise_scale: float,
    noise_min: float,
    noise_max: float,
    beta_fixed: bool,
) -> torch.Tensor:
    """:func:`get_betas` as float64 torch, the first set to 1e-5 with ``beta_fixed``
    (Sohl-Dickstein et al. 2.4.1, before the cumulative products); all must be in (0, 1].
    """
    betas = torch.tensor(
        get_betas(schedule, steps, noise_scale, noise_min, noise_max),
        dtype=torch.float64,
    )
    if beta_fixed:
        betas[0] = 1e-5
    if not ((betas > 0) & (betas <= 1)).all():
        raise ValueError(
            f"noise_schedule: the {schedule!r} schedule with noise_scale={noise_scale}, "
            f"noise_min={noise_min}, noise_max={noise_max}, steps={steps} gives betas "
            "outside (0, 1]; lower noise_scale or noise_max"
        )
    return betas


def schedule_quantities(betas: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Everything the diffusion derives from its float64 ``betas``, by name (same device)."""
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    alphas_cumprod_prev = torch.cat(
        [
            torch.ones(1, dtype=torch.float64, device=betas.device),
            alphas_cumprod[:-1],
        ]
    )
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    snr_prev = torch.cat([snr[:1], snr[:-1]])  # placeholder at t = 0, overwritten below

    # Loss weights of the reweighted ELBO: x0-prediction uses SNR(t-1) - SNR(t) (DiffRec
    # Eq. 11); eps-prediction the DDPM weight. At t = 0 the weight is 1 (Eq. 12).
    x0_weight = snr_prev - snr
    x0_weight[0] = 1.0
    eps_weight = torch.ones_like(betas)
    eps_weight[1:] = (1.0 - alphas_cumprod[1:]) / (
        (1.0 - alphas_cumprod_prev[1:]) ** 2 * alphas[1:]
    )

    # log(0) at t = 0 is replaced by the t = 1 value, as in improved-diffusion; a one-step
    # chain has no t = 1 and never adds noise at t = 0, so its beta stands in.
    first = posterior_variance[1:2] if len(betas) > 1 else betas[:1]
    return {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
        "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1.0).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": torch.log(
            torch.cat([first, posterior_variance[1:]])
        ),
        # DDPM's "fixed large" reverse variance: beta_t, with the t = 1 posterior
        # variance at t = 0 (what DiffuRec samples with).
        "large_log_variance": torch.log(torch.cat([first, betas[1:]])),
        "posterior_mean_coef1": betas
        * alphas_cumprod_prev.sqrt()
        / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev)
        * alphas.sqrt()
        / (1.0 - alphas_cumprod),
        "x0_loss_weight": x0_weight,
        "eps_loss_weight": eps_weight,
    }
