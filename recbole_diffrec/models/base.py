"""Shared pieces of the plugin's general recommenders: sparse user rows and config checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from torch import nn

from .checks import DeclaredSettings


class SparseUserRows(nn.Module):
    """Users' training rows kept in CSR form; dense rows are built per batch only.

    The buffers are derived from the dataset, so they are not saved in checkpoints.
    """

    def __init__(self, matrix: sp.csr_matrix):
        super().__init__()
        matrix = sp.csr_matrix(matrix)
        matrix.sum_duplicates()
        matrix.sort_indices()
        self.n_items = matrix.shape[1]
        self.register_buffer(
            "indptr", torch.from_numpy(matrix.indptr.astype(np.int64)), persistent=False
        )
        self.register_buffer(
            "indices",
            torch.from_numpy(matrix.indices.astype(np.int64)),
            persistent=False,
        )
        self.register_buffer(
            "values", torch.from_numpy(matrix.data.astype(np.float32)), persistent=False
        )

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        """Dense rows (len(users), n_items) of the given users."""
        users = users.to(self.indptr.device).long()
        start = self.indptr[users]
        counts = self.indptr[users + 1] - start
        total = int(counts.sum())
        out = torch.zeros(len(users), self.n_items, device=self.values.device)
        if total == 0:
            return out
        rows = torch.repeat_interleave(
            torch.arange(len(users), device=users.device), counts
        )
        first = torch.repeat_interleave(
            start - (torch.cumsum(counts, 0) - counts), counts
        )
        nnz = torch.arange(total, device=users.device) + first
        out[rows, self.indices[nnz]] = self.values[nnz]
        return out


def require_plugin_config(config: Any, model_name: str) -> None:
    """Refuse a config built by RecBole's own Config, which merges RecBole's defaults."""
    if not config["recbole_diffrec"]:
        raise ValueError(
            f"{model_name} (recbole_diffrec) was given a config built by recbole.config.Config, "
            f"which loads RecBole's own defaults for a model named {model_name!r}. "
            "Build it with recbole_diffrec.Config (from recbole_diffrec import Config)."
        )


class UserBatchRecommender(DeclaredSettings, GeneralRecommender):
    """A general recommender trained on batches of users (RecBole's ``UserDataLoader``).

    ``train_batches`` tells ``recbole_diffrec.data_preparation`` which loader to build.
    """

    train_batches = "users"

    def _user_ids(self, interaction) -> torch.Tensor:
        if self.ITEM_ID in interaction.interaction:
            raise ValueError(
                f"{type(self).__name__} trains on batches of users but received interaction "
                "batches: RecBole's data_preparation routes dataloaders by model name. "
                "Use recbole_diffrec.data_preparation."
            )
        return interaction[self.USER_ID]

    def predict(self, interaction) -> torch.Tensor:
        users = interaction[self.USER_ID]
        items = interaction[self.ITEM_ID]
        unique_users, inverse = torch.unique(users, return_inverse=True)
        scores = self.score_users(unique_users)
        return scores[inverse, items]

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.score_users(interaction[self.USER_ID]).reshape(-1)

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        """Scores (len(users), n_items) over RecBole's item ids; id 0 (padding) scores -inf."""
        scores = self.score_real_items(users)
        return F.pad(scores, (1, 0), value=float("-inf"))

    def score_real_items(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of the real items, ids 1..n_items-1."""
        raise NotImplementedError
