"""Shared pieces of the plugin's sequential diffusion recommenders (RecBole ``SequentialRecommender``s)."""

from __future__ import annotations

from functools import partial
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import nn

from ..diffusion import GaussianDiffusion, SpacedDiffusion, evenly_spaced_steps
from .base import require_plugin_config
from .checks import DeclaredSettings, Rule, check_settings


def build_diffusion(config) -> GaussianDiffusion:
    """The model's diffusion over the target embedding (its settings are checked by the
    model's ``config_rules`` first)."""
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


def chain_steps(start: int, count: int) -> List[int]:
    """``count`` evenly spaced step indices of a reverse chain that starts at step
    ``start`` (counted from 1) and ends at step 0: Improved DDPM's spacing over
    ``[0, start - 1]``, both ends kept. A one-step chain keeps the start (``start - 1``),
    not step 0 as :func:`evenly_spaced_steps` does: these chains start from noise, and a
    denoiser told "step 0" about pure noise would be asked the wrong question."""
    if count == 1:
        return [start - 1]
    return evenly_spaced_steps(start, count)


def respaced_chain(
    diffusion: GaussianDiffusion, count: Optional[int], start: Optional[int] = None
) -> Optional[SpacedDiffusion]:
    """The chain inference runs on, when it is not ``diffusion``'s full chain (None then).

    ``count`` steps from ``start`` (default ``diffusion.steps``) down to 0 (see
    :func:`chain_steps`); ``count`` None, or the full chain (``count = start = steps``),
    gives None, so that inference stays bit-identical to the unspaced chain. The kept
    steps keep their alpha_bar (betas 1 - abar_s / abar_prev_kept) and the denoiser sees
    the original step indices (:class:`SpacedDiffusion`). The caller checks ``count``.
    """
    start = diffusion.steps if start is None else start
    if count is None or count == start == diffusion.steps:
        return None
    return SpacedDiffusion(diffusion, chain_steps(start, count))


def check_sequence_lengths(item_seq_len: torch.Tensor) -> None:
    """A training or evaluation sample needs at least one history item before its target."""
    if bool((item_seq_len < 1).any()):
        raise ValueError(
            "item_seq_len: a sample with an empty history; every sequence needs length >= 2 "
            "(one history item and a target)"
        )


ACTIVATIONS = {
    "gelu": F.gelu,
    # The tanh approximation DiffuRec's reference code writes out.
    "gelu-tanh": partial(F.gelu, approximate="tanh"),
}


