"""MLP denoiser of DiffRec: x_t and a step embedding in, an estimate of x_0 (or eps) out."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (possibly fractional) steps, shape (N, dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period)
        * torch.arange(half, dtype=torch.float32, device=timesteps.device)
        / half
    )
    args = timesteps.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


def _init_linear(layer: nn.Linear) -> None:
    # Reference initialisation: weights N(0, 2 / (fan_in + fan_out)), biases N(0, 0.001^2).
    fan_out, fan_in = layer.weight.shape
    nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / (fan_in + fan_out)))
    nn.init.normal_(layer.bias, 0.0, 0.001)


class MLPDenoiser(nn.Module):
    """The reference DNN: dropout on the input, concatenate the projected step embedding,
    then an encoder ``in_dims`` and a decoder ``out_dims`` with tanh between layers.

    Args:
        in_dims: encoder sizes, ``[n_items, ..., bottleneck]``.
        out_dims: decoder sizes, ``[bottleneck, ..., n_items]``.
        emb_size: size of the step embedding.
        norm: L2-normalise the input first.
        dropout: input dropout rate.
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        out_dims: Sequence[int],
        emb_size: int,
        norm: bool = False,
        dropout: float = 0.5,
    ):
        super().__init__()
        if in_dims[-1] != out_dims[0]:
            raise ValueError(
                f"dims_dnn: encoder ends at {in_dims[-1]} but decoder starts at {out_dims[0]}"
            )
        self.emb_size = emb_size
        self.norm = norm
        self.emb_layer = nn.Linear(emb_size, emb_size)
        encoder = [in_dims[0] + emb_size, *in_dims[1:]]
        self.in_layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(encoder[:-1], encoder[1:])
        )
        self.out_layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(out_dims[:-1], out_dims[1:])
        )
        self.drop = nn.Dropout(dropout)
        for layer in [self.emb_layer, *self.in_layers, *self.out_layers]:
            _init_linear(layer)

    @classmethod
    def mirrored(
        cls, n_items: int, dims: Sequence[int], emb_size: int, **kwargs
    ) -> "MLPDenoiser":
        """Sizes as the reference builds them from ``--dims``: decoder ``dims + [n_items]``,
        encoder its mirror, so ``dims=[200, 600]`` gives n -> 600 -> 200 -> 600 -> n."""
        out_dims = [*dims, n_items]
        return cls(out_dims[::-1], out_dims, emb_size, **kwargs)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        emb = self.emb_layer(timestep_embedding(timesteps, self.emb_size).to(x.dtype))
        if self.norm:
            x = F.normalize(x)
        h = torch.cat([self.drop(x), emb], dim=-1)
        for layer in self.in_layers:
            h = torch.tanh(layer(h))
        last = len(self.out_layers) - 1
        for i, layer in enumerate(self.out_layers):
            h = layer(h)
            if i != last:
                h = torch.tanh(h)
        return h
