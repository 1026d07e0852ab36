r"""
GF-CF and BSPM
################################################
References:
    Yifei Shen, Yongji Wu, Yao Zhang, Caihua Shan, Jun Zhang, Khaled B. Letaief, Dongsheng Li.
    "How Powerful is Graph Convolution for Recommendation?" In CIKM 2021 (GF-CF).

    Jeongwhan Choi, Seoyoung Hong, Noseong Park, Sung-Bae Cho.
    "Blurring-Sharpening Process Models for Collaborative Filtering." In SIGIR 2023 (BSPM).

Reference code:
    https://github.com/jeongwhanchoi/BSPM (MIT; ``bspm/model.py``: ``GF_CF`` and ``BSPM``)

Both are training-free graph filters on the normalised interaction matrix
``R~ = D_U^{-1/2} R D_I^{-1/2}`` (degrees of the binary training matrix R). For a user's
training row r:

* GF-CF scores ``r R~^T R~ + alpha * r D_I^{-1/2} V_k V_k^T D_I^{1/2}`` (the linear filter
  plus the ideal low-pass filter on the top-k right singular vectors V_k of R~).
* BSPM blurs r with the ODE ``dr/dt = r (R~^T R~ - I)``, sharpens the result with
  ``dr/dt = -r R~^T R~`` and adds the ideal low-pass term, either before sharpening (early
  merge) or after it (late merge); ``t_point_combination`` averages the ODE's time points.

Nothing is learnt: the filters are computed when the model is built (like RecBole's EASE) and
one pass of the trainer evaluates them.
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Tuple

import numpy as np
import scipy.sparse as sp
import torch
from recbole.utils import InputType, ModelType
from scipy.sparse.linalg import svds
from torchdiffeq import odeint

from .base import SparseUserRows, UserBatchRecommender, require_plugin_config
from .checks import Choice, Int, Number, NonNegative, PLUGIN, Rule

ODE_SOLVERS = ("euler", "rk4")  # the fixed-grid torchdiffeq methods the reference uses


def _inverse_sqrt(degrees: np.ndarray) -> np.ndarray:
    """d^{-1/2}, with 0 for degree 0 (as the reference sets inf to 0)."""
    out = np.zeros_like(degrees, dtype=np.float64)
    positive = degrees > 0
    out[positive] = degrees[positive] ** -0.5
    return out


def normalized_matrix(matrix: sp.spmatrix) -> Tuple[sp.csr_matrix, np.ndarray]:
    """``R~ = D_U^{-1/2} R D_I^{-1/2}`` (float64 CSR) and the items' ``d_I^{-1/2}``."""
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    user_scale = _inverse_sqrt(np.asarray(matrix.sum(axis=1)).ravel())
    item_scale = _inverse_sqrt(np.asarray(matrix.sum(axis=0)).ravel())
    normalized = sp.diags(user_scale) @ matrix @ sp.diags(item_scale)
    return sp.csr_matrix(normalized), item_scale


def top_right_singular_vectors(matrix: sp.spmatrix, k: int, seed: int) -> np.ndarray:
    """The top-``k`` right singular vectors of ``matrix`` as rows (k, n_cols).

    ARPACK (scipy's svds) on the sparse matrix, started from a seeded vector so the result
    is deterministic; its sign ambiguity cancels in ``V^T V``. ARPACK needs
    k < min(shape); a larger k takes every singular vector from a dense SVD, which is
    small then (min(shape) <= k).
    """
    if k < min(matrix.shape):
        # ARPACK's start vector (length min(shape)), passed explicitly: deterministic.
        start = np.random.default_rng(seed).uniform(-1.0, 1.0, min(matrix.shape))
        _, _, vt = svds(matrix, k=k, v0=start)
        return vt
    _, _, vt = np.linalg.svd(matrix.toarray(), full_matrices=False)
    return vt


# Below this share of non-zeros the item x item filter R~^T R~ is kept sparse. Measured
# with one thread (1024 users x 4k items): sparse is 2-4x faster than dense up to 5%
# density, level near 15%. MovieLens-1M's filter is 66% full (dense); Amazon-Beauty's 0.7%
# (sparse: 7.5x faster GF-CF scoring, 12 MB instead of 559 MB; a 100k-item catalogue's dense
# filter would need 40 GB).
SPARSE_FILTER_BELOW_DENSITY = 0.1


