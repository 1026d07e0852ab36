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
from typing import Any, Dict, List

import numpy as np
import torch

from ..clustering import EMBEDDING_SOURCES, cluster_items, item_embeddings
from .autoencoder import ClusteredVAE, multinomial_nll
from .base import (
    check_fraction,
    check_int,
    check_nonnegative,
    check_positive_int_list,
)
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


class LDiffRec(DiffRec):
    r"""L-DiffRec: diffusion in the latent space of a clustered VAE."""

    config_files = ("DiffRec.yaml", "LDiffRec.yaml")

    def build_networks(self, config, dataset) -> None:
        n_items = self.n_items - 1
        n_cate = config["n_cate"]
        if n_cate > n_items:
            raise ValueError(
                f"n_cate: got {n_cate}; allowed: an integer in [1, {n_items}] (the number of items)"
            )
        if n_cate == 1:
            labels = np.zeros(n_items, dtype=np.int64)
        else:
            labels = cluster_items(
                item_embeddings(config, dataset), n_cate, int(config["seed"])
            )
        # The official code lists in_dims from the latent outwards and reverses them.
        self.autoencoder = ClusteredVAE(
            labels,
            list(config["in_dims"])[::-1],
            list(config["out_dims"]),
            dropout=config["ae_dropout"],
            reparam=bool(config["reparam"]),
        )
        self.logger.info(
            f"L-DiffRec: {n_cate} item clusters of sizes {self.autoencoder.cluster_sizes}, "
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

    @staticmethod
    def check_config(config) -> None:
        DiffRec.check_config(config)
        n_cate = check_int("n_cate", config["n_cate"], 1)
        check_positive_int_list("in_dims", config["in_dims"])
        check_positive_int_list("out_dims", config["out_dims"], allow_empty=True)
        if min(config["in_dims"]) < n_cate:
            raise ValueError(
                f"in_dims: got {config['in_dims']} with n_cate {n_cate}; allowed: every size "
                f">= n_cate so that each item cluster keeps at least one latent dimension"
            )
        if config["n_cate"] > 1 and config["item_emb_source"] not in EMBEDDING_SOURCES:
            raise ValueError(
                f"item_emb_source: got {config['item_emb_source']!r}; allowed: "
                f"{', '.join(EMBEDDING_SOURCES)}"
            )
        for key in (
            "lamda",
            "anneal_cap",
            "vae_anneal_cap",
            "lr1",
            "lr2",
            "wd1",
            "wd2",
        ):
            check_nonnegative(key, config[key])
        for key in ("anneal_steps", "vae_anneal_steps"):
            check_int(key, config[key], 0)
        check_fraction("ae_dropout", config["ae_dropout"])

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
        denoised = self.inference_diffusion.p_sample(
            self.denoiser, latent, self.sampling_steps, self.sampling_noise
        )
        return self.autoencoder.to_item_order(self.autoencoder.decode(denoised))
