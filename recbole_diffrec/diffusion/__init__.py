"""Diffusion core in pure PyTorch (no RecBole imports)."""

from .denoiser import MLPDenoiser, timestep_embedding
from .factored import FactoredDenoiser, can_factor, factored_chain
from .gaussian_diffusion import (
    MEAN_TYPES,
    TIMESTEP_SAMPLERS,
    GaussianDiffusion,
    check_diffusion_settings,
)
from .resample import LossSecondMomentSampler, ScheduleSampler, UniformSampler
from .respace import SpacedDiffusion, evenly_spaced_steps, respace
from .schedules import NOISE_SCHEDULES, get_betas

__all__ = [
    "GaussianDiffusion",
    "SpacedDiffusion",
    "respace",
    "evenly_spaced_steps",
    "MLPDenoiser",
    "FactoredDenoiser",
    "can_factor",
    "factored_chain",
    "timestep_embedding",
    "check_diffusion_settings",
    "get_betas",
    "NOISE_SCHEDULES",
    "MEAN_TYPES",
    "TIMESTEP_SAMPLERS",
    "ScheduleSampler",
    "UniformSampler",
    "LossSecondMomentSampler",
]
