"""MLP denoiser of DiffRec: x_t and a step embedding in, an estimate of x_0 (or eps) out."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .resample import rand_rows_like


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

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        # Same distribution as nn.Dropout; drawing the mask with rand() is several times
        # faster on CPU than bernoulli_ for the wide (users x items) input.
        p = self.drop.p
        if not self.training or p == 0.0:
            return x
        keep = rand_rows_like(x) >= p
        return x * keep / (1.0 - p)

    def _hidden_layers(self):
        """Every layer but the final linear read-out, each followed by tanh."""
        return [*self.in_layers, *self.out_layers[:-1]]

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        emb = self.emb_layer(timestep_embedding(timesteps, self.emb_size).to(x.dtype))
        if self.norm:
            x = F.normalize(x)
        h = torch.cat([self._dropout(x), emb], dim=-1)
        for layer in self._hidden_layers():
            h = torch.tanh(layer(h))
        return self.out_layers[-1](h)

    # ------------------------------------------------------------------
    # The FactoredDenoiser interface (factored.py). The network is affine in x up to its
    # first activation (in eval mode, without norm) and ends in a linear read-out, so x
    # only enters through W_in x and leaves through W_out h: the reverse chain can run on
    # the first layer's pre-activation and the last hidden layer instead of on items.
    @property
    def affine_input(self) -> bool:
        return not self.norm

    def input_projection(self, x: torch.Tensor) -> torch.Tensor:
        """W_in x: the item part of the first layer, without bias."""
        n_items = x.shape[1]
        return x @ self.in_layers[0].weight[:, :n_items].T

    def hidden_from_projection(
        self, projected: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The last hidden layer's output given W_in x."""
        first = self.in_layers[0]
        n_items = first.in_features - self.emb_size
        emb = self.emb_layer(
            timestep_embedding(timesteps, self.emb_size).to(projected.dtype)
        )
        h = torch.tanh(projected + emb @ first.weight[:, n_items:].T + first.bias)
        for layer in self._hidden_layers()[1:]:
            h = torch.tanh(layer(h))
        return h

    def readout(self):
        """Weight and bias of the final linear layer (items x hidden, items)."""
        last = self.out_layers[-1]
        return last.weight, last.bias
