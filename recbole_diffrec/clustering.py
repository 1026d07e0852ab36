"""Item clusters for L-DiffRec and LT-DiffRec, prepared before the model is built.

:func:`prepare_item_clusters` is the preparation step: the runner, the tuner and
``recbole_diffrec.build_model`` call it; a drop-in RecBole script calls it in one line::

    model = LDiffRec(config, train_data.dataset,
                     item_clusters=prepare_item_clusters(config, train_data.dataset))

Embeddings come from one of three sources (``item_emb_source``):

- ``file``: a ``.npy`` file (``item_emb_path``) whose row r belongs to the item whose
  *original* token is r (the DiffRec release's ``item_emb.npy``); rows are re-ordered
  through RecBole's token -> internal id mapping.
- ``lightgcn``: RecBole's own LightGCN trained on the training split (the paper's choice).
- ``svd``: a truncated SVD of the degree-normalised training matrix, for large catalogues.

Computed embeddings are cached under ``item_emb_cache_dir`` (default
``<checkpoint_dir>/item_emb/``), keyed by dataset,
training split and settings. Clusters come from scikit-learn's k-means++ with a seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from contextlib import contextmanager
from logging import getLogger
from pathlib import Path
from typing import Any, Dict, Iterator

import numpy as np
import scipy.sparse as sp
import torch
from recbole.data.dataloader import TrainDataLoader
from recbole.model.general_recommender import LightGCN
from recbole.sampler import Sampler
from recbole.utils import init_seed

from .config import config_from_settings
from .models.checks import EMBEDDING_SOURCES
from .trainer import get_trainer
from .utils import plain, write_atomically

logger = getLogger(__name__)


def align_file_embeddings(
    matrix: np.ndarray, item_tokens: np.ndarray, path: str = "item_emb_path"
) -> np.ndarray:
    """Rows of ``matrix`` (indexed by original integer item token) in internal-id order.

    ``item_tokens[k]`` is the original token of internal item k + 1 (RecBole's id 0 is padding).
    """
    if matrix.ndim != 2 or matrix.shape[1] < 1:
        raise ValueError(
            f"{path}: has shape {matrix.shape}; allowed: a 2-d array (items x dimensions)"
        )
    if matrix.shape[0] != len(item_tokens):
        raise ValueError(
            f"{path}: has {matrix.shape[0]} rows but the dataset has {len(item_tokens)} "
            "items; allowed: one row per item, indexed by the original item id"
        )
    try:
        rows = np.array([int(token) for token in item_tokens])
    except ValueError as err:
        raise ValueError(
            f"{path}: item tokens must be integers 0..n-1 to index the file's rows"
        ) from err
    if rows.min() < 0 or rows.max() >= matrix.shape[0]:
        raise ValueError(
            f"{path}: item tokens span {rows.min()}..{rows.max()}; allowed: 0..{matrix.shape[0] - 1}"
        )
    return np.asarray(matrix[rows], dtype=np.float32)


def svd_embeddings(matrix: sp.spmatrix, dim: int, seed: int) -> np.ndarray:
    """Item factors V * sqrt(S) of D_u^-1/2 R D_i^-1/2 (truncated, randomised SVD)."""
    from sklearn.utils.extmath import randomized_svd

    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    user_deg = np.asarray(matrix.sum(axis=1)).ravel()
    item_deg = np.asarray(matrix.sum(axis=0)).ravel()
    with np.errstate(divide="ignore"):
        du = np.where(user_deg > 0, user_deg**-0.5, 0.0)
        di = np.where(item_deg > 0, item_deg**-0.5, 0.0)
    normalised = sp.diags(du) @ matrix @ sp.diags(di)
    dim = min(dim, min(matrix.shape) - 1)
    _, s, vt = randomized_svd(normalised, dim, random_state=seed)
    return (vt.T * np.sqrt(s)).astype(np.float32)


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Leave the global RNGs as they were, so a cache hit and a miss train alike."""
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])


def lightgcn_embeddings(config, train_dataset, settings: Dict[str, Any]) -> np.ndarray:
    """Train RecBole's LightGCN on the training split; return its item embeddings."""
    external = plain(config.external_config_dict)
    for key in ("model", "dataset"):
        external.pop(key, None)
    # The L-DiffRec run's command line (e.g. --epochs) must not leak into LightGCN's settings.
    lgcn_config = config_from_settings(
        "LightGCN",
        config["dataset"],
        {**external, **settings, "show_progress": False},
    )
    init_seed(lgcn_config["seed"], lgcn_config["reproducibility"])
    sampler = Sampler(["train"], [train_dataset], "uniform").set_phase("train")
    train_data = TrainDataLoader(lgcn_config, train_dataset, sampler, shuffle=True)
    model = LightGCN(lgcn_config, train_dataset).to(lgcn_config["device"])
    trainer = get_trainer(LightGCN)(lgcn_config, model)
    trainer.fit(train_data, None, saved=False, show_progress=False)
    logger.info(f"item embeddings: LightGCN trained for {lgcn_config['epochs']} epochs")
    model.eval()
    with torch.no_grad():
        _, item_embeddings = model.forward()
    return item_embeddings[1:].cpu().numpy().astype(np.float32)


