"""Building a model for a RecBole run: the steps between the data splits and the trainer."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .clustering import prepare_item_clusters


def build_model(config, train_dataset, item_clusters: Optional[np.ndarray] = None):
    """The model ``config`` names, built on the training split and moved to its device.

    Models that declare ``needs_item_clusters`` (L-DiffRec, LT-DiffRec) get their item
    clusters from :func:`~recbole_diffrec.clustering.prepare_item_clusters` unless
    ``item_clusters`` is given (e.g. read back from a checkpoint).
    """
    model_class = config.model_class
    if not getattr(model_class, "needs_item_clusters", False):
        return model_class(config, train_dataset).to(config["device"])
    if item_clusters is None:
        item_clusters = prepare_item_clusters(config, train_dataset)
    model = model_class(config, train_dataset, item_clusters=item_clusters)
    return model.to(config["device"])
