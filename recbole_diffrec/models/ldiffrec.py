r"""
L-DiffRec
################################################
Reference:
    Wenjie Wang, Yiyan Xu, Fuli Feng, Xiaoyu Lin, Xiangnan He, Tat-Seng Chua.
    "Diffusion Recommender Model." In SIGIR 2023 (Section 3.4, L-DiffRec).

Reference code:
    https://github.com/YiyanXu/DiffRec (``L-DiffRec/``)

L-DiffRec clusters items (k-means on item embeddings), compresses each cluster's part of the
interaction row with its own variational encoder, runs the diffusion in the concatenated
latent space and decodes the denoised latent back to all items. Fewer parameters than
DiffRec on large catalogues.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .autoencoder import ClusteredVAE, multinomial_nll
from .checks import LDIFFREC_RULES
from .diffrec import DiffRec


def lambda_schedule(epoch: int, lamda: float, cap: float, steps: int) -> float:
    """Weight of the diffusion loss after ``epoch`` finished epochs: decays linearly from
    ``lamda`` and never goes below ``cap``."""
    if steps > 0:
        return max((1.0 - epoch / steps) * lamda, cap)
    return max(lamda, cap)


def kl_schedule(batch: int, cap: float, steps: int) -> float:
    """KL weight before training batch ``batch`` (0-based): grows linearly up to ``cap``."""
    if steps > 0:
        return min(cap, batch / steps)
    return cap


def check_item_clusters(
    labels: Optional[np.ndarray], n_cate: int, n_items: int
) -> np.ndarray:
    """The cluster labels as int64, or one clear error saying what was expected."""
    if labels is None:
        if n_cate == 1:
            return np.zeros(n_items, dtype=np.int64)
        raise ValueError(
            f"item_clusters: none given with n_cate={n_cate}; build the model with "
            "recbole_diffrec.build_model(config, train_data.dataset), or pass "
            "item_clusters=recbole_diffrec.prepare_item_clusters(config, train_data.dataset)"
        )
    labels = np.asarray(labels)
    if labels.shape != (n_items,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"item_clusters: got an array of shape {labels.shape} and dtype {labels.dtype}; "
            f"allowed: {n_items} integer labels, one per item"
        )
    counts = np.bincount(labels, minlength=n_cate) if labels.min() >= 0 else None
    if counts is None or len(counts) != n_cate or (counts == 0).any():
        raise ValueError(
            f"item_clusters: labels span {labels.min()}..{labels.max()}; allowed: every "
            f"label in 0..{n_cate - 1} (n_cate={n_cate}) used at least once"
        )
    return labels.astype(np.int64)


class LDiffRec(DiffRec):
    r"""L-DiffRec: diffusion in the latent space of a clustered VAE."""

    config_files = ("DiffRec.yaml", "LDiffRec.yaml")
    config_rules = LDIFFREC_RULES

    # Built with item clusters prepared beforehand (recbole_diffrec.build_model does it).
    needs_item_clusters = True

    def __init__(
        self, config, dataset, item_clusters: Optional[np.ndarray] = None
    ) -> None:
        """``item_clusters``: the cluster label (0..n_cate-1) of each real item, in
        internal-id order (id 1 first), from ``recbole_diffrec.prepare_item_clusters``;
        may be left out only when ``n_cate`` is 1."""
        super().__init__(config, dataset, item_clusters=item_clusters)

    def build_networks(
        self, config, dataset, item_clusters: Optional[np.ndarray] = None
    ) -> None:
        labels = check_item_clusters(item_clusters, config["n_cate"], self.n_items - 1)
        # The official code lists in_dims from the latent outwards and reverses them.
        self.autoencoder = ClusteredVAE(
            labels,
            list(config["in_dims"])[::-1],
            list(config["out_dims"]),
            dropout=config["ae_dropout"],
            reparam=bool(config["reparam"]),
        )
        # Kept in checkpoints, so a saved model reloads without recomputing the clusters.
        self.register_buffer("item_clusters", torch.from_numpy(labels))
        self.logger.info(
            f"L-DiffRec: {config['n_cate']} item clusters of sizes {self.autoencoder.cluster_sizes}, "
            f"latent sizes {[d[-1] for d in self.autoencoder.latent_dims]}"
        )
        self.denoiser = self.make_denoiser(config, self.autoencoder.latent_size)

        self.lamda = float(config["lamda"])
        self.anneal_cap = float(config["anneal_cap"])
        self.anneal_steps = int(config["anneal_steps"])
        self.vae_anneal_cap = float(config["vae_anneal_cap"])
        self.vae_anneal_steps = int(config["vae_anneal_steps"])
        # The diffusion weight decays per epoch (as the official code); the trainer does not
        # tell models where epochs end, so count batches and divide by batches per epoch.
        train_users = int((np.diff(self.history.indptr.cpu().numpy()) > 0).sum())
        self.batches_per_epoch = max(
            math.ceil(train_users / config["train_batch_size"]), 1
        )
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))
        self.learning_rates = {
            "autoencoder": (float(config["lr1"]), float(config["wd1"])),
            "denoiser": (float(config["lr2"]), float(config["wd2"])),
        }

    def optimizer_param_groups(self) -> List[Dict[str, Any]]:
        """lr1/wd1 for the autoencoder, lr2/wd2 for the denoiser (two optimizers in the
        official code; param groups of one optimizer update identically)."""
        groups = []
        for name, (lr, wd) in self.learning_rates.items():
            groups.append(
                {
                    "params": list(getattr(self, name).parameters()),
                    "lr": lr,
                    "weight_decay": wd,
                }
            )
        return groups

    def loss_weights(self):
        batch = int(self.batches_seen)
        epoch = batch // self.batches_per_epoch
        return (
            lambda_schedule(epoch, self.lamda, self.anneal_cap, self.anneal_steps),
            kl_schedule(batch, self.vae_anneal_cap, self.vae_anneal_steps),
        )

    def calculate_loss(self, interaction) -> torch.Tensor:
        rows = self.history(self._user_ids(interaction))
        grouped, latent, kl = self.autoencoder.encode(rows)
        terms = self.diffusion.training_losses(self.denoiser, latent, self.reweight)
        diffusion_loss = terms["loss"].mean()
        recon = self.autoencoder.decode(terms["pred_xstart"])
        lamda, anneal = self.loss_weights()
        vae_loss = multinomial_nll(recon, grouped) + anneal * kl
        self.batches_seen += 1
        if self.reweight:
            return lamda * diffusion_loss + vae_loss
        return diffusion_loss + lamda * vae_loss

    def score_real_items(self, users: torch.Tensor) -> torch.Tensor:
        _, latent, _ = self.autoencoder.encode(self.history(users))
        denoised = self.inference_diffusion.reconstruct(
            self.denoiser, latent, self.sampling_steps, self.sampling_noise
        )
        return self.autoencoder.to_item_order(self.autoencoder.decode(denoised))
