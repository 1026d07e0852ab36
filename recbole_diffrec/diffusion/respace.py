"""Chains over a subset of a diffusion's steps, for faster inference (Improved DDPM's
respacing): the kept steps keep their alpha_bar, so the new betas are
1 - abar_s / abar_prev_kept, and the denoiser still sees the original step indices."""

from __future__ import annotations

from typing import List, Sequence

import torch

from .factored import FactoredDenoiser
from .gaussian_diffusion import Denoiser, GaussianDiffusion


def evenly_spaced_steps(steps: int, count: int) -> List[int]:
    """``count`` step indices from 0 to steps - 1, evenly spaced (Improved DDPM)."""
    stride = (steps - 1) / (count - 1) if count > 1 else 1
    return sorted({round(i * stride) for i in range(count)})


class _OriginalSteps:
    """A denoiser seen from a spaced chain: step s of the chain is ``timestep_map[s]``."""

    def __init__(self, model: Denoiser, timestep_map: torch.Tensor):
        self.model = model
        self.timestep_map = timestep_map

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.timestep_map[t])


class _OriginalStepsFactored(_OriginalSteps):
    """The same for a :class:`FactoredDenoiser`, which it implements in turn."""

    @property
    def training(self) -> bool:
        return self.model.training

    @property
    def affine_input(self) -> bool:
        return self.model.affine_input

    def input_projection(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.input_projection(x)

    def hidden_from_projection(
        self, projected: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        return self.model.hidden_from_projection(
            projected, self.timestep_map[timesteps]
        )

    def readout(self):
        return self.model.readout()


class SpacedDiffusion(GaussianDiffusion):
    """``base``'s process restricted to the steps ``use_steps`` (sorted, distinct).

    Every entry point that takes a denoiser hands it the original step indices; the
    schedule sampler is uniform over the kept steps.
    """

    def __init__(self, base: GaussianDiffusion, use_steps: Sequence[int]):
        keep = sorted({int(s) for s in use_steps})
        if not keep or keep[0] < 0 or keep[-1] >= base.steps:
            raise ValueError(
                f"use_steps: got {list(use_steps)!r}; allowed: at least one step in "
                f"[0, steps={base.steps})"
            )
        device = next(base.buffers(), torch.empty(0)).device
        betas = None
        if base.noisy:
            abar = base.alphas_cumprod[keep]
            prev = torch.cat(
                [torch.ones(1, dtype=abar.dtype, device=abar.device), abar[:-1]]
            )
            betas = 1.0 - abar / prev
        super().__init__(
            **base.settings, steps=len(keep), timestep_sampler="uniform", betas=betas
        )
        self.register_buffer(
            "timestep_map", torch.tensor(keep, device=device), persistent=False
        )

    def wrap_model(self, model: Denoiser) -> _OriginalSteps:
        wrapper = (
            _OriginalStepsFactored
            if isinstance(model, FactoredDenoiser)
            else _OriginalSteps
        )
        return wrapper(model, self.timestep_map)

    # The entry points that call the denoiser, each wrapping it once.
    def p_mean_variance(self, model: Denoiser, x_t: torch.Tensor, t: torch.Tensor):
        return super().p_mean_variance(self.wrap_model(model), x_t, t)

    def p_sample_loop_factored(
        self, model: FactoredDenoiser, x_t: torch.Tensor
    ) -> torch.Tensor:
        return super().p_sample_loop_factored(self.wrap_model(model), x_t)

    def denoising_terms(self, model: Denoiser, *args, **kwargs):
        return super().denoising_terms(self.wrap_model(model), *args, **kwargs)


def respace(diffusion: GaussianDiffusion, count: int) -> SpacedDiffusion:
    """``diffusion`` over ``count`` evenly spaced steps (``count = steps`` keeps them all)."""
    if (
        isinstance(count, bool)
        or not isinstance(count, int)
        or not 1 <= count <= diffusion.steps
    ):
        raise ValueError(
            f"inference_steps: got {count!r}; allowed: an integer in [1, steps={diffusion.steps}]"
        )
    return SpacedDiffusion(diffusion, evenly_spaced_steps(diffusion.steps, count))
