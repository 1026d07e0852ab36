"""Shared pieces of the plugin's sequential diffusion recommenders (RecBole ``SequentialRecommender``s)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import nn

from ..diffusion import GaussianDiffusion
from .base import check_fraction, check_int, require_plugin_config


def check_sequence_config(config) -> None:
    """Settings every sequential model here shares."""
    check_int("MAX_ITEM_LIST_LENGTH", config["MAX_ITEM_LIST_LENGTH"], 1)
    check_int("hidden_size", config["hidden_size"], 1)
    check_int("n_layers", config["n_layers"], 1)
    heads = check_int("n_heads", config["n_heads"], 1)
    if config["hidden_size"] % heads:
        raise ValueError(
            f"n_heads: got {heads} with hidden_size {config['hidden_size']}; "
            "allowed: a divisor of hidden_size"
        )
    check_fraction("dropout", config["dropout"])
    if config["train_neg_sample_args"] not in (None, {}) and config[
        "train_neg_sample_args"
    ].get("distribution") not in (None, "none"):
        raise ValueError(
            "train_neg_sample_args: got "
            f"{config['train_neg_sample_args']!r}; allowed: None (the loss ranks all items)"
        )


def build_diffusion(config) -> GaussianDiffusion:
    """The model's diffusion over the target embedding; building it checks every schedule
    setting (so ``check_config`` can call it before data is loaded)."""
    check_int("steps", config["steps"], 1)
    return GaussianDiffusion(
        mean_type="x0",
        noise_schedule=config["noise_schedule"],
        noise_scale=config["noise_scale"],
        noise_min=config["noise_min"],
        noise_max=config["noise_max"],
        steps=config["steps"],
        beta_fixed=False,
        timestep_sampler=config["timestep_sampler"],
        history_per_term=config["history_num_per_term"],
    )


def check_sequence_lengths(item_seq_len: torch.Tensor) -> None:
    """A training or evaluation sample needs at least one history item before its target."""
    if bool((item_seq_len < 1).any()):
        raise ValueError(
            "item_seq_len: a sample with an empty history; every sequence needs length >= 2 "
            "(one history item and a target)"
        )


class TransformerStack(nn.Module):
    """Pre-LN Transformer encoder blocks (GELU feed-forward of 4 x hidden), bidirectional
    unless a mask says otherwise."""

    def __init__(self, hidden: int, n_layers: int, n_heads: int, dropout: float):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            hidden,
            n_heads,
            dim_feedforward=4 * hidden,
            dropout=dropout,
            activation="gelu",
            layer_norm_eps=1e-12,
            batch_first=True,
            norm_first=True,
        )
        # Pre-LN stacks need no final norm here: each model applies its own output norm.
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: Optional[torch.Tensor] = None,
        key_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        return self.layers(x, mask=attn_mask, src_key_padding_mask=key_padding_mask)


def step_mlp(hidden: int) -> nn.Module:
    """The step-embedding MLP of improved-diffusion (hidden -> 4 hidden -> hidden, SiLU)."""
    return nn.Sequential(
        nn.Linear(hidden, 4 * hidden), nn.SiLU(), nn.Linear(4 * hidden, hidden)
    )


def xavier_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class SequentialDiffusionRecommender(SequentialRecommender):
    """Base class: config check before RecBole builds anything; CE-style pointwise input."""

    input_type = InputType.POINTWISE
    config_files: tuple = ()
    # Step learning-rate decay (lr_decay_step / lr_decay_gamma), as DiffuRec's StepLR.
    trainer_class = "StepDecayTrainer"

    def __init__(self, config, dataset):
        require_plugin_config(config, type(self).__name__)
        self.check_config(config)
        super().__init__(config, dataset)

    @classmethod
    def check_config(cls, config) -> None:
        check_sequence_config(config)

    def history(self, interaction) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(item_seq, item_seq_len)`` of a batch, refusing samples without history."""
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        check_sequence_lengths(item_seq_len)
        return interaction[self.ITEM_SEQ], item_seq_len

    def last_position(self, output: torch.Tensor, item_seq_len: torch.Tensor):
        """The output at each sequence's last real item (RecBole pads on the right)."""
        return self.gather_indexes(output, item_seq_len - 1)

    def predict(self, interaction) -> torch.Tensor:
        scores = self.full_sort_predict(interaction)
        return scores.gather(1, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1)
