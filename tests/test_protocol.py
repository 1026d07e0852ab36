"""The paper's protocol through RecBole equals a direct computation on a small fixture."""

import math

import numpy as np
import pytest
import torch

from conftest import PAPER_PROTOCOL_YAML, release_settings
from recbole_diffrec import load_model, run


def reference_metrics(ranked, truth, k):
    """The official DiffRec computeTopNAccuracy, for one cut-off k."""
    recall = ndcg = 0.0
    for items, target in zip(ranked, truth):
        hits = [1.0 if i in target else 0.0 for i in items[:k]]
        dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hits))
        idcg = sum(1 / math.log2(j + 2) for j in range(min(len(target), k)))
        recall += sum(hits) / len(target)
        ndcg += dcg / idcg
    return recall / len(truth), ndcg / len(truth)


def test_paper_protocol_metrics_equal_direct_computation(workdir, release):
    folder, splits = release
    result = run(
        "DiffRec",
        "toy",
        config_file_list=[PAPER_PROTOCOL_YAML],
        config_dict=release_settings(
            folder,
            workdir,
            epochs=10,
            steps=5,
            dims_dnn=[32],
            train_batch_size=8,
            show_progress=False,
        ),
        saved=True,
    )
    config, model, dataset, *_ = load_model(result["model_file"])
    assert config["topk"] == [10, 20] and config["valid_metric"] == "Recall@20"

    def tokens_to_ids(field, values):
        return dataset.token2id(field, [str(v) for v in values])

    by_user = {s: {} for s in splits}
    for split, pairs in splits.items():
        for u, i in pairs:
            by_user[split].setdefault(u, set()).add(i)
    users = sorted(by_user["test"])
    with torch.no_grad():
        scores = model.score_users(
            torch.from_numpy(tokens_to_ids("user_id", users))
        ).numpy()
    scores[:, 0] = -np.inf  # padding item
    for row, u in enumerate(users):
        seen = by_user["train"].get(u, set()) | by_user["valid"].get(u, set())
        scores[row, tokens_to_ids("item_id", sorted(seen))] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :20]
    id2token = dataset.field2id_token["item_id"]
    ranked = [[int(id2token[i]) for i in row] for row in order]
    truth = [by_user["test"][u] for u in users]

    for k in (10, 20):
        recall, ndcg = reference_metrics(ranked, truth, k)
        assert result["test_result"][f"recall@{k}"] == pytest.approx(recall, abs=1e-4)
        assert result["test_result"][f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-4)
    assert 0 < result["test_result"]["recall@20"] <= 1
