"""L-DiffRec, T-DiffRec, LT-DiffRec and the clustering module."""

import logging

import numpy as np
import pytest
import torch

from conftest import FAST
from recbole_diffrec import Config, get_trainer, load_model, run
from recbole_diffrec.clustering import align_file_embeddings, cluster_items
from recbole_diffrec.diffusion import MLPDenoiser
from recbole_diffrec.models.autoencoder import ClusteredVAE, latent_split
from recbole_diffrec.models.ldiffrec import kl_schedule, lambda_schedule
from recbole_diffrec.models.tdiffrec import time_weights

QUICK = {**FAST, "item_emb_source": "svd", "item_emb_svd_dim": 16}


# ----------------------------------------------------------------------------- clustering
def blobs(seed=0, per=30, centers=((0, 0), (10, 0), (0, 10))):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(c, 0.5, size=(per, 2)) for c in centers])


def test_kmeans_is_deterministic_and_finds_the_blobs():
    emb = blobs()
    a, b = cluster_items(emb, 3, seed=7), cluster_items(emb, 3, seed=7)
    assert np.array_equal(a, b)
    for start in (0, 30, 60):  # each blob is one cluster
        assert len(set(a[start : start + 30])) == 1
    assert sorted(np.bincount(a)) == [30, 30, 30]


def test_file_embeddings_are_aligned_to_internal_ids():
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)  # row r = original item r
    tokens = np.array(["2", "0", "3", "1"])  # internal ids 1..4 in RecBole's order
    aligned = align_file_embeddings(matrix, tokens)
    assert np.array_equal(aligned, matrix[[2, 0, 3, 1]])


@pytest.mark.parametrize(
    "matrix, message",
    [(np.zeros((3, 4)), "rows"), (np.zeros(4), "2-d"), (np.zeros((4, 0)), "2-d")],
)
def test_file_embeddings_with_wrong_shape_are_refused(matrix, message):
    with pytest.raises(ValueError, match=message) as err:
        align_file_embeddings(matrix, np.array(["0", "1", "2", "3"]))
    assert "item_emb_path" in str(err.value)


@pytest.mark.parametrize(
    "sizes, dims, expected",
    [
        ([50, 50], [300], [[150], [150]]),
        ([1, 99], [10], [[1], [9]]),  # at least 1 for a tiny cluster
        ([70, 20, 10], [300, 100], [[210, 70], [60, 20], [30, 10]]),
        ([33, 33, 34], [100], [[33], [33], [34]]),  # the last takes the remainder
    ],
)
def test_latent_split_by_hand(sizes, dims, expected):
    assert latent_split(sizes, dims) == expected


def test_latent_split_that_starves_the_last_cluster_is_refused():
    with pytest.raises(ValueError, match="in_dims"):
        latent_split([1, 1, 98], [2])


# ----------------------------------------------------------------------------- schedules
def test_lambda_decays_per_epoch_to_its_cap():
    assert lambda_schedule(0, 0.03, 0.005, 500) == 0.03
    assert lambda_schedule(250, 0.03, 0.005, 500) == pytest.approx(0.015)
    assert lambda_schedule(450, 0.03, 0.005, 500) == 0.005  # 0.003 < cap
    assert lambda_schedule(10, 0.03, 0.005, 0) == 0.03


def test_kl_weight_grows_per_batch_to_its_cap():
    assert kl_schedule(0, 0.3, 200) == 0.0
    assert kl_schedule(50, 0.3, 200) == pytest.approx(0.25)
    assert kl_schedule(100, 0.3, 200) == 0.3
    assert kl_schedule(3, 0.3, 0) == 0.3


# ----------------------------------------------------------------------------- time weights
def test_time_weights_for_one_two_and_five_interactions_unsorted():
    users = np.array([7, 3, 3, 9, 9, 9, 9, 9])
    times = np.array([5.0, 20.0, 10.0, 4.0, 1.0, 3.0, 5.0, 2.0])
    w = time_weights(users, times, 0.1, 1.0)
    assert w[0] == pytest.approx(0.1)  # a single interaction gets w_min
    assert w[[2, 1]] == pytest.approx([0.1, 1.0])  # two: oldest w_min, newest w_max
    # five, by time 1,2,3,4,5 at positions 4,7,5,3,6: linspace(0.1, 1, 5)
    assert w[[4, 7, 5, 3, 6]] == pytest.approx(np.linspace(0.1, 1.0, 5))


# ----------------------------------------------------------------------------- parameters
def count(module):
    return sum(p.numel() for p in module.parameters())


