"""Dataloaders for plugin and RecBole models, routed by model class (not by name)."""

from __future__ import annotations

from logging import getLogger

import numpy as np
import torch
from recbole.data import data_preparation as recbole_data_preparation
from recbole.data.dataloader import (
    FullSortEvalDataLoader,
    NegSampleEvalDataLoader,
    TrainDataLoader,
    UserDataLoader,
)
from recbole.data.dataloader.abstract_dataloader import AbstractDataLoader
from recbole.data.interaction import Interaction
from recbole.data.utils import create_samplers
from recbole.utils import ModelType

from .models.checks import PLUGIN, RUN, check_settings
from .registry import is_plugin_model


class UserBatchDataLoader(UserDataLoader):
    """Shuffled batches of the users that have training interactions.

    RecBole's ``UserDataLoader`` also yields the padding user 0 and users with empty rows;
    the reference DiffRec trains on real users only.
    """

    def __init__(self, config, dataset, sampler, shuffle=True):
        self.logger = getLogger()
        self.uid_field = dataset.uid_field
        users = np.unique(dataset.inter_feat[self.uid_field].numpy())
        self.user_list = Interaction({self.uid_field: torch.from_numpy(users)})
        self.sample_size = len(self.user_list)
        AbstractDataLoader.__init__(self, config, dataset, sampler, shuffle=shuffle)


def _column(feat, field: str) -> np.ndarray:
    """A column as numpy, from a pandas frame (before ``build``) or an Interaction."""
    return np.asarray(feat[field])


class UserHistories:
    """Every user's interactions in time order (CSR), read before RecBole augments and
    splits a sequential dataset, to find each evaluation target's earlier items."""

    def __init__(self, dataset):
        users = _column(dataset.inter_feat, dataset.uid_field).astype(np.int64)
        items = _column(dataset.inter_feat, dataset.iid_field).astype(np.int64)
        times = _column(dataset.inter_feat, dataset.time_field)
        order = np.lexsort((times, users))
        self.items = torch.from_numpy(items[order])
        # Times as dense ranks, so (user, time) becomes one sortable int64 key.
        self.time_values, rank = np.unique(times[order], return_inverse=True)
        self.span = len(self.time_values) + 1
        self.keys = users[order] * self.span + rank
        self.indptr = np.concatenate(
            [[0], np.cumsum(np.bincount(users, minlength=dataset.user_num))]
        )

    def before(self, users: np.ndarray, times: np.ndarray):
        """(start, end) into ``items``: each user's interactions earlier than ``times``."""
        rank = np.searchsorted(self.time_values, times, side="left")
        end = np.searchsorted(self.keys, users * self.span + rank, side="left")
        return self.indptr[users], end


