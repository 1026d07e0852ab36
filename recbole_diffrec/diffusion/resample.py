"""Timestep samplers for diffusion training (after Improved DDPM's ``resample.py``).

A sampler draws one diffusion step per training example together with an importance
weight ``pt`` (probability times the number of steps, so uniform sampling gives 1);
the loss of an example is divided by its ``pt`` so the expected loss is unchanged.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


class ScheduleSampler(nn.Module):
    """Base class: a distribution over ``steps`` diffusion steps."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def probabilities(self) -> torch.Tensor:
        raise NotImplementedError

    def sample(
        self, batch_size: int, device: torch.device
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(t, pt)``: step indices and importance weights, both of length ``batch_size``."""
        probs = self.probabilities().to(device)
        t = torch.multinomial(probs, batch_size, replacement=True)
        return t, (probs[t] * self.steps).float()

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-example losses; samplers that do not learn ignore them."""


class UniformSampler(ScheduleSampler):
    def probabilities(self) -> torch.Tensor:
        return torch.full((self.steps,), 1.0 / self.steps, dtype=torch.float64)

    def sample(self, batch_size, device):
        t = torch.randint(0, self.steps, (batch_size,), device=device)
        return t, torch.ones(batch_size, device=device)


class LossSecondMomentSampler(ScheduleSampler):
    """Sample step t with probability proportional to sqrt(E[L_t^2]) over its recent losses.

    Uniform until every step has ``history_per_term`` recorded losses; afterwards the
    distribution is mixed with ``uniform_prob`` of the uniform one so that no step starves.
    The loss history lives in buffers (moves with ``.to()``, saved in ``state_dict``).
    """

    def __init__(
        self, steps: int, history_per_term: int = 10, uniform_prob: float = 0.001
    ):
        super().__init__(steps)
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        self.register_buffer(
            "loss_history", torch.zeros(steps, history_per_term, dtype=torch.float64)
        )
        self.register_buffer("loss_counts", torch.zeros(steps, dtype=torch.long))

    def warmed_up(self) -> bool:
        return bool((self.loss_counts == self.history_per_term).all())

    def probabilities(self) -> torch.Tensor:
        if not self.warmed_up():
            return torch.full(
                (self.steps,),
                1.0 / self.steps,
                dtype=torch.float64,
                device=self.loss_history.device,
            )
        root_mean_square = torch.sqrt((self.loss_history**2).mean(dim=-1))
        probs = root_mean_square / root_mean_square.sum()
        return probs * (1.0 - self.uniform_prob) + self.uniform_prob / self.steps

    def sample(self, batch_size, device):
        if not self.warmed_up():
            t = torch.randint(0, self.steps, (batch_size,), device=device)
            return t, torch.ones(batch_size, device=device)
        return super().sample(batch_size, device)

    @torch.no_grad()
    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Append ``losses`` (in batch order) to the histories of their steps, keeping the last N.

        Equivalent to appending the examples one by one, but done for the whole batch at once.
        """
        n_keep = self.history_per_term
        t = t.to(self.loss_history.device).long()
        losses = losses.detach().to(self.loss_history)

        # Rank of each example among the examples of the same step, in batch order.
        order = torch.sort(t, stable=True).indices
        t_sorted = t[order]
        new_per_step = torch.bincount(t_sorted, minlength=self.steps)
        group_start = torch.cumsum(new_per_step, 0) - new_per_step
        rank = torch.arange(len(t_sorted), device=t.device) - group_start[t_sorted]

        old_counts = self.loss_counts
        total = old_counts + new_per_step
        # How many of the oldest entries fall out of each step's window.
        drop = (total - n_keep).clamp(min=0)

        # Kept old entries shift left by `drop`.
        slots = torch.arange(n_keep, device=t.device)
        source = slots.unsqueeze(0) + drop.unsqueeze(1)
        keep_old = source < old_counts.unsqueeze(1)
        shifted = torch.gather(
            self.loss_history, 1, source.clamp(max=n_keep - 1)
        ) * keep_old.to(self.loss_history)

        # New entries land after the kept old ones; those pushed out are skipped.
        target = old_counts[t_sorted] + rank - drop[t_sorted]
        fits = target >= 0
        shifted[t_sorted[fits], target[fits]] = losses[order][fits]

        self.loss_history.copy_(shifted)
        self.loss_counts.copy_(total.clamp(max=n_keep))