def item_filter(matrix: sp.spmatrix) -> torch.Tensor:
    """The float32 item x item filter: a sparse CSR tensor when less than
    ``SPARSE_FILTER_BELOW_DENSITY`` of it is non-zero, else dense."""
    density = matrix.nnz / max(1, matrix.shape[0] * matrix.shape[1])
    if density >= SPARSE_FILTER_BELOW_DENSITY:
        return torch.from_numpy(matrix.toarray().astype(np.float32))
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sort_indices()
    with warnings.catch_warnings():  # torch calls its sparse CSR support beta
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data),
            size=matrix.shape,
        )


class GraphFilterRecommender(UserBatchRecommender):
    """Shared pieces: the sparse training rows, R~, the item-item filter R~^T R~ (sparse
    or dense by its density) and the factors of the ideal low-pass filter; training-free
    (RecBole's TRADITIONAL type).
    """

    type = ModelType.TRADITIONAL
    input_type = InputType.LISTWISE

    def __init__(self, config, dataset):
        require_plugin_config(config, type(self).__name__)
        self.check_config(config)
        super().__init__(config, dataset)
        # RecBole's trainer needs a parameter to build its optimizer; nothing is learnt.
        self.dummy_param = torch.nn.Parameter(torch.zeros(1))

        # Columns are the real items, ids 1..n (RecBole's id 0 is padding).
        matrix = dataset.inter_matrix(form="csr")[:, 1:].astype(np.float32)
        matrix.data[:] = 1.0  # binary, as in the reference
        self.history = SparseUserRows(matrix)
        normalized, item_scale = normalized_matrix(matrix)
        self.register_buffer(
            "linear_filter", item_filter(normalized.T @ normalized), persistent=False
        )
        left = right = None
        if self.uses_lowpass(config):
            vt = top_right_singular_vectors(
                normalized, int(config["factor_dim"]), int(config["seed"])
            )
            # Items never seen in training have d_I = 0: their D_I^{1/2} is 0, where the
            # reference's 1/d^{-1/2} would give inf (and NaN scores); their column is 0.
            item_sqrt = np.zeros_like(item_scale)
            item_sqrt[item_scale > 0] = 1.0 / item_scale[item_scale > 0]
            # Kept as two thin factors (n_items x k, k x n_items) instead of the dense
            # D_I^{-1/2} V_k V_k^T D_I^{1/2}: the same product for a fraction of the memory.
            left = torch.from_numpy((item_scale[:, None] * vt.T).astype(np.float32))
            right = torch.from_numpy((vt * item_sqrt[None, :]).astype(np.float32))
        # Derived from the dataset, so rebuilt on load rather than saved (None: no term).
        self.register_buffer("lowpass_left", left, persistent=False)
        self.register_buffer("lowpass_right", right, persistent=False)
        self.to(self.device)

    def uses_lowpass(self, config) -> bool:
        raise NotImplementedError

    def calculate_loss(self, interaction) -> torch.Tensor:
        # Training-free: a zero loss that reaches no parameter (RecBole's EASE does the same).
        return torch.zeros((), device=self.dummy_param.device, requires_grad=True)

    def linear_term(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows R~^T R~``."""
        if self.linear_filter.layout == torch.sparse_csr:
            # R~^T R~ is symmetric, so rows P = (P rows^T)^T: torch's sparse x dense product.
            return (self.linear_filter @ rows.T).T
        return rows @ self.linear_filter

    def lowpass_term(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows D_I^{-1/2} V_k V_k^T D_I^{1/2}``."""
        return (rows @ self.lowpass_left) @ self.lowpass_right


# ------------------------------------------------------------------------------- GF-CF
def _factor_dim_rule() -> Rule:
    return Int("factor_dim", 1)


GFCF_RULES: Tuple[Rule, ...] = PLUGIN + (
    _factor_dim_rule(),
    NonNegative("alpha"),
)


class GFCF(GraphFilterRecommender):
    r"""GF-CF: the linear filter plus ``alpha`` times the ideal low-pass filter."""

    config_files = ("GFCF.yaml",)
    config_rules = GFCF_RULES

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.alpha = float(config["alpha"])

    def uses_lowpass(self, config) -> bool:
        # alpha = 0 is the reference's Amazon-book variant: the linear filter alone.
        return float(config["alpha"]) > 0

    def score_real_items(self, users: torch.Tensor) -> torch.Tensor:
        rows = self.history(users)
        scores = self.linear_term(rows)
        if self.lowpass_left is not None:
            scores = scores + self.alpha * self.lowpass_term(rows)
        return scores


# -------------------------------------------------------------------------------- BSPM
BSPM_RULES: Tuple[Rule, ...] = PLUGIN + (
    _factor_dim_rule(),
    NonNegative("idl_beta"),
    Choice("solver_idl", ODE_SOLVERS),
    Choice("solver_blr", ODE_SOLVERS),
    Choice("solver_shr", ODE_SOLVERS),
    Int("K_idl", 1),
    Int("K_b", 1),
    Int("K_s", 1),
    Number("T_idl", 0.0, open_low=True),
    Number("T_b", 0.0, open_low=True),
    Number("T_s", 0.0, open_low=True),
    Choice("final_sharpening", (True, False)),
    Choice("sharpening_off", (True, False)),
    Choice("t_point_combination", (True, False)),
)


def time_grid(terminal: float, steps: int) -> torch.Tensor:
    """The reference's grid: ``steps`` equal steps from 0 to ``terminal`` (K+1 points)."""
    return torch.linspace(0.0, float(terminal), int(steps) + 1)


class BSPM(GraphFilterRecommender):
    r"""BSPM: a blurring ODE, a sharpening ODE and the ideal low-pass term, as in the
    reference's ``BSPM`` class (the general ODE version, not the GPU shortcut that assumes
    one Euler step for blurring and the low-pass term)."""

    config_files = ("BSPM.yaml",)
    config_rules = BSPM_RULES

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.idl_beta = float(config["idl_beta"])
        self.solvers = {
            part: config[f"solver_{part}"] for part in ("idl", "blr", "shr")
        }
        self.final_sharpening = bool(config["final_sharpening"])
        self.sharpening_off = bool(config["sharpening_off"])
        self.t_point_combination = bool(config["t_point_combination"])
        self.register_buffer(
            "idl_times", time_grid(config["T_idl"], config["K_idl"]), False
        )
        self.register_buffer(
            "blur_times", time_grid(config["T_b"], config["K_b"]), False
        )
        self.register_buffer(
            "sharpen_times", time_grid(config["T_s"], config["K_s"]), False
        )
        self.to(self.device)

    def uses_lowpass(self, config) -> bool:
        # idl_beta = 0 is the reference's Amazon-book variant: no low-pass term at all.
        return float(config["idl_beta"]) > 0

    # The three ODEs' right-hand sides (time-invariant, linear in r).
    def idl_function(self, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return self.lowpass_term(r) - r

    def blur_function(self, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return self.linear_term(r) - r

    def sharpen_function(self, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return -self.linear_term(r)

    @staticmethod
    def solve(
        func: Callable, start: torch.Tensor, times: torch.Tensor, method: str
    ) -> torch.Tensor:
        """Every grid point's state, (len(times), *start.shape)."""
        return odeint(func, start, times.to(start), method=method)

    def score_real_items(self, users: torch.Tensor) -> torch.Tensor:
        rows = self.history(users)
        idl: Optional[torch.Tensor] = None
        if self.lowpass_left is not None:
            idl = self.solve(
                self.idl_function, rows, self.idl_times, self.solvers["idl"]
            )
            idl = self.idl_beta * idl[-1]
        blurred = self.solve(
            self.blur_function, rows, self.blur_times, self.solvers["blr"]
        )
        if self.sharpening_off:
            points = blurred[1:]
        else:
            start = blurred[-1]
            if self.final_sharpening and idl is not None:
                start = start + idl  # early merge: sharpen the low-pass term too
            sharpened = self.solve(
                self.sharpen_function, start, self.sharpen_times, self.solvers["shr"]
            )
            points = torch.cat([blurred[1:], sharpened[1:]], dim=0)
        scores = points.mean(dim=0) if self.t_point_combination else points[-1]
        # Late merge (or no sharpening): the low-pass term is added at the end.
        merged_early = self.final_sharpening and not self.sharpening_off
        if idl is not None and not merged_early:
            scores = scores + idl
        return scores