class MaskedHistoryEvalDataLoader(FullSortEvalDataLoader):
    """Full ranking for sequential models with each user's earlier items removed from the
    ranking (``eval_history: masked``), as RecBole does for general recommenders. The
    target itself is never masked, even when it was consumed before."""

    def __init__(self, config, dataset, sampler, histories: UserHistories):
        super().__init__(config, dataset, sampler, shuffle=False)
        start, end = histories.before(
            _column(dataset.inter_feat, dataset.uid_field).astype(np.int64),
            _column(dataset.inter_feat, dataset.time_field),
        )
        self.history_items = histories.items
        self.history_start = torch.from_numpy(start)
        self.history_count = torch.from_numpy(end - start)

    def collate_fn(self, index):
        interaction, _, positive_u, positive_i = super().collate_fn(index)
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        counts = self.history_count[index]
        rows = torch.repeat_interleave(torch.arange(len(index)), counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        items = self.history_items[self.history_start[index][rows] + offsets]
        keep = items != positive_i[rows]
        return interaction, (rows[keep], items[keep]), positive_u, positive_i


def configure_eval_batch(config, dataset) -> None:
    """Size full-ranking batches in users (``eval_batch_users``) rather than in scores.

    RecBole reads ``eval_batch_size`` as users x items in full ranking, so its default
    (4096) gives one user per batch on most catalogues. An explicit ``eval_batch_size``
    from the user is kept unless ``eval_batch_users`` is also given.
    """
    users = config["eval_batch_users"]
    external = config.external_config_dict
    sequential = config["MODEL_TYPE"] == ModelType.SEQUENTIAL
    if users is not None and (
        "eval_batch_size" not in external or "eval_batch_users" in external
    ):
        if not sequential:
            config["eval_batch_size"] = users * dataset.item_num
        elif "eval_batch_users" in external:
            # Sequential loaders count eval_batch_size in sequences already.
            config["eval_batch_size"] = users
    if sequential:
        getLogger().info(
            f"full-ranking evaluation: {config['eval_batch_size']} sequences per batch, "
            f"history items {config['eval_history'] or 'unmasked'}"
        )
        return
    modes = config["eval_args"]["mode"]
    if "full" in (modes.get("valid"), modes.get("test")):
        getLogger().info(
            f"full-ranking evaluation: {max(config['eval_batch_size'] // dataset.item_num, 1)} "
            f"users per batch (eval_batch_size={config['eval_batch_size']}, "
            f"{dataset.item_num} items)"
        )


def _eval_loader_class(config, phase: str):
    mode = config["eval_args"]["mode"][phase]
    return FullSortEvalDataLoader if mode == "full" else NegSampleEvalDataLoader


def data_preparation(config, dataset):
    """Drop-in for ``recbole.data.data_preparation`` that routes plugin models correctly.

    Returns ``(train_data, valid_data, test_data)``.

    Data-parallel (``single_spec`` False), the loaders are the ones a single process
    builds: every rank iterates the same global batches (the train loader's generator is
    seeded alike, so each epoch's reshuffle is the one-process order) and the trainer
    keeps each rank's contiguous shard of rows (per-rank batch = global / world size).
    RecBole's own distributed loaders (a ``DistributedSampler``, each rank a strided
    subset, the last batch padded with repeated rows) are not used.
    """
    if not config["single_spec"]:
        from .distributed import single_spec

        with single_spec(config):
            return _data_preparation(config, dataset)
    return _data_preparation(config, dataset)


def _data_preparation(config, dataset):
    check_settings(config, RUN)
    configure_eval_batch(config, dataset)
    histories = None
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        protocol = config["eval_history"] or "unmasked"
        if protocol == "masked":
            if dataset.time_field is None:
                raise ValueError(
                    "eval_history: masked needs the dataset's time field (TIME_FIELD) "
                    "to tell which items came before each target"
                )
            histories = UserHistories(dataset)  # before augmentation and splitting
    model_class = getattr(config, "model_class", None)
    if model_class is None or not is_plugin_model(model_class):
        loaders = recbole_data_preparation(config, dataset)
        return _mask_histories(config, loaders, histories)

    check_settings(config, PLUGIN)
    built = dataset.build()
    train_set, valid_set, test_set = built
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    if getattr(model_class, "train_batches", "interactions") == "users":
        train_data = UserBatchDataLoader(
            config, train_set, train_sampler, shuffle=config["shuffle"]
        )
    else:
        train_data = TrainDataLoader(
            config, train_set, train_sampler, shuffle=config["shuffle"]
        )
    valid_data = _eval_loader_class(config, "valid")(
        config, valid_set, valid_sampler, shuffle=False
    )
    test_data = _eval_loader_class(config, "test")(
        config, test_set, test_sampler, shuffle=False
    )
    getLogger().info(
        f"[Training]: {type(train_data).__name__}, train_batch_size = "
        f"{config['train_batch_size']} ({model_class.__name__} trains on "
        f"{getattr(model_class, 'train_batches', 'interactions')})"
    )
    return _mask_histories(config, (train_data, valid_data, test_data), histories)


def _mask_histories(config, loaders, histories):
    if histories is None:
        return loaders
    train_data, valid_data, test_data = loaders
    rebuilt = []
    for loader in (valid_data, test_data):
        if isinstance(loader, FullSortEvalDataLoader):
            loader = MaskedHistoryEvalDataLoader(
                config, loader._dataset, loader._sampler, histories
            )
        rebuilt.append(loader)
    return (train_data, *rebuilt)
