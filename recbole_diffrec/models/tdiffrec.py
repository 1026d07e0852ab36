r"""
T-DiffRec and LT-DiffRec
################################################
Reference:
    Wenjie Wang, Yiyan Xu, Fuli Feng, Xiaoyu Lin, Xiangnan He, Tat-Seng Chua.
    "Diffusion Recommender Model." In SIGIR 2023 (Section 3.5, T-DiffRec).

Reference code:
    https://github.com/YiyanXu/DiffRec (``T-DiffRec/``)

T-DiffRec re-weights each user's training interactions by recency: ordered by time, they get
``linspace(w_min, w_max, n_u)`` (a single interaction gets ``w_min``), and the weighted row is
both the model input and the reconstruction target. LT-DiffRec is L-DiffRec on those rows.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .checks import LTDIFFREC_RULES, TDIFFREC_RULES
from .diffrec import DiffRec
from .ldiffrec import LDiffRec


def time_weights(
    users: np.ndarray, times: np.ndarray, w_min: float, w_max: float
) -> np.ndarray:
    """Weight of each interaction (input order): linspace(w_min, w_max, n_u) over the user's
    interactions sorted by time (ties keep input order); w_min for a single interaction.
    """
    users = np.asarray(users)
    n = len(users)
    order = np.lexsort((np.arange(n), np.asarray(times), users))
    sorted_users = users[order]
    is_first = np.ones(n, dtype=bool)
    is_first[1:] = sorted_users[1:] != sorted_users[:-1]
    group_start = np.maximum.accumulate(np.where(is_first, np.arange(n), 0))
    counts = np.bincount(sorted_users)[sorted_users]
    rank = np.arange(n) - group_start
    span = np.maximum(counts - 1, 1)
    weights = np.where(counts > 1, w_min + (w_max - w_min) * rank / span, w_min)
    out = np.empty(n, dtype=np.float64)
    out[order] = weights
    return out


class TimeWeightedRows:
    """Mixin: training rows weighted by recency instead of binary."""

    def history_matrix(self, config, dataset) -> sp.csr_matrix:
        time_field = dataset.time_field
        if time_field is None or time_field not in dataset.inter_feat.interaction:
            raise ValueError(
                f"TIME_FIELD: {type(self).__name__} needs interaction times, but dataset "
                f"{dataset.dataset_name!r} has no time field loaded (TIME_FIELD = "
                f"{time_field!r}); set TIME_FIELD and add it to load_col"
            )
        feat = dataset.inter_feat
        users = feat[dataset.uid_field].numpy()
        items = feat[dataset.iid_field].numpy()
        times = feat[time_field].numpy()
        weights = time_weights(
            users, times, float(config["w_min"]), float(config["w_max"])
        )
        # A repeated (user, item) keeps the weight of its latest interaction.
        order = np.lexsort((times, items, users))
        last = np.ones(len(order), dtype=bool)
        key_u, key_i = users[order], items[order]
        last[:-1] = (key_u[1:] != key_u[:-1]) | (key_i[1:] != key_i[:-1])
        keep = order[last]
        return sp.csr_matrix(
            (weights[keep].astype(np.float32), (users[keep], items[keep] - 1)),
            shape=(dataset.user_num, dataset.item_num - 1),
        )


class TDiffRec(TimeWeightedRows, DiffRec):
    r"""T-DiffRec: DiffRec on time-weighted interaction rows."""

    config_files = ("DiffRec.yaml", "TDiffRec.yaml")

    config_rules = TDIFFREC_RULES


class LTDiffRec(TimeWeightedRows, LDiffRec):
    r"""LT-DiffRec: L-DiffRec on time-weighted interaction rows."""

    config_files = ("DiffRec.yaml", "LDiffRec.yaml", "TDiffRec.yaml")

    config_rules = LTDIFFREC_RULES
