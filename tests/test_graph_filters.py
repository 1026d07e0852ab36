"""GF-CF and BSPM: hand-computed filters on a 4x3 matrix, the ODE solvers against their
closed forms, the settings checks, and one RecBole run on ml-100k."""

from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml
from scipy.linalg import expm

from recbole_diffrec import get_model, get_trainer, load_model, run
from recbole_diffrec.models import graph_filters
from recbole_diffrec.models.graph_filters import BSPM, GFCF

PROPERTIES = Path(__file__).resolve().parents[1] / "recbole_diffrec" / "properties"

# 4 users x 3 items, binary. Degrees: users (2, 2, 1, 1), items (3, 2, 1): all item
# degrees differ, so the two sides of the low-pass filter cannot be swapped unnoticed.
R = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.float64)


class TinyDataset:
    """What the models read from a RecBole dataset: sizes and the padded CSR matrix
    (RecBole's id 0 is padding for users and items)."""

    def __init__(self, matrix: np.ndarray):
        padded = np.zeros((matrix.shape[0] + 1, matrix.shape[1] + 1))
        padded[1:, 1:] = matrix
        self.matrix = sp.csr_matrix(padded)

    def num(self, field: str) -> int:
        return self.matrix.shape[0 if field == "user_id" else 1]

    def inter_matrix(self, form: str = "csr") -> sp.csr_matrix:
        return self.matrix.asformat(form)


def settings(model: str, **overrides: Any) -> Dict[str, Any]:
    with open(PROPERTIES / "model" / f"{model}.yaml", encoding="utf-8") as f:
        config = yaml.safe_load(f)
    config.update(
        USER_ID_FIELD="user_id",
        ITEM_ID_FIELD="item_id",
        NEG_PREFIX="neg_",
        device=torch.device("cpu"),
        seed=2020,
        recbole_diffrec="test",
        save_dataloaders=False,
        dataloaders_save_path=None,
    )
    config.update(overrides)
    return config


def scores_of(model_class, config: Dict[str, Any], matrix: np.ndarray = R):
    model = model_class(config, TinyDataset(matrix))
    users = torch.arange(1, matrix.shape[0] + 1)
    with torch.no_grad():
        scores = model.score_users(users)
    assert torch.isinf(scores[:, 0]).all() and (scores[:, 0] < 0).all()  # padding
    return scores[:, 1:].double().numpy()


def normalized() -> np.ndarray:
    return R / np.sqrt(R.sum(1, keepdims=True)) / np.sqrt(R.sum(0, keepdims=True))


def lowpass(k: int) -> np.ndarray:
    """D_I^{-1/2} V_k V_k^T D_I^{1/2} from numpy's dense SVD."""
    _, _, vt = np.linalg.svd(normalized())
    v = vt[:k].T
    d = R.sum(0)
    return np.diag(d**-0.5) @ v @ v.T @ np.diag(d**0.5)


@pytest.fixture(params=["dense", "sparse"])
def filter_format(request, monkeypatch) -> str:
    """Runs a test with the item filter in both formats: the 3-item filter is 78% full
    (dense by default); a threshold above 1 makes every filter sparse."""
    threshold = 2.0 if request.param == "sparse" else 0.0
    monkeypatch.setattr(graph_filters, "SPARSE_FILTER_BELOW_DENSITY", threshold)
    return request.param


def test_normalized_item_filter_by_hand(filter_format):
    p = normalized().T @ normalized()
    # Item 0: users 0, 1 (degree 2) and 3 (degree 1), item degree 3.
    assert p[0, 0] == pytest.approx(1 / 6 + 1 / 6 + 1 / 3)
    # Items 0 and 1 share user 0 (degree 2): 1 / sqrt(2*3) / sqrt(2*2).
    assert p[0, 1] == pytest.approx(1 / np.sqrt(2 * 3) / np.sqrt(2 * 2))
    # Items 0 and 2 share user 1 (degree 2); items 1 and 2 share no user.
    assert p[0, 2] == pytest.approx(1 / np.sqrt(2 * 3) / np.sqrt(2 * 1))
    assert p[1, 2] == 0
    model = GFCF(settings("GFCF", alpha=0.0), TinyDataset(R))
    stored = model.linear_filter
    assert (stored.layout == torch.sparse_csr) == (filter_format == "sparse")
    dense = stored.to_dense() if filter_format == "sparse" else stored
    assert np.allclose(dense.numpy(), p, atol=1e-6)


