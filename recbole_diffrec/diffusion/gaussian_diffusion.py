"""Gaussian diffusion over interaction vectors, as in DiffRec (Wang et al., SIGIR 2023).

Pure PyTorch; the structure follows OpenAI's improved-diffusion (one diffusion class that
owns the schedule and its derived quantities, a separate denoiser and a schedule sampler).
All schedule quantities are float64 buffers, like the reference code, and are cast to the
input dtype when applied.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from .resample import LossSecondMomentSampler, ScheduleSampler, UniformSampler
from .schedules import NOISE_SCHEDULES, get_betas

MEAN_TYPES = ("x0", "eps")
TIMESTEP_SAMPLERS = ("importance", "uniform")
REVERSE_VARIANCES = ("small", "large")

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

logger = logging.getLogger(__name__)


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


def evenly_spaced_steps(steps: int, count: int) -> List[int]:
    """``count`` step indices from 0 to steps - 1, evenly spaced (Improved DDPM)."""
    stride = (steps - 1) / (count - 1) if count > 1 else 1
    return sorted({round(i * stride) for i in range(count)})


class GaussianDiffusion(nn.Module):
    """Forward noising, posterior, reverse inference and the training loss of DiffRec.

    Args:
        mean_type: what the denoiser predicts, ``"x0"`` (the clean vector) or ``"eps"`` (the noise).
        noise_schedule: one of ``linear``, ``linear-var``, ``cosine``, ``binomial``.
        noise_scale, noise_min, noise_max: the linear schedules run from
            ``noise_scale * noise_min`` to ``noise_scale * noise_max``; ``noise_scale = 0``
            turns diffusion off (the denoiser is then a plain autoencoder, as in the reference).
        steps: number of diffusion steps T.
        beta_fixed: set the first beta to 1e-5 after building the schedule (Sohl-Dickstein
            et al. 2.4.1), before the cumulative products.
        timestep_sampler: ``"importance"`` (loss-second-moment, the reference default) or ``"uniform"``.
        history_per_term: recorded losses per step for the importance sampler.
        uniform_prob: share of uniform probability mixed into importance sampling.
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
    ):
        super().__init__()
        # What respaced() needs to rebuild this process with another number of steps.
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
        self.noise_schedule = noise_schedule
        self.noise_scale = float(noise_scale)
        self.steps = steps
        # The step index the denoiser sees for each step of this chain (identity unless
        # the chain was respaced for faster inference).
        self.register_buffer("timestep_map", torch.arange(steps), persistent=False)
        self.sampler: ScheduleSampler = (
            LossSecondMomentSampler(steps, history_per_term, uniform_prob)
            if timestep_sampler == "importance"
            else UniformSampler(steps)
        )
        if self.noise_scale == 0.0:
            return

        betas = torch.tensor(
            get_betas(noise_schedule, steps, noise_scale, noise_min, noise_max),
            dtype=torch.float64,
        )
        if beta_fixed:
            betas[0] = 1e-5
        if not ((betas > 0) & (betas <= 1)).all():
            raise ValueError(
                f"noise_schedule: the {noise_schedule!r} schedule with noise_scale={noise_scale}, "
                f"noise_min={noise_min}, noise_max={noise_max}, steps={steps} gives betas "
                "outside (0, 1]; lower noise_scale or noise_max"
            )
        self._register_schedule(betas)

    def _register_schedule(self, betas: torch.Tensor) -> None:
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat(
            [
                torch.ones(1, dtype=torch.float64, device=betas.device),
                alphas_cumprod[:-1],
            ]
        )
        posterior_variance = (
            betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        )
        snr = alphas_cumprod / (1.0 - alphas_cumprod)
        snr_prev = torch.cat(
            [snr[:1], snr[:-1]]
        )  # placeholder at t = 0, overwritten below

        # Loss weights of the reweighted ELBO: x0-prediction uses SNR(t-1) - SNR(t) (DiffRec
        # Eq. 11); eps-prediction the DDPM weight. At t = 0 the weight is 1 (Eq. 12).
        x0_weight = snr_prev - snr
        x0_weight[0] = 1.0
        eps_weight = torch.ones_like(betas)
        eps_weight[1:] = (1.0 - alphas_cumprod[1:]) / (
            (1.0 - alphas_cumprod_prev[1:]) ** 2 * alphas[1:]
        )

        # log(0) at t = 0 is replaced by the t = 1 value, as in improved-diffusion; a one-step
        # (respaced) chain has no t = 1 and never adds noise at t = 0, so its beta stands in.
        first = posterior_variance[1:2] if len(betas) > 1 else betas[:1]
        log_variance_clipped = torch.log(torch.cat([first, posterior_variance[1:]]))
        buffers: Dict[str, torch.Tensor] = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1.0).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": log_variance_clipped,
            # DDPM's "fixed large" reverse variance: beta_t, with the t = 1 posterior
            # variance at t = 0 (what DiffuRec samples with).
            "large_log_variance": torch.log(torch.cat([first, betas[1:]])),
            "posterior_mean_coef1": betas
            * alphas_cumprod_prev.sqrt()
            / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev)
            * alphas.sqrt()
            / (1.0 - alphas_cumprod),
            "snr": snr,
            "x0_loss_weight": x0_weight,
            "eps_loss_weight": eps_weight,
        }
        for name, value in buffers.items():
            # Derived from the settings: not saved, rebuilt on construction.
            self.register_buffer(name, value.to(betas.device), persistent=False)

    @property
    def noisy(self) -> bool:
        return self.noise_scale != 0.0

    def respaced(self, count: int) -> "GaussianDiffusion":
        """A chain over ``count`` evenly spaced steps of this one, for faster inference.

        As Improved DDPM's respacing: the kept steps keep their alpha_bar (new betas
        1 - abar_s / abar_prev_kept) and the denoiser still sees the original step index.
        ``count = steps`` gives this chain back unchanged.
        """
        if (
            isinstance(count, bool)
            or not isinstance(count, int)
            or not 1 <= count <= self.steps
        ):
            raise ValueError(
                f"inference_steps: got {count!r}; allowed: an integer in [1, steps={self.steps}]"
            )
        keep = evenly_spaced_steps(self.steps, count)
        spaced = GaussianDiffusion(
            **self.settings, steps=count, timestep_sampler="uniform"
        )
        spaced.timestep_map = torch.tensor(keep, device=self.timestep_map.device)
        if self.noisy:
            abar = self.alphas_cumprod[keep]
            prev = torch.cat(
                [torch.ones(1, dtype=abar.dtype, device=abar.device), abar[:-1]]
            )
            spaced._register_schedule(1.0 - abar / prev)
        return spaced.to(self.timestep_map.device)

    @staticmethod
    def _at(arr: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``arr[t]`` as a column broadcastable against ``like``, in ``like``'s dtype."""
        out = arr[t].to(like.dtype)
        return out.view(-1, *([1] * (like.dim() - 1)))

    # ----------------------------------------------------------------- forward process
    def q_sample(
        self,
        x_start: torch.Tensor,
        t: torch.Tensor,
        noise: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)."""
        if noise is None:
            noise = torch.randn_like(x_start)
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
        """Apply the denoiser: mean and log variance of p(x_{t-1} | x_t) and the x_0 estimate."""
        output = model(x_t, self.timestep_map[t])
        pred_xstart = (
            output
            if self.mean_type == "x0"
            else self.predict_xstart_from_eps(x_t, t, output)
        )
        mean, _, log_variance = self.q_posterior_mean_variance(pred_xstart, x_t, t)
        return {"mean": mean, "log_variance": log_variance, "pred_xstart": pred_xstart}

    @torch.no_grad()
    def p_sample(
        self,
        model: Denoiser,
        x_start: torch.Tensor,
        sampling_steps: int = 0,
        sampling_noise: bool = False,
        factored: bool = True,
        variance: str = "small",
    ) -> torch.Tensor:
        """DiffRec inference: noise the history to step ``sampling_steps`` (0: keep it as is),
        then run all ``steps`` reverse steps taking the posterior mean.

        With ``factored`` (default) and a denoiser that supports it (eval mode, affine input
        layer, linear read-out), the same chain runs on the denoiser's hidden sizes instead
        of the item count: equal up to float rounding, several times faster.

        ``variance`` is the reverse-step noise when ``sampling_noise``: ``"small"`` the
        posterior variance (DiffRec), ``"large"`` beta_t (DiffuRec).
        """
        if variance not in REVERSE_VARIANCES:
            raise ValueError(
                f"variance: got {variance!r}; allowed: {', '.join(REVERSE_VARIANCES)}"
            )
        if not 0 <= sampling_steps <= self.steps:
            raise ValueError(
                f"sampling_steps: got {sampling_steps}; allowed: an integer in [0, steps={self.steps}]"
            )
        batch = x_start.shape[0]
        x_t = x_start
        if sampling_steps > 0 and self.noisy:
            t = torch.full(
                (batch,), sampling_steps - 1, device=x_start.device, dtype=torch.long
            )
            x_t = self.q_sample(x_start, t)
        if (
            factored
            and not sampling_noise
            and getattr(model, "supports_factored_chain", lambda: False)()
        ):
            return self._p_sample_factored(model, x_t)
        for i in reversed(range(self.steps)):
            t = torch.full((batch,), i, device=x_start.device, dtype=torch.long)
            if not self.noisy:
                x_t = model(x_t, self.timestep_map[t])
                continue
            out = self.p_mean_variance(model, x_t, t)
            x_t = out["mean"]
            if sampling_noise and i > 0:
                log_variance = (
                    out["log_variance"]
                    if variance == "small"
                    else self._at(self.large_log_variance, t, x_t)
                )
                x_t = x_t + torch.exp(0.5 * log_variance) * torch.randn_like(x_t)
        return x_t

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

    def _p_sample_factored(self, model, x_t: torch.Tensor) -> torch.Tensor:
        # Track x_t = c * x_T + W_out @ acc_h + acc_b * b_out and z_t = W_in x_t; each
        # reverse step x <- A x + B (W_out h + b_out) then costs hidden-sized products only.
        coef_a, coef_b = (c.tolist() for c in self.reverse_coefficients())
        w_out, b_out = model.readout()
        w_in_out = model.input_projection(w_out.T)  # (hidden_last, first_hidden)
        b_in_out = model.input_projection(b_out[None])[0]
        z = model.input_projection(x_t)
        acc_h = torch.zeros(
            x_t.shape[0], w_out.shape[1], dtype=x_t.dtype, device=x_t.device
        )
        acc_b, c = 0.0, 1.0
        for i in reversed(range(self.steps)):
            t = torch.full((x_t.shape[0],), i, device=x_t.device, dtype=torch.long)
            h = model.hidden_from_projection(z, self.timestep_map[t])
            a, b = coef_a[i], coef_b[i]
            acc_h = a * acc_h + b * h
            acc_b = a * acc_b + b
            c *= a
            if i > 0:
                z = a * z + b * (h @ w_in_out + b_in_out)
        return c * x_t + acc_h @ w_out.T + acc_b * b_out

    # ----------------------------------------------------------------- training
    def training_losses(
        self, model: Denoiser, x_start: torch.Tensor, reweight: bool = True
    ) -> Dict[str, torch.Tensor]:
        """``{"loss": per-example losses, already divided by the importance weight pt,
        "pred_xstart": the model's x_0 estimate}``.

        The loss is the mean squared error over items against x_0 (or the noise), weighted by
        the ELBO step weights when ``reweight``; the sampler records the weighted losses.
        """
        batch = x_start.shape[0]
        t, pt = self.sampler.sample(batch, x_start.device)
        noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise) if self.noisy else x_start
        output = model(x_t, self.timestep_map[t])
        target = x_start if self.mean_type == "x0" else noise
        mse = ((target - output) ** 2).mean(dim=1)

        if reweight and self.noisy:
            if self.mean_type == "x0":
                weight = self.x0_loss_weight[t].to(mse.dtype)
                loss = mse
            else:
                weight = self.eps_loss_weight[t].to(mse.dtype)
                # At t = 0 the eps model is scored on its x_0 reconstruction.
                recon = (
                    (x_start - self.predict_xstart_from_eps(x_t, t, output)) ** 2
                ).mean(dim=1) / 2.0
                loss = torch.where(t == 0, recon, mse)
            loss = weight * loss
        else:
            loss = mse

        self.sampler.update(t, loss)
        pred_xstart = (
            output
            if self.mean_type == "x0"
            else self.predict_xstart_from_eps(x_t, t, output)
        )
        return {"loss": loss / pt, "pred_xstart": pred_xstart}
