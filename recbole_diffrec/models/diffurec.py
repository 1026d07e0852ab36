r"""
DiffuRec
################################################
Reference:
    Zihao Li, Aixin Sun, Chenliang Li. "DiffuRec: A Diffusion Model for Sequential
    Recommendation." ACM TOIS 2023 (arXiv 2304.00686).

Reference code:
    https://github.com/WHUIR/DiffuRec

The target item's embedding is the diffused variable. Training noises it to a random step of
a truncated linear schedule; the approximator, a Transformer over the history embeddings to
which the noised target (plus a step embedding) is added with a random per-element scale
drawn from N(delta, delta), predicts the clean embedding at the last position, and the loss is
the cross-entropy of that prediction's inner products with every item embedding. Inference
starts from Gaussian noise, runs every reverse step (posterior mean plus beta_t-variance
noise, as the reference), and ranks all items by inner product with the final x0.
``inference_steps: n`` (not in the paper) runs that chain on n evenly spaced steps instead
(Improved DDPM's respacing; see ``sequential.respaced_chain``); ~ keeps every step.

Details taken from the reference code: no position embeddings; item embeddings go through
dropout then LayerNorm; the history attention mask is applied to query rows only (padded
keys stay visible; ``attention_mask: padding`` masks them instead); steps are rescaled to
t x 1000 / T before the sinusoidal embedding; the padding item takes part in the softmax;
each Transformer block ends in one more dropout on its output; the feed-forward uses the
tanh approximation of GELU; PyTorch's default initialisation except Xavier-normal attention
output and feed-forward weights.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion import timestep_embedding
from .checks import DIFFUREC_INFERENCE_STEPS, DIFFUREC_RULES
from .sequential import (
    SequentialDiffusionRecommender,
    TransformerStack,
    build_diffusion,
    step_mlp,
)


class DiffuRec(SequentialDiffusionRecommender):
    r"""DiffuRec as a RecBole sequential recommender (cross-entropy over all items)."""

    config_files = ("DiffuRec.yaml",)
    config_rules = DIFFUREC_RULES
    inference_steps_rule = DIFFUREC_INFERENCE_STEPS

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]
        self.lambda_uncertainty = float(config["lambda_uncertainty"])
        self.attention_mask = config["attention_mask"]
        self.rescale_timesteps = bool(config["rescale_timesteps"])
        self.sampling_noise = bool(config["sampling_noise"])

        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size)
        self.emb_dropout = nn.Dropout(config["emb_dropout"])
        self.emb_norm = nn.LayerNorm(self.hidden_size, eps=1e-12)
        self.time_embed = step_mlp(self.hidden_size)
        self.transformer = TransformerStack(
            self.hidden_size,
            config["n_layers"],
            config["n_heads"],
            config["dropout"],
            activation="gelu-tanh",
            block_dropout=True,
        )
        self.out_dropout = nn.Dropout(config["dropout"])
        self.out_norm = nn.LayerNorm(self.hidden_size, eps=1e-12)
        self.diffusion = build_diffusion(config)
        self.set_inference_steps(config["inference_steps"])
        # Initialisation as the reference: PyTorch's defaults (N(0, 1) item embeddings,
        # uniform linear layers) but the blocks' Xavier-normal projections.

    # ------------------------------------------------------------------ approximator
    def encode_history(self, item_seq: torch.Tensor) -> torch.Tensor:
        return self.emb_norm(self.emb_dropout(self.item_embedding(item_seq)))

    def _masks(self, item_seq: torch.Tensor) -> Dict[str, torch.Tensor]:
        padded = item_seq == 0
        if self.attention_mask == "padding":
            return {"key_padding_mask": padded}
        # Reference behaviour: a padded query row attends uniformly to every position
        # (its scores are all filled with the same value); keys are never masked.
        return {"uniform_rows": padded}

    def approximate_x0(
        self,
        history: torch.Tensor,
        masks: Dict[str, torch.Tensor],
        item_seq_len: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
    ) -> torch.Tensor:
        """The approximator f(history, x_t, t): the predicted target embedding x0."""
        steps = (
            t.float() * (1000.0 / self.diffusion.steps) if self.rescale_timesteps else t
        )
        x_t = x_t + self.time_embed(timestep_embedding(steps, self.hidden_size))
        # Uncertainty injection: a random scale per element, N(delta, delta).
        scale = torch.normal(
            self.lambda_uncertainty,
            self.lambda_uncertainty,
            size=history.shape,
            device=history.device,
        )
        # Only the last real position's output is used: the last block computes no other.
        hidden = self.transformer(
            history + scale * x_t.unsqueeze(1), output_index=item_seq_len - 1, **masks
        )
        return self.out_norm(self.out_dropout(hidden))

    # ------------------------------------------------------------------ training
    def calculate_loss(self, interaction) -> torch.Tensor:
        item_seq, item_seq_len = self.history(interaction)
        target = interaction[self.POS_ITEM_ID]
        history = self.encode_history(item_seq)
        masks = self._masks(item_seq)

        def terms(x_t, t, noise):
            x0 = self.approximate_x0(history, masks, item_seq_len, x_t, t)
            logits = x0 @ self.item_embedding.weight.T
            return {"loss": F.cross_entropy(logits, target, reduction="none")}

        x_start = self.item_embedding(target)
        return self.diffusion.step_losses(x_start, terms)["loss"].mean()

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def sequence_representation(self, interaction) -> torch.Tensor:
        """x0 after the reverse chain from Gaussian noise, one per sequence (every step,
        or ``inference_steps`` evenly spaced ones)."""
        item_seq, item_seq_len = self.history(interaction)
        history = self.encode_history(item_seq)
        masks = self._masks(item_seq)
        noise = torch.randn(len(item_seq), self.hidden_size, device=item_seq.device)

        def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.approximate_x0(history, masks, item_seq_len, x_t, t)

        return self.inference_diffusion.p_sample_loop(
            denoiser, noise, sampling_noise=self.sampling_noise, variance="large"
        )

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.sequence_representation(interaction) @ self.item_embedding.weight.T
