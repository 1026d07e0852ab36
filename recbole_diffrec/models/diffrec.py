r"""
DiffRec
################################################
Reference:
    Wenjie Wang, Yiyan Xu, Fuli Feng, Xiaoyu Lin, Xiangnan He, Tat-Seng Chua.
    "Diffusion Recommender Model." In SIGIR 2023.

Reference code:
    https://github.com/YiyanXu/DiffRec (``DiffRec/``)

DiffRec corrupts a user's interaction row with Gaussian noise over ``steps`` diffusion steps
and learns an MLP that recovers the clean row; at inference the (optionally noised) training
row is denoised through every reverse step and the result ranks all items.
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
from recbole.utils import InputType

from ..diffusion import (
    GaussianDiffusion,
    MLPDenoiser,
    respace,
)
from .base import SparseUserRows, UserBatchRecommender, require_plugin_config
from .checks import DIFFREC_RULES

DIFFUSION_KEYS = (
    "mean_type",
    "noise_schedule",
    "noise_scale",
    "noise_min",
    "noise_max",
    "steps",
    "timestep_sampler",
)


def diffusion_settings(config) -> dict:
    """The config keys that define the diffusion process."""
    return {key: config[key] for key in DIFFUSION_KEYS}


class DiffRec(UserBatchRecommender):
    r"""DiffRec as a RecBole general recommender, trained on batches of users."""

    input_type = InputType.LISTWISE
    # Default yaml files (recbole_diffrec/properties/model/), applied in order.
    config_files = ("DiffRec.yaml",)
    config_rules = DIFFREC_RULES

    def __init__(self, config, dataset, **network_inputs):
        require_plugin_config(config, type(self).__name__)
        self.check_config(config)
        super().__init__(config, dataset)

        self.reweight = bool(config["reweight"])
        self.sampling_noise = bool(config["sampling_noise"])
        self.sampling_steps = int(config["sampling_steps"])

        # Rows cover the real items only (RecBole's item id 0 is padding): columns are ids 1..n.
        self.history = SparseUserRows(self.history_matrix(config, dataset))
        self.diffusion = GaussianDiffusion(
            **diffusion_settings(config),
            beta_fixed=config["beta_fixed"],
            history_per_term=config["history_num_per_term"],
        )
        steps = config["inference_steps"]
        # Optional faster inference on a respaced chain; the full chain is the faithful one.
        self.respaced_diffusion = (
            None
            if steps is None or steps == self.diffusion.steps
            else respace(self.diffusion, steps)
        )
        self.build_networks(config, dataset, **network_inputs)
        if self.reweight and not self.diffusion.noisy:
            self.logger.info("noise_scale is 0: reweight has no effect and is off")
            self.reweight = False
        self.to(self.device)

    def build_networks(self, config, dataset) -> None:
        self.denoiser = self.make_denoiser(config, self.n_items - 1)

    @staticmethod
    def make_denoiser(config, size: int) -> MLPDenoiser:
        return MLPDenoiser.mirrored(
            size,
            config["dims_dnn"],
            config["embedding_size"],
            norm=config["norm"],
            dropout=config["dropout"],
        )

    def history_matrix(self, config, dataset) -> sp.csr_matrix:
        """Binary users x real-items training matrix (sparse)."""
        matrix = dataset.inter_matrix(form="csr")[:, 1:].astype("float32")
        matrix.data[:] = 1.0
        return matrix

    def calculate_loss(self, interaction) -> torch.Tensor:
        x_start = self.history(self._user_ids(interaction))
        terms = self.diffusion.training_losses(self.denoiser, x_start, self.reweight)
        return terms["loss"].mean()

    @property
    def inference_diffusion(self) -> GaussianDiffusion:
        return self.respaced_diffusion or self.diffusion

    def score_real_items(self, users: torch.Tensor) -> torch.Tensor:
        return self.inference_diffusion.reconstruct(
            self.denoiser, self.history(users), self.sampling_steps, self.sampling_noise
        )
