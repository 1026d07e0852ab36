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
        AbstractDataLoader.__init__(self, config, dataset, sampler, shuffle=True)


def configure_eval_batch(config, dataset) -> None:
    """Size full-ranking batches in users (``eval_batch_users``) rather than in scores.

    RecBole reads ``eval_batch_size`` as users x items in full ranking, so its default
    (4096) gives one user per batch on most catalogues. An explicit ``eval_batch_size``
    from the user is kept unless ``eval_batch_users`` is also given.
    """
    users = config["eval_batch_users"]
    external = config.external_config_dict
    if users is not None and (
        "eval_batch_size" not in external or "eval_batch_users" in external
    ):
        if isinstance(users, bool) or not isinstance(users, int) or users < 1:
            raise ValueError(
                f"eval_batch_users: got {users!r}; allowed: an integer >= 1"
            )
        config["eval_batch_size"] = users * dataset.item_num
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
    """
    configure_eval_batch(config, dataset)
    model_class = getattr(config, "model_class", None)
    if model_class is None or not is_plugin_model(model_class):
        return recbole_data_preparation(config, dataset)

    built = dataset.build()
    train_set, valid_set, test_set = built
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    if getattr(model_class, "train_batches", "interactions") == "users":
        train_data = UserBatchDataLoader(config, train_set, train_sampler)
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
    return train_data, valid_data, test_data