def test_filter_format_follows_density_and_scores_agree(monkeypatch):
    # 20 users, each with its own pair of items: R~^T R~ has 2 non-zeros per row of 40
    # (5% full, sparse by default); the 3-item R's filter is 78% full (dense).
    pairs = np.kron(np.eye(20), np.ones((1, 2)))
    model = GFCF(settings("GFCF", factor_dim=4), TinyDataset(pairs))
    assert model.linear_filter.layout == torch.sparse_csr
    assert model.linear_filter.values().numel() == 80
    assert GFCF(settings("GFCF"), TinyDataset(R)).linear_filter.layout == torch.strided
    users = np.arange(20)
    own = np.zeros((20, 40), dtype=bool)
    own[users, 2 * users] = own[users, 2 * users + 1] = True
    for model_class in (GFCF, BSPM):  # BSPM's ODEs multiply dense states by the filter
        config = settings(model_class.__name__, factor_dim=4)
        monkeypatch.setattr(graph_filters, "SPARSE_FILTER_BELOW_DENSITY", 0.1)
        sparse = scores_of(model_class, config, pairs)
        monkeypatch.setattr(graph_filters, "SPARSE_FILTER_BELOW_DENSITY", 0.0)
        dense = scores_of(model_class, config, pairs)
        assert np.allclose(sparse, dense, atol=1e-6)
        # A user's own two items score alike and above every other item.
        mine = sparse[own].reshape(20, 2)
        assert np.allclose(mine[:, 0], mine[:, 1], atol=1e-6)
        assert (mine.min(axis=1) > sparse[~own].reshape(20, 38).max(axis=1)).all()


@pytest.mark.parametrize("k", [1, 2, 3])  # 1, 2: ARPACK on the sparse R~; 3: dense SVD
def test_gfcf_scores_match_the_hand_computed_filters(k, filter_format):
    alpha = 0.3
    got = scores_of(GFCF, settings("GFCF", factor_dim=k, alpha=alpha))
    p = normalized().T @ normalized()
    expected = R @ p + alpha * R @ lowpass(k)
    assert np.allclose(got, expected, atol=1e-5)
    # The low-pass side matters: D_I^{1/2} V V^T D_I^{-1/2} (the other order) differs.
    d = R.sum(0)
    swapped = np.diag(d) @ lowpass(k) @ np.diag(1 / d)
    if k < 3:  # k = 3 keeps every singular vector: V V^T = I either way
        assert not np.allclose(got, R @ p + alpha * R @ swapped, atol=1e-3)


def test_gfcf_alpha_zero_is_the_linear_filter_and_skips_the_svd(filter_format):
    model = GFCF(settings("GFCF", alpha=0.0), TinyDataset(R))
    assert model.lowpass_left is None
    got = scores_of(GFCF, settings("GFCF", alpha=0.0))
    assert np.allclose(got, R @ normalized().T @ normalized(), atol=1e-6)


def test_item_without_training_interactions_scores_finite(filter_format):
    matrix = np.hstack([R, np.zeros((4, 1))])  # item 3 has no training interaction
    got = scores_of(GFCF, settings("GFCF", factor_dim=2), matrix)
    assert np.isfinite(got).all() and np.allclose(got[:, 3], 0)


def euler(**overrides: Any) -> Dict[str, Any]:
    base = dict(solver_idl="euler", solver_blr="euler", solver_shr="euler")
    base.update(K_idl=1, K_b=1, K_s=1, factor_dim=2)
    base.update(overrides)
    return settings("BSPM", **base)


def test_bspm_one_euler_step_is_the_closed_form_early_merge(filter_format):
    h_i, h_b, h_s, beta = 0.7, 0.4, 1.3, 0.25
    config = euler(T_idl=h_i, T_b=h_b, T_s=h_s, idl_beta=beta, final_sharpening=True)
    got = scores_of(BSPM, config)
    p, low = normalized().T @ normalized(), lowpass(2)
    idl = R + h_i * (R @ low - R)  # r + h f(r), f(r) = r L - r
    blurred = R + h_b * (R @ p - R)  # f(r) = r P - r
    start = blurred + beta * idl
    expected = start + h_s * (-start @ p)  # f(r) = -r P
    assert np.allclose(got, expected, atol=1e-5)


