"""The clustered variational autoencoder of L-DiffRec (pure PyTorch).

Items are grouped by cluster; each cluster has its own encoder from its items to a mean and
log variance of its share of the latent vector. The decoder maps the concatenated latent back
to all items: one shared linear layer when ``out_dims`` is empty, else one MLP per cluster.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion.resample import randn_rows_like


def latent_split(
    cluster_sizes: Sequence[int], latent_dims: Sequence[int], key: str = "in_dims"
) -> List[List[int]]:
    """Split each latent layer size across clusters in proportion to cluster size.

    As the official L-DiffRec: floor(size_i / n_items * d), at least 1, and the last cluster
    gets the remainder (which must stay >= 1).
    """
    total = sum(cluster_sizes)
    split = []
    for i, size in enumerate(cluster_sizes[:-1]):
        split.append([max(int(size / total * d), 1) for d in latent_dims])
    last = [d - sum(dims[j] for dims in split) for j, d in enumerate(latent_dims)]
    if min(last) < 1:
        raise ValueError(
            f"{key}: latent sizes {list(latent_dims)} leave the last of {len(cluster_sizes)} "
            f"item clusters (sizes {list(cluster_sizes)}) no dimension; allowed: sizes of at "
            f"least n_cate = {len(cluster_sizes)} per layer, larger for uneven clusters"
        )
    return split + [last]


def _mlp(sizes: Sequence[int], last_activation: bool) -> nn.Sequential:
    layers: List[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class ClusteredVAE(nn.Module):
    """Args:
    labels: cluster label of each item (column of the input rows), 0..n_cate-1.
    enc_dims: encoder sizes after the input, ending at the latent size (the official
        ``in_dims`` reversed); each is split across clusters by cluster size.
    out_dims: decoder hidden sizes; empty means one shared linear decoder.
    dropout: input dropout.
    reparam: sample the latent in training (VAE); the mean is used otherwise.
    """

    def __init__(
        self,
        labels: np.ndarray,
        enc_dims: Sequence[int],
        out_dims: Sequence[int],
        dropout: float = 0.1,
        reparam: bool = True,
    ):
        super().__init__()
        labels = np.asarray(labels)
        n_cate = int(labels.max()) + 1
        sizes = np.bincount(labels, minlength=n_cate).tolist()
        self.reparam = reparam
        self.cluster_sizes = sizes
        # Items sorted by cluster: columns [start_i, end_i) of the permuted row are cluster i.
        self.register_buffer(
            "order",
            torch.from_numpy(np.argsort(labels, kind="stable")),
            persistent=False,
        )
        self.latent_dims = latent_split(sizes, list(enc_dims))
        self.latent_size = sum(d[-1] for d in self.latent_dims)
        # tanh after every encoder layer, the mean/log-variance layer included (official).
        self.encoders = nn.ModuleList(
            _mlp([size, *dims[:-1], 2 * dims[-1]], last_activation=True)
            for size, dims in zip(sizes, self.latent_dims)
        )
        self.shared_decoder = len(out_dims) == 0
        if self.shared_decoder:
            self.decoders = nn.ModuleList([nn.Linear(self.latent_size, len(labels))])
        else:
            self.decoders = nn.ModuleList(
                _mlp([dims[-1], *out_dims, size], last_activation=False)
                for size, dims in zip(sizes, self.latent_dims)
            )
        self.drop = nn.Dropout(dropout)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def encode(
        self, rows: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rows in cluster order after dropout, latent, KL divergence)``."""
        grouped = self.drop(rows)[:, self.order]
        parts = torch.split(grouped, self.cluster_sizes, dim=1)
        mus, logvars = [], []
        for encoder, part, dims in zip(self.encoders, parts, self.latent_dims):
            hidden = encoder(part)
            mus.append(hidden[:, : dims[-1]])
            logvars.append(hidden[:, dims[-1] :])
        mu, logvar = torch.cat(mus, dim=1), torch.cat(logvars, dim=1)
        latent = mu
        if self.training and self.reparam:
            latent = mu + randn_rows_like(mu) * torch.exp(0.5 * logvar)
        kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1))
        return grouped, latent, kl

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Scores in cluster order (the column order of ``encode``'s first output)."""
        if self.shared_decoder:
            return self.decoders[0](latent)
        parts = torch.split(latent, [d[-1] for d in self.latent_dims], dim=1)
        return torch.cat([dec(p) for dec, p in zip(self.decoders, parts)], dim=1)

    def to_item_order(self, grouped_scores: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(grouped_scores)
        out[:, self.order] = grouped_scores
        return out


def multinomial_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multinomial log-likelihood loss of Mult-VAE, averaged over the batch."""
    return -(F.log_softmax(logits, dim=1) * target).sum(dim=1).mean()