class SelfAttention(nn.Module):
    """Multi-head attention of ``queries`` over ``keys`` (self-attention when both are the
    same positions; the last block passes one query row per sequence).

    ``uniform_rows`` (bool, batch x queries) marks query rows that attend uniformly to every
    position, as DiffuRec's reference code does for padded positions (it overwrites their
    scores with one constant). Zeroing those queries gives every score the same value 0, so
    the rows stay uniform, attention dropout included, without a dense mask.
    """

    def __init__(self, hidden: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        # Default nn.Linear init on the fused projection is the same distribution as three
        # separate hidden x hidden layers (the bound depends on fan-in only).
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        blocked: Optional[torch.Tensor] = None,
        uniform_rows: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        batch, _, hidden = keys.shape
        weight, bias = self.qkv.weight, self.qkv.bias
        if queries is keys:  # one fused projection
            q, k, v = F.linear(keys, weight, bias).split(hidden, dim=-1)
        else:
            q = F.linear(queries, weight[:hidden], bias[:hidden])
            k, v = F.linear(keys, weight[hidden:], bias[hidden:]).split(hidden, dim=-1)
        if uniform_rows is not None:
            q = q.masked_fill(uniform_rows.unsqueeze(-1), 0.0)
        heads = (self.n_heads, hidden // self.n_heads)
        q, k, v = (part.unflatten(-1, heads).transpose(1, 2) for part in (q, k, v))
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None if blocked is None else ~blocked.unsqueeze(1),
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(out.transpose(1, 2).flatten(2))


class TransformerBlock(nn.Module):
    """Pre-LN block: x + drop(attn(LN(x))), then + drop(ffn(LN(x))) with a 4 x hidden
    feed-forward (dropout after its activation); ``block_dropout`` adds one more dropout
    on the block's output, as DiffuRec's reference code has."""

    def __init__(
        self,
        hidden: int,
        n_heads: int,
        dropout: float,
        activation: str = "gelu",
        block_dropout: bool = False,
    ):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.attention = SelfAttention(hidden, n_heads, dropout)
        self.feed_forward_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.feed_forward_in = nn.Linear(hidden, 4 * hidden)
        self.feed_forward_out = nn.Linear(4 * hidden, hidden)
        self.activation = ACTIVATIONS[activation]
        self.dropout = nn.Dropout(dropout)
        self.block_dropout = nn.Dropout(dropout) if block_dropout else nn.Identity()
        # DiffuRec's reference initialisation: Xavier-normal output projection and
        # feed-forward weights, PyTorch's defaults elsewhere.
        for layer in (self.attention.out, self.feed_forward_in, self.feed_forward_out):
            nn.init.xavier_normal_(layer.weight)

    def forward(
        self,
        x: torch.Tensor,
        blocked: Optional[torch.Tensor] = None,
        uniform_rows: Optional[torch.Tensor] = None,
        query_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """With ``query_index`` (batch,) only that position of each sequence is computed
        (batch x 1 x hidden); keys and values still come from every position."""
        normed = self.attention_norm(x)
        queries = normed
        if query_index is not None:
            rows = torch.arange(len(x), device=x.device)

            def pick(rows_of: torch.Tensor) -> torch.Tensor:
                return rows_of[rows, query_index].unsqueeze(1)

            x, queries = pick(x), pick(normed)
            if uniform_rows is not None:
                uniform_rows = pick(uniform_rows)
            if blocked is not None and blocked.shape[1] > 1:  # a mask per query row
                blocked = pick(blocked.expand(len(rows), -1, -1))
        x = x + self.dropout(self.attention(queries, normed, blocked, uniform_rows))
        inner = self.activation(self.feed_forward_in(self.feed_forward_norm(x)))
        x = x + self.dropout(self.feed_forward_out(self.dropout(inner)))
        return self.block_dropout(x)


class TransformerStack(nn.Module):
    """Pre-LN Transformer blocks (see :class:`TransformerBlock`), bidirectional unless a
    mask says otherwise. Each model applies its own output norm."""

    def __init__(
        self,
        hidden: int,
        n_layers: int,
        n_heads: int,
        dropout: float,
        activation: str = "gelu",
        block_dropout: bool = False,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerBlock(hidden, n_heads, dropout, activation, block_dropout)
            for _ in range(n_layers)
        )

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: Optional[torch.Tensor] = None,
        key_padding_mask: Optional[torch.Tensor] = None,
        uniform_rows: Optional[torch.Tensor] = None,
        output_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``attn_mask`` (length x length) and ``key_padding_mask`` (batch x length) are
        True where attention is not allowed, as in ``nn.TransformerEncoder``;
        ``uniform_rows`` see :class:`SelfAttention`. With ``output_index`` (batch,) only
        that position of each sequence is returned (batch x hidden), and the last block
        computes nothing else."""
        # One boolean mask, broadcastable to batch x queries x keys.
        blocked = None if attn_mask is None else attn_mask.unsqueeze(0)
        if key_padding_mask is not None:
            padded_keys = key_padding_mask.unsqueeze(1)
            blocked = padded_keys if blocked is None else blocked | padded_keys
        for layer in self.layers[:-1]:
            x = layer(x, blocked, uniform_rows)
        x = self.layers[-1](x, blocked, uniform_rows, output_index)
        return x if output_index is None else x.squeeze(1)


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


class SequentialDiffusionRecommender(DeclaredSettings, SequentialRecommender):
    """Base class: config check before RecBole builds anything; CE-style pointwise input."""

    input_type = InputType.POINTWISE
    config_files: tuple = ()
    # The rule on ``inference_steps`` (also in config_rules), rechecked by
    # set_inference_steps.
    inference_steps_rule: Optional[Rule] = None
    # Trained with a step learning-rate decay (lr_decay_step / lr_decay_gamma), as
    # DiffuRec's StepLR: recbole_diffrec.get_trainer picks its StepDecayTrainer.
    step_lr_decay = True

    def __init__(self, config, dataset):
        require_plugin_config(config, type(self).__name__)
        self.check_config(config)
        super().__init__(config, dataset)

    # ------------------------------------------------------------------ respaced inference
    @property
    def inference_start(self) -> int:
        """The step (counted from 1) the reverse chain starts at."""
        return self.diffusion.steps

    def set_inference_steps(self, count: Optional[int]) -> None:
        """Run inference on ``count`` evenly spaced steps from now on (None: the model's
        default inference); checked as the ``inference_steps`` setting. Changes no
        parameter, so a trained model can be evaluated at several step counts."""
        view = {
            "inference_steps": count,
            "steps": self.diffusion.steps,
            "inference_step": getattr(self, "inference_step", None),
        }
        check_settings(view, (self.inference_steps_rule,))
        self.inference_steps = count
        self.inference_chain = respaced_chain(
            self.diffusion, count, self.inference_start
        )

    @property
    def inference_diffusion(self) -> GaussianDiffusion:
        """The chain inference runs on: the respaced one, else the full one."""
        chain = self.inference_chain
        return self.diffusion if chain is None else chain

    def history(self, interaction) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(item_seq, item_seq_len)`` of a batch, refusing samples without history."""
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        check_sequence_lengths(item_seq_len)
        return interaction[self.ITEM_SEQ], item_seq_len

    def predict(self, interaction) -> torch.Tensor:
        scores = self.full_sort_predict(interaction)
        return scores.gather(1, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1)
