"""DiffRec's reverse chain on the denoiser's hidden sizes instead of the item count.

A denoiser that is affine in its input up to the first activation (``W_in x``) and ends in a
linear read-out (``W_out h + b_out``) only sees x through ``W_in x`` and only writes through
``W_out``. Every noise-free reverse step mixes x_t and the denoiser's output linearly, so the
whole chain can track the first layer's pre-activation and the last hidden layer, and expand
to items once at the end: equal to the plain chain up to float rounding, several times faster.
"""

from __future__ import annotations

from typing import Protocol, Sequence, Tuple, runtime_checkable

import torch


@runtime_checkable
class FactoredDenoiser(Protocol):
    """What the factored chain needs from a denoiser (``MLPDenoiser`` implements it)."""

    # nn.Module's flag: in training mode input dropout breaks the affine input.
    training: bool

    @property
    def affine_input(self) -> bool:
        """True when the input reaches the first activation through ``input_projection``
        alone (no normalisation of the input)."""

    def input_projection(self, x: torch.Tensor) -> torch.Tensor:
        """``W_in x``: the input's part of the first layer, without bias."""

    def hidden_from_projection(
        self, projected: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The last hidden layer given ``W_in x`` and the steps."""

    def readout(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(W_out, b_out)`` of the final linear layer (outputs x hidden, outputs)."""


def can_factor(model: object) -> bool:
    """Whether the factored chain gives the plain chain's result for ``model`` now."""
    return (
        isinstance(model, FactoredDenoiser)
        and not model.training
        and model.affine_input
    )


def factored_chain(
    model: FactoredDenoiser,
    x_t: torch.Tensor,
    coef_a: Sequence[float],
    coef_b: Sequence[float],
) -> torch.Tensor:
    """The noise-free reverse chain mean(x_{t-1}) = A[t] x_t + B[t] model(x_t, t) over
    t = T-1 .. 0 (``len(coef_a)`` steps) from ``x_t``, for a denoiser that :func:`can_factor`.
    """
    if not can_factor(model):
        raise TypeError(
            f"factored chain: {type(model).__name__} must implement FactoredDenoiser, be in "
            "eval mode and have an affine input; use p_sample_loop instead"
        )
    # Track x_t = c * x_T + W_out @ acc_h + acc_b * b_out and z_t = W_in x_t; each
    # reverse step x <- A x + B (W_out h + b_out) then costs hidden-sized products only.
    w_out, b_out = model.readout()
    w_in_out = model.input_projection(w_out.T)  # (hidden_last, first_hidden)
    b_in_out = model.input_projection(b_out[None])[0]
    z = model.input_projection(x_t)
    acc_h = torch.zeros(
        x_t.shape[0], w_out.shape[1], dtype=x_t.dtype, device=x_t.device
    )
    acc_b, c = 0.0, 1.0
    for i in reversed(range(len(coef_a))):
        t = torch.full((x_t.shape[0],), i, device=x_t.device, dtype=torch.long)
        h = model.hidden_from_projection(z, t)
        a, b = coef_a[i], coef_b[i]
        acc_h = a * acc_h + b * h
        acc_b = a * acc_b + b
        c *= a
        if i > 0:
            z = a * z + b * (h @ w_in_out + b_in_out)
    return c * x_t + acc_h @ w_out.T + acc_b * b_out
