r"""
SeqDiffRec
################################################
Reference:
    Hanwen Du, Huanhuan Yuan, Zhen Huang, Pengpeng Zhao, Xiaofang Zhou. "Sequential
    Recommendation with Diffusion Models." arXiv 2304.04541, 2023. The paper names its model
    DiffRec; it is SeqDiffRec here so that it does not clash with Wang et al.'s DiffRec.

No public code exists; this is built from the paper. The forward process gains an extra
transition from the discrete target item to a hidden vector, x0 ~ N(e_target, beta_1 I)
(as Diffusion-LM's embedding step); only the target's vector is noised. The denoiser (DNR)
is a Transformer encoder over the history item embeddings followed by the noised target, with
position and step embeddings, and predicts the clean target vector x0 directly. The reverse
process ends in a softmax linear layer ("rounding") from x0 to item probabilities; the KL
terms, rewritten as squared errors between x0 and its prediction, are trained together with
the rounding cross-entropy. Training steps are drawn with loss-aware importance sampling.
At inference x0 is predicted in one call from a noised start and averaged over a few draws.

Choices where the paper leaves details open (each one a setting):
- ``noise_schedule``/``steps``: DDPM's linear betas 1e-4..0.02 over 1000 steps;
- the step embedding is added at every position (``step_embedding_at: all``) or only to the
  noised target (``target``);
- the encoder is causal (``bidirectional: False``): the target position sees the whole
  history, history positions do not see the target, as in SASRec;
- the rounding layer shares its weights with the item embeddings (``tie_rounding``) and has
  its own bias; it is trained on the predicted x0 (what inference rounds);
- ``mse_weight`` weighs the squared-error term against the rounding cross-entropy;
- inference starts from Gaussian noise with the variance of q(x_s | x0) at step s =
  ``inference_step`` (counted from 1, default the last step, where it is pure noise) and
  averages ``inference_draws`` predictions;
- ``inference_steps: n`` (the paper's reverse process, made affordable) runs a reverse
  chain from that start down to step 0 on n evenly spaced steps (Improved DDPM's
  respacing, posterior variance, noise when ``sampling_noise``) and averages the draws'
  final x0; ~ (default) predicts x0 in the one denoiser call above.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion import SpacedDiffusion, timestep_embedding
from .checks import SEQDIFFREC_INFERENCE_STEPS, SEQDIFFREC_RULES
from .sequential import (
    SequentialDiffusionRecommender,
    TransformerStack,
    build_diffusion,
    step_mlp,
    xavier_init,
)


class SeqDiffRec(SequentialDiffusionRecommender):
    r"""Du et al.'s diffusion sequential recommender (DNR denoiser, rounding layer)."""

    config_files = ("SeqDiffRec.yaml",)
    config_rules = SEQDIFFREC_RULES
    inference_steps_rule = SEQDIFFREC_INFERENCE_STEPS

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]
        self.bidirectional = bool(config["bidirectional"])
        self.step_embedding_at = config["step_embedding_at"]
        self.mse_weight = float(config["mse_weight"])
        self.inference_draws = config["inference_draws"]
        self.sampling_noise = bool(config["sampling_noise"])

        self.item_embedding = nn.Embedding(
            self.n_items, self.hidden_size, padding_idx=0
        )
        # One more position than the history: the noised target sits after it.
        self.position_embedding = nn.Embedding(
            self.max_seq_length + 1, self.hidden_size
        )
        self.step_mlp = step_mlp(self.hidden_size)
        self.input_norm = nn.LayerNorm(self.hidden_size, eps=1e-12)
        self.input_dropout = nn.Dropout(config["dropout"])
        self.transformer = TransformerStack(
            self.hidden_size, config["n_layers"], config["n_heads"], config["dropout"]
        )
        self.out_norm = nn.LayerNorm(self.hidden_size, eps=1e-12)
        self.rounding = (
            None
            if config["tie_rounding"]
            else nn.Linear(self.hidden_size, self.n_items, bias=False)
        )
        self.rounding_bias = nn.Parameter(torch.zeros(self.n_items))
        self.diffusion = build_diffusion(config)
        step = config["inference_step"]
        self.inference_step = self.diffusion.steps if step is None else step
        self.set_inference_steps(config["inference_steps"])
        self.apply(xavier_init)
        nn.init.normal_(self.item_embedding.weight, 0.0, 1.0 / self.hidden_size**0.5)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    # ------------------------------------------------------------------ denoiser (DNR)
    def denoise(
        self,
        item_seq: torch.Tensor,
        item_seq_len: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
    ) -> torch.Tensor:
        """Predict x0 from the history and the noised target vector x_t at step t."""
        batch, length = item_seq.shape
        # Place x_t right after each history (RecBole pads on the right).
        tokens = torch.cat(
            [self.item_embedding(item_seq), x_t.new_zeros(batch, 1, self.hidden_size)],
            dim=1,
        )
        rows = torch.arange(batch, device=x_t.device)
        tokens[rows, item_seq_len] = x_t
        positions = torch.arange(length + 1, device=x_t.device)
        step = self.step_mlp(timestep_embedding(t, self.hidden_size))
        hidden = tokens + self.position_embedding(positions).unsqueeze(0)
        if self.step_embedding_at == "all":
            hidden = hidden + step.unsqueeze(1)
        else:
            hidden[rows, item_seq_len] = hidden[rows, item_seq_len] + step
        hidden = self.input_dropout(self.input_norm(hidden))

        padded = positions.unsqueeze(0) > item_seq_len.unsqueeze(1)  # after the target
        causal = (
            None
            if self.bidirectional
            else torch.triu(
                torch.ones(length + 1, length + 1, dtype=torch.bool, device=x_t.device),
                diagonal=1,
            )
        )
        # Only the target position's output is used: the last block computes no other.
        hidden = self.transformer(hidden, causal, padded, output_index=item_seq_len)
        return self.out_norm(hidden)

    def round_logits(self, x0: torch.Tensor) -> torch.Tensor:
        weight = (
            self.item_embedding.weight
            if self.rounding is None
            else self.rounding.weight
        )
        return x0 @ weight.T + self.rounding_bias

    # ------------------------------------------------------------------ training
    def calculate_loss(self, interaction) -> torch.Tensor:
        item_seq, item_seq_len = self.history(interaction)
        target = interaction[self.POS_ITEM_ID]

        embedded = self.item_embedding(target)
        # Extra forward transition: discrete item -> hidden vector, x0 ~ N(e, beta_1 I).
        x_start = embedded + self.diffusion.betas[0].float().sqrt() * torch.randn_like(
            embedded
        )

        def terms(x_t, t, noise):
            x0_pred = self.denoise(item_seq, item_seq_len, x_t, t)
            squared_error = ((x0_pred - x_start) ** 2).sum(dim=-1)
            logits = self.round_logits(x0_pred)
            rounding = F.cross_entropy(logits, target, reduction="none")
            return {"loss": self.mse_weight * squared_error + rounding}

        return self.diffusion.step_losses(x_start, terms)["loss"].mean()

    # ------------------------------------------------------------------ inference
    @property
    def inference_start(self) -> int:
        return self.inference_step

    def set_inference_steps(self, count) -> None:
        """``count`` None: one denoiser call; an integer: a reverse chain of that many
        steps from ``inference_step`` (which :meth:`inference_diffusion` runs, even at
        full length, since the one-call mode is not a chain)."""
        super().set_inference_steps(count)
        if count is not None and self.inference_chain is None:  # every step
            self.inference_chain = SpacedDiffusion(
                self.diffusion, range(self.inference_step)
            )

    @torch.no_grad()
    def sequence_representation(self, interaction) -> torch.Tensor:
        """x0 predicted from pure noise at ``inference_step`` (in one denoiser call, or
        at the end of an ``inference_steps`` reverse chain), averaged over draws."""
        item_seq, item_seq_len = self.history(interaction)
        batch = len(item_seq)
        draws = self.inference_draws
        t = torch.full(
            (batch * draws,), self.inference_step - 1, device=item_seq.device
        )
        # q(x_s | x0) with the unknown x0 replaced by its prior mean 0.
        scale = self.diffusion.sqrt_one_minus_alphas_cumprod[self.inference_step - 1]
        x_t = float(scale) * torch.randn(
            batch * draws, self.hidden_size, device=item_seq.device
        )
        item_seq, item_seq_len = item_seq.repeat(draws, 1), item_seq_len.repeat(draws)
        if self.inference_chain is None:
            x0 = self.denoise(item_seq, item_seq_len, x_t, t)
        else:

            def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return self.denoise(item_seq, item_seq_len, x_t, t)

            x0 = self.inference_chain.p_sample_loop(
                denoiser, x_t, sampling_noise=self.sampling_noise, variance="small"
            )
        return x0.view(draws, batch, self.hidden_size).mean(dim=0)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.round_logits(self.sequence_representation(interaction))