def test_bspm_late_merge_with_time_point_combination(filter_format):
    h_b, h_s, beta = 1.0, 0.5, 0.3
    config = euler(
        T_b=h_b,
        T_s=h_s,
        T_idl=1.0,
        idl_beta=beta,
        final_sharpening=False,
        t_point_combination=True,
    )
    got = scores_of(BSPM, config)
    p, low = normalized().T @ normalized(), lowpass(2)
    blurred = R + h_b * (R @ p - R)
    sharpened = blurred - h_s * blurred @ p
    expected = (blurred + sharpened) / 2 + beta * (R @ low)  # one Euler step of T=1
    assert np.allclose(got, expected, atol=1e-5)


def test_bspm_sharpening_off_is_blurring_plus_lowpass(filter_format):
    config = euler(T_b=1.0, T_idl=1.0, idl_beta=0.3, sharpening_off=True)
    got = scores_of(BSPM, config)
    p = normalized().T @ normalized()
    assert np.allclose(got, R @ p + 0.3 * R @ lowpass(2), atol=1e-5)


def test_bspm_rk4_matches_the_matrix_exponential(filter_format):
    t_i, t_b, t_s, beta = 1.0, 1.5, 2.0, 0.2
    config = settings(
        "BSPM",
        solver_idl="rk4",
        solver_blr="rk4",
        solver_shr="rk4",
        K_idl=8,
        K_b=8,
        K_s=8,
        T_idl=t_i,
        T_b=t_b,
        T_s=t_s,
        idl_beta=beta,
        factor_dim=2,
        final_sharpening=False,
    )
    got = scores_of(BSPM, config)
    p, low, eye = normalized().T @ normalized(), lowpass(2), np.eye(3)
    # The ODEs are linear and time-invariant: r(T) = r expm(T A).
    expected = R @ expm(t_b * (p - eye)) @ expm(-t_s * p) + beta * R @ expm(
        t_i * (low - eye)
    )
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-4)
    # Euler's single step is far from it: the comparison can tell solvers apart.
    coarse = dict(config, solver_blr="euler", solver_shr="euler", K_b=1, K_s=1)
    assert not np.allclose(scores_of(BSPM, coarse), expected, atol=1e-2)


@pytest.mark.parametrize(
    "model_class, key, value",
    [
        (GFCF, "factor_dim", 0),
        (GFCF, "alpha", -0.1),
        (BSPM, "T_s", 0.0),
        (BSPM, "K_b", 0),
        (BSPM, "solver_shr", "dopri5"),
        (BSPM, "idl_beta", "high"),
        (BSPM, "final_sharpening", "yes"),
    ],
)
def test_bad_settings_raise_one_error_naming_the_key(model_class, key, value):
    config = settings(model_class.__name__, **{key: value})
    with pytest.raises(ValueError, match=rf"^{key}: got {value!r}; allowed: "):
        model_class(config, TinyDataset(R))


def test_training_free_models_get_a_one_pass_trainer():
    from recbole.trainer import TraditionalTrainer

    from recbole_diffrec.trainer import SafeCheckpointMixin

    for name in ("GFCF", "BSPM"):
        trainer = get_trainer(get_model(name))
        assert issubclass(trainer, TraditionalTrainer)
        assert issubclass(trainer, SafeCheckpointMixin)
    assert not issubclass(get_trainer(get_model("DiffRec")), TraditionalTrainer)


QUIET = {"show_progress": False, "state": "WARNING"}
# A smaller low-pass filter than the papers' 256 / 448 keeps ARPACK to a second here.
SMALL = {**QUIET, "factor_dim": 64}


@pytest.mark.slow
def test_gfcf_and_bspm_on_ml100k_beat_popularity_and_reload(workdir):
    floor = run("Pop", "ml-100k", config_dict=dict(QUIET), saved=False)
    pop = floor["test_result"]
    for name in ("GFCF", "BSPM"):
        result = run(name, "ml-100k", config_dict=dict(SMALL), saved=True)
        test = result["test_result"]
        assert 0.15 < test["recall@10"] < 0.6 and 0.15 < test["ndcg@10"] < 0.7
        assert test["recall@10"] > 1.3 * pop["recall@10"]
        assert test["ndcg@10"] > 1.3 * pop["ndcg@10"]
        assert len(result["valid_curve"]) == 1  # one pass, one evaluation
        checkpoint = torch.load(result["model_file"], weights_only=True)
        assert checkpoint["registry_name"] == name
        config, model, _, _, _, test_data = load_model(result["model_file"])
        again = get_trainer(type(model))(config, model).evaluate(
            test_data, load_best_model=False
        )
        assert again == pytest.approx(test, abs=1e-4)
