"""Timestep samplers for diffusion training (after Improved DDPM's ``resample.py``).

A sampler draws one diffusion step per training example together with an importance
weight ``pt`` (probability times the number of steps, so uniform sampling gives 1);
the loss of an example is divided by its ``pt`` so the expected loss is unchanged.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

import torch
from torch import nn


# ----------------------------------------------------------------- data-parallel batches
@dataclass(frozen=True)
class BatchShard:
    """This process's rows ``[start, stop)`` of a global batch of ``total`` rows cut into
    ``world`` contiguous shards (the first ``total % world`` shards one row longer)."""

    rank: int
    world: int
    total: int

    @staticmethod
    def bounds(total: int, world: int) -> List[int]:
        base, extra = divmod(total, world)
        edges = [0]
        for r in range(world):
            edges.append(edges[-1] + base + (1 if r < extra else 0))
        return edges

    @property
    def start(self) -> int:
        return self.bounds(self.total, self.world)[self.rank]

    @property
    def stop(self) -> int:
        return self.bounds(self.total, self.world)[self.rank + 1]

    @property
    def size(self) -> int:
        return self.stop - self.start

    def sizes(self) -> List[int]:
        edges = self.bounds(self.total, self.world)
        return [b - a for a, b in zip(edges, edges[1:])]


_SHARD: Optional[BatchShard] = None


def current_shard() -> Optional[BatchShard]:
    """The shard of the batch being processed, or None (one process, or outside a batch)."""
    return _SHARD


@contextlib.contextmanager
def batch_shard(shard: Optional[BatchShard]) -> Iterator[None]:
    """Within the block, batch-shaped random draws (:func:`draw_rows`) draw the global
    batch and keep ``shard``'s rows, and :func:`gather_rows` gathers the global batch.
    """
    global _SHARD
    saved, _SHARD = _SHARD, shard
    try:
        yield
    finally:
        _SHARD = saved


def draw_rows(
    fn: Callable[[int], torch.Tensor], n_local: int, dim: int = 0
) -> torch.Tensor:
    """``fn(n)`` draws a random tensor whose dimension ``dim`` has ``n`` rows of a batch.

    Data-parallel, every process draws the whole global batch's tensor (the same numbers,
    the generators being in the same state) and keeps its own rows, so the draws equal one
    process's on the same global batch. One process: exactly ``fn(n_local)``.
    """
    shard = _SHARD
    if shard is None or shard.world == 1 or n_local != shard.size:
        return fn(n_local)
    return fn(shard.total).narrow(dim, shard.start, n_local)


def randn_rows(*size: int, dim: int = 0, **kwargs) -> torch.Tensor:
    """``torch.randn(*size, **kwargs)`` drawn through :func:`draw_rows` along ``dim``."""

    def fn(n: int) -> torch.Tensor:
        shape = list(size)
        shape[dim] = n
        return torch.randn(shape, **kwargs)

    return draw_rows(fn, size[dim], dim)


def randn_rows_like(x: torch.Tensor) -> torch.Tensor:
    """``torch.randn_like(x)`` drawn through :func:`draw_rows` (rows = first dimension)."""
    return randn_rows(*x.shape, dtype=x.dtype, device=x.device)


def rand_rows_like(x: torch.Tensor) -> torch.Tensor:
    """``torch.rand_like(x)`` drawn through :func:`draw_rows` (rows = first dimension)."""

    def fn(n: int) -> torch.Tensor:
        return torch.rand((n, *x.shape[1:]), dtype=x.dtype, device=x.device)

    return draw_rows(fn, len(x))


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """The global batch's rows of ``x`` (this process's shard of them), in global order,
    on every process. One process (or outside a sharded batch): ``x`` itself."""
    shard = _SHARD
    if shard is None or shard.world == 1 or len(x) != shard.size:
        return x
    import torch.distributed as dist

    sizes = shard.sizes()
    longest = max(sizes)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


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
        t = draw_rows(
            lambda n: torch.multinomial(probs, n, replacement=True), batch_size
        )
        return t, (probs[t] * self.steps).float()

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-example losses; samplers that do not learn ignore them."""


def _uniform_steps(steps: int, batch_size: int, device) -> torch.Tensor:
    return draw_rows(lambda n: torch.randint(0, steps, (n,), device=device), batch_size)


class UniformSampler(ScheduleSampler):
    def probabilities(self) -> torch.Tensor:
        return torch.full((self.steps,), 1.0 / self.steps, dtype=torch.float64)

    def sample(self, batch_size, device):
        t = _uniform_steps(self.steps, batch_size, device)
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
            t = _uniform_steps(self.steps, batch_size, device)
            return t, torch.ones(batch_size, device=device)
        return super().sample(batch_size, device)

    @torch.no_grad()
    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Append ``losses`` (in batch order) to the histories of their steps, keeping the last N.

        Equivalent to appending the examples one by one, but done for the whole batch at once.
        Data-parallel, every process records the whole global batch's (t, loss) in global
        order, so all keep the history one process would.
        """
        t, losses = gather_rows(t), gather_rows(losses.detach())
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
