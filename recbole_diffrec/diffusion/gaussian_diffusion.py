"""Gaussian diffusion over interaction vectors, as in DiffRec (Wang et al., SIGIR 2023).

Pure PyTorch; the structure follows OpenAI's improved-diffusion: one diffusion class that
owns the schedule and its derived quantities, one reverse step (``p_sample``) and the chain
built on it (``p_sample_loop``), a separate denoiser and a schedule sampler. Respaced chains
live in ``respace.py``, the factored chain in ``factored.py``. All schedule quantities are
float64 buffers, like the reference code, and are cast to the input dtype when applied.
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional

import torch
from torch import nn

from .factored import FactoredDenoiser, can_factor, factored_chain
from .resample import (
    LossSecondMomentSampler,
    ScheduleSampler,
    UniformSampler,
    randn_rows_like,
)
from .schedules import NOISE_SCHEDULES, schedule_betas, schedule_quantities

MEAN_TYPES = ("x0", "eps")
TIMESTEP_SAMPLERS = ("importance", "uniform")
REVERSE_VARIANCES = ("small", "large")

# model(x_t, t) -> the x_0 (or noise) estimate.
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# terms(x_t, t, noise) -> {"loss": per-example losses, ...}; see GaussianDiffusion.step_losses.
StepTerms = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor], Mapping[str, torch.Tensor]
]


def check_diffusion_settings(
    *,
    mean_type: str,
    noise_schedule: str,
    noise_scale: float,
    noise_min: float,
    noise_max: float,
    steps: int,
    sampling_steps: int = 0,
    timestep_sampler: str = "importance",
) -> None:
    """Raise one ``ValueError`` naming the first invalid setting and what is allowed."""
    if mean_type not in MEAN_TYPES:
        raise ValueError(
            f"mean_type: got {mean_type!r}; allowed: {', '.join(MEAN_TYPES)}"
        )
    if noise_schedule not in NOISE_SCHEDULES:
        raise ValueError(
            f"noise_schedule: got {noise_schedule!r}; allowed: {', '.join(NOISE_SCHEDULES)}"
        )
    if timestep_sampler not in TIMESTEP_SAMPLERS:
        raise ValueError(
            f"timestep_sampler: got {timestep_sampler!r}; allowed: {', '.join(TIMESTEP_SAMPLERS)}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: got {steps!r}; allowed: an integer >= 1")
    if (
        isinstance(sampling_steps, bool)
        or not isinstance(sampling_steps, int)
        or not 0 <= sampling_steps <= steps
    ):
        raise ValueError(
            f"sampling_steps: got {sampling_steps!r}; allowed: an integer in [0, steps={steps}]"
        )
    for key, value in (("noise_min", noise_min), ("noise_max", noise_max)):
        if not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
            raise ValueError(f"{key}: got {value!r}; allowed: a number in (0, 1)")
    if not isinstance(noise_scale, (int, float)) or not 0.0 <= noise_scale <= 1.0:
        raise ValueError(
            f"noise_scale: got {noise_scale!r}; allowed: a number in [0, 1] (0 turns noise off)"
        )
    if noise_min >= noise_max:
        raise ValueError(
            f"noise_min: got {noise_min!r} with noise_max {noise_max!r}; "
            "allowed: noise_min < noise_max"
        )


def check_variance(variance: str) -> None:
    if variance not in REVERSE_VARIANCES:
        raise ValueError(
            f"variance: got {variance!r}; allowed: {', '.join(REVERSE_VARIANCES)}"
        )


class GaussianDiffusion(nn.Module):
    """Forward noising, posterior, reverse steps and the step loss of DiffRec.

    Args:
        mean_type: what the denoiser predicts, ``"x0"`` (the clean vector) or ``"eps"`` (the noise).
        noise_schedule: one of ``linear``, ``linear-var``, ``cosine``, ``binomial``, ``trunc-linear``.
        noise_scale, noise_min, noise_max: the linear schedules run from
            ``noise_scale * noise_min`` to ``noise_scale * noise_max``; ``noise_scale = 0``
            turns diffusion off (the denoiser is then a plain autoencoder, as in the reference).
        steps: number of diffusion steps T.
        beta_fixed: set the first beta to 1e-5 after building the schedule (Sohl-Dickstein
            et al. 2.4.1), before the cumulative products.
        timestep_sampler: ``"importance"`` (loss-second-moment, the reference default) or ``"uniform"``.
        history_per_term: recorded losses per step for the importance sampler.
        uniform_prob: share of uniform probability mixed into importance sampling.
        betas: float64 betas (length ``steps``) to use instead of building ``noise_schedule``
            (a derived chain such as ``SpacedDiffusion`` passes its own); unused when
            ``noise_scale`` is 0.
    """

    def __init__(
        self,
        mean_type: str = "x0",
        noise_schedule: str = "linear-var",
        noise_scale: float = 0.1,
        noise_min: float = 0.0001,
        noise_max: float = 0.02,
        steps: int = 100,
        beta_fixed: bool = True,
        timestep_sampler: str = "importance",
        history_per_term: int = 10,
        uniform_prob: float = 0.001,
        betas: Optional[torch.Tensor] = None,
    ):
        super().__init__()
        # The settings this process was built from (a derived chain reuses them).
        self.settings = dict(
            mean_type=mean_type,
            noise_schedule=noise_schedule,
            noise_scale=noise_scale,
            noise_min=noise_min,
            noise_max=noise_max,
            beta_fixed=beta_fixed,
        )
        check_diffusion_settings(
            **{k: v for k, v in self.settings.items() if k != "beta_fixed"},
            steps=steps,
            timestep_sampler=timestep_sampler,
        )
        self.mean_type = mean_type
        self.noise_scale = float(noise_scale)
        self.steps = steps
        self.sampler: ScheduleSampler = (
            LossSecondMomentSampler(steps, history_per_term, uniform_prob)
            if timestep_sampler == "importance"
            else UniformSampler(steps)
        )
        if not self.noisy:
            return
        if betas is None:
            betas = schedule_betas(
                noise_schedule, steps, noise_scale, noise_min, noise_max, beta_fixed
            )
        if len(betas) != steps:
            raise ValueError(f"betas: got {len(betas)} for steps={steps}")
        for name, value in schedule_quantities(betas).items():
            # Derived from the settings: not saved, rebuilt on construction.
            self.register_buffer(name, value, persistent=False)

    @property
    def noisy(self) -> bool:
        return self.noise_scale != 0.0

    @staticmethod
    def _at(arr: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``arr[t]`` as a column broadcastable against ``like``, in ``like``'s dtype."""
        out = arr[t].to(like.dtype)
        return out.view(-1, *([1] * (like.dim() - 1)))

    @staticmethod
    def _steps(like: torch.Tensor, i: int) -> torch.Tensor:
        """Step ``i`` for every row of ``like``."""
        return torch.full((like.shape[0],), i, device=like.device, dtype=torch.long)

    # ----------------------------------------------------------------- forward process
    def q_sample(
        self,
        x_start: torch.Tensor,
        t: torch.Tensor,
        noise: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)."""
        if noise is None:
            noise = randn_rows_like(x_start)
        return (
            self._at(self.sqrt_alphas_cumprod, t, x_start) * x_start
            + self._at(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise
        )

    def q_posterior_mean_variance(
        self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ):
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0)."""
        mean = (
            self._at(self.posterior_mean_coef1, t, x_t) * x_start
            + self._at(self.posterior_mean_coef2, t, x_t) * x_t
        )
        return (
            mean,
            self._at(self.posterior_variance, t, x_t),
            self._at(self.posterior_log_variance_clipped, t, x_t),
        )

    def predict_xstart_from_eps(
        self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        return (
            self._at(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - self._at(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    # ----------------------------------------------------------------- reverse process
    def p_mean_variance(self, model: Denoiser, x_t: torch.Tensor, t: torch.Tensor):
        """Apply the denoiser: mean and log variance of p(x_{t-1} | x_t) and the x_0 estimate.

        Without noise (``noise_scale = 0``) the step is the denoiser's output and has no
        variance (``log_variance`` None).
        """
        output = model(x_t, t)
        if not self.noisy:
            return {"mean": output, "log_variance": None, "pred_xstart": output}
        pred_xstart = (
            output
            if self.mean_type == "x0"
            else self.predict_xstart_from_eps(x_t, t, output)
        )
        mean, _, log_variance = self.q_posterior_mean_variance(pred_xstart, x_t, t)
        return {"mean": mean, "log_variance": log_variance, "pred_xstart": pred_xstart}

    def p_sample(
        self,
        model: Denoiser,
        x_t: torch.Tensor,
        t: torch.Tensor,
        sampling_noise: bool = False,
        variance: str = "small",
        noise: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """One reverse step x_t -> x_{t-1}: ``{"sample", "pred_xstart"}``.

        The sample is the posterior mean, plus ``exp(0.5 log variance) * noise`` where
        ``sampling_noise`` and t > 0. ``variance``: ``"small"`` the posterior variance
        (DiffRec), ``"large"`` beta_t (DiffuRec). ``noise`` is drawn when not given, and only
        when some t > 0 (so a chain draws nothing at its last step).
        """
        check_variance(variance)
        out = self.p_mean_variance(model, x_t, t)
        sample = out["mean"]
        nonzero = t != 0
        if sampling_noise and self.noisy and bool(nonzero.any()):
            log_variance = (
                out["log_variance"]
                if variance == "small"
                else self._at(self.large_log_variance, t, sample)
            )
            if noise is None:
                noise = randn_rows_like(sample)
            mask = nonzero.view(-1, *([1] * (sample.dim() - 1)))
            sample = torch.where(
                mask, sample + torch.exp(0.5 * log_variance) * noise, sample
            )
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    @torch.no_grad()
    def p_sample_loop(
        self,
        model: Denoiser,
        x_t: torch.Tensor,
        sampling_noise: bool = False,
        variance: str = "small",
    ) -> torch.Tensor:
        """Every reverse step from ``x_t`` (taken as step T), one :meth:`p_sample` each."""
        for i in reversed(range(self.steps)):
            step = self.p_sample(
                model, x_t, self._steps(x_t, i), sampling_noise, variance
            )
            x_t = step["sample"]
        return x_t

    @torch.no_grad()
    def p_sample_loop_factored(
        self, model: FactoredDenoiser, x_t: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`p_sample_loop` without noise on the denoiser's hidden sizes (see
        ``factored.py``); refused for a denoiser that cannot be factored."""
        coef_a, coef_b = (c.tolist() for c in self.reverse_coefficients())
        return factored_chain(model, x_t, coef_a, coef_b)

    def reverse_coefficients(self):
        """(A, B) with mean(x_{t-1}) = A[t] x_t + B[t] model(x_t, t), as float64."""
        if not self.noisy:  # no diffusion: x_{t-1} = model(x_t)
            ones = torch.ones(self.steps, dtype=torch.float64)
            return torch.zeros_like(ones), ones
        if self.mean_type == "x0":
            return self.posterior_mean_coef2, self.posterior_mean_coef1
        # eps: x0 = sqrt(1/abar) x_t - sqrt(1/abar - 1) eps, then the posterior mean
        return (
            self.posterior_mean_coef1 * self.sqrt_recip_alphas_cumprod
            + self.posterior_mean_coef2,
            -self.posterior_mean_coef1 * self.sqrt_recipm1_alphas_cumprod,
        )

    @torch.no_grad()
    def reconstruct(
        self,
        model: Denoiser,
        x_start: torch.Tensor,
        sampling_steps: int = 0,
        sampling_noise: bool = False,
        factored: bool = True,
    ) -> torch.Tensor:
        """DiffRec inference: noise the history to step ``sampling_steps`` (0: keep it as is),
        then run all ``steps`` reverse steps (posterior noise when ``sampling_noise``).

        With ``factored`` (default), no noise and a denoiser that :func:`can_factor`, the
        chain runs on the denoiser's hidden sizes: equal up to float rounding, faster.
        """
        if not 0 <= sampling_steps <= self.steps:
            raise ValueError(
                f"sampling_steps: got {sampling_steps}; allowed: an integer in [0, steps={self.steps}]"
            )
        x_t = x_start
        if sampling_steps > 0 and self.noisy:
            x_t = self.q_sample(x_start, self._steps(x_start, sampling_steps - 1))
        if factored and not sampling_noise and can_factor(model):
            return self.p_sample_loop_factored(model, x_t)
        return self.p_sample_loop(model, x_t, sampling_noise)

    # ----------------------------------------------------------------- training
    def step_losses(
        self, x_start: torch.Tensor, terms: StepTerms
    ) -> Dict[str, torch.Tensor]:
        """The diffusion step loss every model here trains with.

        Draw a step per example from the schedule sampler, noise ``x_start`` to it
        (x_t = x_start when ``noise_scale`` is 0), score ``terms(x_t, t, noise)`` (a dict
        with the per-example ``"loss"`` and anything else the model wants back), record
        the losses in the sampler and return the dict with ``"loss"`` divided by the
        importance weight p_t (so its expectation does not depend on the sampler).
        """
        t, pt = self.sampler.sample(x_start.shape[0], x_start.device)
        noise = randn_rows_like(x_start)
        x_t = self.q_sample(x_start, t, noise) if self.noisy else x_start
        out = dict(terms(x_t, t, noise))
        self.sampler.update(t, out["loss"])
        out["loss"] = out["loss"] / pt
        return out

    def training_losses(
        self, model: Denoiser, x_start: torch.Tensor, reweight: bool = True
    ) -> Dict[str, torch.Tensor]:
        """DiffRec's step loss (:meth:`step_losses` with :meth:`denoising_terms`):
        ``{"loss": per-example losses divided by p_t, "pred_xstart": the x_0 estimate}``.
        """
        return self.step_losses(
            x_start,
            lambda x_t, t, noise: self.denoising_terms(
                model, x_start, x_t, t, noise, reweight
            ),
        )

    def denoising_terms(
        self,
        model: Denoiser,
        x_start: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        reweight: bool = True,
    ) -> Dict[str, torch.Tensor]:
        """Mean squared error over items against x_0 (or the noise), weighted by the ELBO
        step weights when ``reweight``, and the model's x_0 estimate."""
        output = model(x_t, t)
        target = x_start if self.mean_type == "x0" else noise
        mse = ((target - output) ** 2).mean(dim=1)
        pred_xstart = (
            output
            if self.mean_type == "x0"
            else self.predict_xstart_from_eps(x_t, t, output)
        )
        if not (reweight and self.noisy):
            return {"loss": mse, "pred_xstart": pred_xstart}
        if self.mean_type == "x0":
            weight = self.x0_loss_weight[t].to(mse.dtype)
            loss = mse
        else:
            weight = self.eps_loss_weight[t].to(mse.dtype)
            # At t = 0 the eps model is scored on its x_0 reconstruction.
            recon = ((x_start - pred_xstart) ** 2).mean(dim=1) / 2.0
            loss = torch.where(t == 0, recon, mse)
        return {"loss": weight * loss, "pred_xstart": pred_xstart}
