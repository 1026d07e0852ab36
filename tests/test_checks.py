"""The declared setting rules: each kind accepts what it says and names what it refuses."""

import pytest

from recbole_diffrec.models.checks import (
    DIFFREC_RULES,
    LDIFFREC_RULES,
    SEQDIFFREC_RULES,
    Choice,
    Fraction,
    Int,
    IntList,
    Number,
    Relation,
    check_settings,
)


class Settings(dict):
    """A missing key reads None, as with RecBole's Config."""

    def __missing__(self, key):
        return None


def problem(rule, **config):
    return rule.problem(Settings(config))


def test_int_bounds_may_name_other_keys():
    rule = Int("sampling_steps", 0, "steps")
    assert problem(rule, sampling_steps=0, steps=5) is None
    assert problem(rule, sampling_steps=5, steps=5) is None
    assert problem(rule, sampling_steps=6, steps=5) == (
        "sampling_steps: got 6; allowed: an integer in [0, steps=5]"
    )
    assert problem(rule, sampling_steps=True, steps=5) is not None  # bool is no int
    assert problem(rule, sampling_steps=2.0, steps=5) is not None


def test_optional_int_allows_null_and_says_what_null_means():
    rule = Int("inference_steps", 1, "steps", optional=True, null_means="all steps")
    assert problem(rule, inference_steps=None, steps=5) is None
    assert problem(rule, inference_steps=0, steps=5) == (
        "inference_steps: got 0; allowed: null (all steps) or an integer in [1, steps=5]"
    )


def test_number_open_and_closed_ends():
    rule = Number("noise_min", 0.0, 1.0, open_low=True, open_high=True)
    assert problem(rule, noise_min=0.5) is None
    for bad in (0.0, 1.0, -1, "0.1", None, True):
        assert problem(rule, noise_min=bad) == (
            f"noise_min: got {bad!r}; allowed: a number in (0, 1)"
        )
    assert problem(Fraction("dropout"), dropout=0.0) is None
    assert "in [0, 1)" in problem(Fraction("dropout"), dropout=1.0)
    assert problem(Number("lamda", 0.0), lamda=-0.1) == (
        "lamda: got -0.1; allowed: a number >= 0"
    )


def test_choice_and_int_list():
    assert problem(Choice("mean_type", ("x0", "eps")), mean_type="eps") is None
    assert problem(Choice("mean_type", ("x0", "eps")), mean_type="v") == (
        "mean_type: got 'v'; allowed: x0, eps"
    )
    assert problem(IntList("dims_dnn"), dims_dnn=[200, 600]) is None
    for bad in ([], [0], [1.5], "wide", [True]):
        assert problem(IntList("dims_dnn"), dims_dnn=bad) is not None
    assert problem(IntList("out_dims", allow_empty=True), out_dims=[]) is None


def test_relation_names_every_key_and_skips_nulls():
    rule = Relation(("w_min", "w_max"), lambda a, b: a <= b, "w_min <= w_max")
    assert problem(rule, w_min=0.1, w_max=0.1) is None
    assert problem(rule, w_min=0.5, w_max=0.1) == (
        "w_min: got 0.5 with w_max=0.1; allowed: w_min <= w_max"
    )
    assert problem(rule, w_min=None, w_max=0.1) is None


DIFFREC = {
    "mean_type": "x0",
    "noise_schedule": "linear-var",
    "timestep_sampler": "importance",
    "steps": 10,
    "noise_min": 0.001,
    "noise_max": 0.01,
    "noise_scale": 0.1,
    "history_num_per_term": 10,
    "sampling_steps": 0,
    "inference_steps": None,
    "dims_dnn": [64],
    "embedding_size": 10,
    "dropout": 0.5,
}


def test_model_rules_accept_the_defaults_and_report_the_first_problem():
    check_settings(Settings(DIFFREC), DIFFREC_RULES)
    bad = {**DIFFREC, "steps": 10, "inference_steps": 3, "sampling_steps": 5}
    with pytest.raises(ValueError) as err:
        check_settings(Settings(bad), DIFFREC_RULES)
    assert str(err.value) == (
        "sampling_steps: got 5 with inference_steps=3; allowed: an integer in "
        "[0, inference_steps]"
    )


def test_latent_rules_tie_in_dims_to_the_cluster_count():
    latent = {
        **DIFFREC,
        "n_cate": 3,
        "in_dims": [2],
        "out_dims": [],
        "item_emb_source": "svd",
        **{k: 0.1 for k in ("lamda", "anneal_cap", "vae_anneal_cap")},
        **{k: 0.001 for k in ("lr1", "lr2", "wd1", "wd2")},
        "anneal_steps": 0,
        "vae_anneal_steps": 0,
        "ae_dropout": 0.1,
    }
    with pytest.raises(ValueError, match=r"^in_dims: got \[2\] with n_cate=3"):
        check_settings(Settings(latent), LDIFFREC_RULES)
    check_settings(Settings({**latent, "in_dims": [3]}), LDIFFREC_RULES)
    # One cluster needs no embeddings, so any source passes; several need a known one.
    check_settings(
        Settings({**latent, "n_cate": 1, "item_emb_source": "x"}), LDIFFREC_RULES
    )
    with pytest.raises(ValueError, match="item_emb_source: got 'x'"):
        check_settings(
            Settings({**latent, "in_dims": [3], "item_emb_source": "x"}),
            LDIFFREC_RULES,
        )


def test_sequential_rules_refuse_a_diffusion_without_noise():
    seq = {
        **DIFFREC,
        "MAX_ITEM_LIST_LENGTH": 50,
        "hidden_size": 128,
        "n_layers": 2,
        "n_heads": 2,
        "train_neg_sample_args": None,
        "lr_decay_step": None,
        "lr_decay_gamma": 0.1,
        "inference_draws": 4,
        "inference_step": None,
        "step_embedding_at": "all",
        "mse_weight": 1.0,
    }
    check_settings(Settings(seq), SEQDIFFREC_RULES)
    with pytest.raises(ValueError, match=r"^noise_scale: got 0; .*\(0, 1\]"):
        check_settings(Settings({**seq, "noise_scale": 0}), SEQDIFFREC_RULES)
    with pytest.raises(ValueError, match="^n_heads: got 3 with hidden_size=128"):
        check_settings(Settings({**seq, "n_heads": 3}), SEQDIFFREC_RULES)


def test_plugin_models_refuse_saved_dataloaders():
    for key, value in (("save_dataloaders", True), ("dataloaders_save_path", "x.pth")):
        with pytest.raises(ValueError, match=f"^{key}: got .*save_dataset"):
            check_settings(Settings({**DIFFREC, key: value}), DIFFREC_RULES)