def test_autoencoder_parameter_count_by_hand():
    labels = np.array([0] * 60 + [1] * 40)
    vae = ClusteredVAE(labels, [30], [])
    # encoders 60 -> 2*18, 40 -> 2*12; shared decoder 30 -> 100
    assert vae.latent_dims == [[18], [12]]
    assert count(vae) == (60 * 36 + 36) + (40 * 24 + 24) + (30 * 100 + 100)
    per_cluster = ClusteredVAE(labels, [30], [50])
    assert count(per_cluster.decoders) == (18 * 50 + 50 + 50 * 60 + 60) + (
        12 * 50 + 50 + 50 * 40 + 40
    )


@pytest.mark.parametrize(
    "n_items, dims, ratio", [(2810, [200, 600], 0.6), (100_000, [1000], 0.35)]
)
def test_ldiffrec_is_smaller_than_diffrec(n_items, dims, ratio):
    with torch.device("meta"):  # shapes only, no memory
        diffrec = count(MLPDenoiser.mirrored(n_items, dims, 10))
        labels = np.random.default_rng(0).integers(0, 2, n_items)
        vae = ClusteredVAE(labels, [300], [])
        ldiffrec = count(vae) + count(MLPDenoiser.mirrored(vae.latent_size, [300], 10))
    assert ldiffrec <= ratio * diffrec


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("model", ["LDiffRec", "TDiffRec", "LTDiffRec"])
def test_models_end_to_end_on_ml100k(workdir, model, caplog):
    result = run(model, "ml-100k", config_dict=dict(QUICK), saved=True)
    test = result["test_result"]
    # Two epochs: 0.06-0.11 measured (Pop 0.084, random ranking 0.006).
    assert test["recall@10"] > 5 * 10 / 1682
    checkpoint = torch.load(result["model_file"], weights_only=True)
    assert checkpoint["registry_name"] == model
    # Reloading takes the item clusters from the checkpoint (no embeddings recomputed)
    # and scores the test set as the trained model did.
    clusters = checkpoint["state_dict"].get("item_clusters")
    assert (clusters is not None) == model.startswith(("L", "LT"))
    with caplog.at_level(logging.INFO):
        config, net, _, _, _, test_data = load_model(result["model_file"])
    assert "item embeddings" not in caplog.text
    if clusters is not None:
        assert torch.equal(net.item_clusters.cpu(), clusters)
        assert len(set(clusters.tolist())) == config["n_cate"]
    again = get_trainer(type(net))(config, net).evaluate(
        test_data, load_best_model=False
    )
    assert again == pytest.approx(test, abs=1e-4)


def test_lightgcn_embeddings_are_computed_cached_and_rng_neutral(workdir, caplog):
    from recbole.data import create_dataset

    from recbole_diffrec import data_preparation
    from recbole_diffrec.clustering import item_embeddings

    config = Config(
        "LDiffRec",
        "ml-100k",
        config_dict={"state": "WARNING", "item_emb_lightgcn": {"epochs": 1}},
    )
    train, _, _ = data_preparation(config, create_dataset(config))
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO):
        first = item_embeddings(config, train.dataset)
        after_first = torch.rand(1)
        torch.manual_seed(0)
        second = item_embeddings(config, train.dataset)
        after_second = torch.rand(1)
    assert first.shape == (train.dataset.item_num - 1, 64)
    assert np.array_equal(first, second)
    assert torch.equal(after_first, after_second)  # training did not move the RNG
    assert "computing with lightgcn" in caplog.text and "cached" in caplog.text
    assert (
        len(list((workdir / "saved" / "item_emb").glob("ml-100k-lightgcn-*.npy"))) == 1
    )


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"n_cate": 0}, "n_cate"),
        ({"n_cate": 5000}, "n_cate"),
        ({"w_min": 0.8, "w_max": 0.5}, "w_min"),
        ({"w_min": 0.0}, "w_min"),
        ({"w_max": 1.5}, "w_max"),
        ({"in_dims": [1], "n_cate": 2}, "in_dims"),
        ({"out_dims": [0]}, "out_dims"),
        ({"item_emb_source": "word2vec"}, "item_emb_source"),
    ],
)
def test_bad_settings_get_one_clear_error(workdir, settings, key):
    with pytest.raises(ValueError, match=key):
        run("LTDiffRec", "ml-100k", config_dict={**QUICK, **settings})


def test_embedding_file_that_does_not_match_is_refused(workdir):
    bad = workdir / "emb.npy"
    np.save(bad, np.zeros((10, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="item_emb_path"):
        run(
            "LDiffRec",
            "ml-100k",
            config_dict={**QUICK, "item_emb_source": "file", "item_emb_path": str(bad)},
        )


def test_dataset_without_time_field_is_refused(workdir):
    with pytest.raises(ValueError, match="TIME_FIELD"):
        run(
            "TDiffRec",
            "ml-100k",
            config_dict={
                **QUICK,
                "load_col": {"inter": ["user_id", "item_id", "rating"]},
            },
        )