def _cache_key(config, train_dataset, source: str, settings: Dict[str, Any]) -> str:
    uid = train_dataset.inter_feat[train_dataset.uid_field].numpy()
    iid = train_dataset.inter_feat[train_dataset.iid_field].numpy()
    digest = hashlib.sha1()
    digest.update(np.ascontiguousarray(uid).tobytes())
    digest.update(np.ascontiguousarray(iid).tobytes())
    digest.update(json.dumps({"source": source, **settings}, sort_keys=True).encode())
    return f"{config['dataset']}-{source}-{digest.hexdigest()[:16]}"


def item_embeddings(config, train_dataset) -> np.ndarray:
    """(n_items - 1, d) embeddings of the real items, in internal-id order (id 1 first)."""
    source = config["item_emb_source"]
    if source not in EMBEDDING_SOURCES:
        raise ValueError(
            f"item_emb_source: got {source!r}; allowed: {', '.join(EMBEDDING_SOURCES)}"
        )
    iid_field = train_dataset.iid_field
    tokens = np.asarray(train_dataset.field2id_token[iid_field][1:])
    if source == "file":
        path = config["item_emb_path"]
        if not path or not os.path.isfile(path):
            raise FileNotFoundError(
                f"item_emb_path: {path!r} is not a file; item_emb_source 'file' needs a .npy "
                "of item embeddings indexed by original item id"
            )
        logger.info(f"item embeddings: from file {path}")
        return align_file_embeddings(np.load(path, allow_pickle=False), tokens)

    settings: Dict[str, Any] = (
        dict(config["item_emb_lightgcn"] or {})
        if source == "lightgcn"
        else {"dim": int(config["item_emb_svd_dim"]), "seed": int(config["seed"])}
    )
    if source == "lightgcn":
        settings.setdefault("seed", int(config["seed"]))
    cache_dir = Path(
        config["item_emb_cache_dir"] or Path(config["checkpoint_dir"]) / "item_emb"
    )
    cache = cache_dir / f"{_cache_key(config, train_dataset, source, settings)}.npy"
    if cache.is_file():
        logger.info(f"item embeddings: {source}, cached {cache}")
        return np.load(cache)
    logger.info(f"item embeddings: computing with {source} ({settings})")
    with preserved_rng():
        if source == "svd":
            matrix = train_dataset.inter_matrix(form="csr")[1:, 1:]
            embeddings = svd_embeddings(matrix, settings["dim"], settings["seed"])
        else:
            embeddings = lightgcn_embeddings(config, train_dataset, settings)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Concurrent runs (Ray Tune trials) may fill the same cache: unique temporary names.
    write_atomically(cache, lambda handle: np.save(handle, embeddings), binary=True)
    logger.info(f"item embeddings: cached to {cache}")
    return embeddings


def cluster_items(
    embeddings: np.ndarray, n_clusters: int, seed: int, n_init: int = 10
) -> np.ndarray:
    """k-means++ cluster label (0..n_clusters-1) of each row; every cluster non-empty."""
    from sklearn.cluster import KMeans

    n_items = len(embeddings)
    if (
        isinstance(n_clusters, bool)
        or not isinstance(n_clusters, int)
        or not (1 <= n_clusters <= n_items)
    ):
        raise ValueError(
            f"n_cate: got {n_clusters!r}; allowed: an integer in [1, {n_items}] (the number of items)"
        )
    if n_clusters == 1:
        return np.zeros(n_items, dtype=np.int64)
    kmeans = KMeans(n_clusters, init="k-means++", n_init=n_init, random_state=seed)
    labels = kmeans.fit_predict(np.asarray(embeddings, dtype=np.float64))
    sizes = np.bincount(labels, minlength=n_clusters)
    if (sizes == 0).any():
        raise ValueError(
            f"n_cate: k-means left {int((sizes == 0).sum())} of {n_clusters} clusters empty "
            "(too few distinct item embeddings); lower n_cate"
        )
    logger.info(f"item clusters: {n_clusters} clusters of sizes {sizes.tolist()}")
    return labels.astype(np.int64)


def prepare_item_clusters(config, train_dataset) -> np.ndarray:
    """Cluster label (0..n_cate-1) of each real item, in internal-id order (id 1 first):
    k-means on item embeddings of the training split (computed, cached or read from a
    file as ``item_emb_source`` says). One cluster needs no embeddings."""
    n_items = train_dataset.item_num - 1
    n_cate = config["n_cate"]
    if n_cate == 1:
        return np.zeros(n_items, dtype=np.int64)
    return cluster_items(
        item_embeddings(config, train_dataset), n_cate, int(config["seed"])
    )
