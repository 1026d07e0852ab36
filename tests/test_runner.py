"""The runner end to end on RecBole's bundled ml-100k, with saved=True."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FAST
from recbole_diffrec import Config, get_model, get_trainer, load_model, run
from recbole_diffrec.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
RANDOM_RECALL10 = 10 / 1682  # ml-100k has 1,682 items


def assert_sane(result):
    test = result["test_result"]
    # Far better than random ranking, and not suspiciously perfect.
    assert 10 * RANDOM_RECALL10 < test["recall@10"] < 0.6
    assert 0.03 < test["ndcg@10"] < 0.7
    assert 0 < result["best_valid_result"]["recall@10"] < 0.6


def test_diffrec_end_to_end_saves_reloads_and_reproduces(workdir):
    result = run("DiffRec", "ml-100k", config_dict=dict(FAST), saved=True)
    assert result["model_class"] == "recbole_diffrec.models.diffrec.DiffRec"
    assert_sane(result)
    model_file = Path(result["model_file"])
    assert model_file.is_file()

    # The checkpoint holds no pickled objects: it loads with weights_only=True.
    checkpoint = torch.load(model_file, weights_only=True)
    assert checkpoint["registry_name"] == "DiffRec"
    assert "diffusion.sampler.loss_history" in checkpoint["state_dict"]

    config, model, dataset, train, valid, test = load_model(str(model_file))
    assert config["dims_dnn"] == [64] and config["steps"] == 5
    trainer = get_trainer(type(model))(config, model)
    again = trainer.evaluate(test, load_best_model=False)
    for key, value in result["test_result"].items():
        assert again[key] == pytest.approx(value, abs=1e-4)


def test_plugin_config_uses_plugin_defaults_not_recboles(workdir):
    plugin = Config("DiffRec", "ml-100k")
    assert plugin.model_class is get_model("DiffRec")
    assert plugin["dims_dnn"] == [200, 600] and plugin["learner"] == "adamw"
    assert plugin["mlp_act_func"] is None  # a RecBole-only DiffRec key
    builtin = Config("recbole.DiffRec", "ml-100k")
    assert builtin.model_class.__module__.startswith("recbole.model")
    assert builtin["dims_dnn"] == [300] and builtin["recbole_diffrec"] is None


@pytest.mark.parametrize("model", ["BPR", "EASE", "recbole.DiffRec"])
def test_recbole_models_run_through_the_runner_with_saved_checkpoints(workdir, model):
    cfg = {k: FAST[k] for k in ("epochs", "eval_step", "show_progress", "state")}
    if model == "recbole.DiffRec":
        cfg.update(steps=5, dims_dnn=[64])
    result = run(model, "ml-100k", config_dict=cfg, saved=True)
    assert result["model_class"].startswith("recbole.model.")
    test = result["test_result"]
    # Two epochs on ml-100k: BPR and RecBole's DiffRec measure 1.6-2.5x random here.
    assert test["recall@10"] > RANDOM_RECALL10
    if model == "EASE":  # a strong closed-form baseline on ml-100k
        assert test["recall@10"] > 0.1
    checkpoint = torch.load(result["model_file"], weights_only=True)
    registry = {"BPR": "recbole.BPR", "EASE": "recbole.EASE"}.get(model, model)
    assert checkpoint["registry_name"] == registry
    # The checkpoint (numpy/scipy state too, for EASE) reloads to the same test metrics.
    config, loaded, _, _, _, test_data = load_model(result["model_file"])
    again = get_trainer(type(loaded))(config, loaded).evaluate(
        test_data, load_best_model=False
    )
    assert again == pytest.approx(test, abs=1e-4)


def test_traditional_model_with_sparse_evaluation_still_saves(workdir):
    """RecBole's TraditionalTrainer trains one epoch; with eval_step 5 (the paper protocol's)
    it would never evaluate or save, and the best-checkpoint test evaluation would crash.
    """
    result = run(
        "EASE",
        "ml-100k",
        config_dict={"epochs": 1000, "eval_step": 5, "state": "WARNING"},
        saved=True,
    )
    assert result["test_result"]["recall@10"] > 0.1
    assert result["best_valid_result"]


def test_full_ranking_batches_hold_400_users_by_default(workdir, caplog):
    from recbole.data import create_dataset

    from recbole_diffrec import data_preparation

    config = Config("DiffRec", "ml-100k", config_dict={"state": "WARNING"})
    dataset = create_dataset(config)
    with caplog.at_level(logging.INFO):
        _, valid, _ = data_preparation(config, dataset)
    assert config["eval_batch_size"] == 400 * dataset.item_num
    assert valid.step == 400
    assert "400 users per batch" in caplog.text

    explicit = Config("DiffRec", "ml-100k", config_dict={"eval_batch_size": 10 * 1683})
    data_preparation(explicit, create_dataset(explicit))
    assert explicit["eval_batch_size"] == 10 * 1683


def test_unknown_model_lists_available_models():
    with pytest.raises(ValueError) as err:
        get_model("NoSuchModel")
    message = str(err.value)
    assert "NoSuchModel" in message and "lightgbm" not in message
    for name in ("DiffRec", "recbole.DiffRec", "BPR", "LightGCN", "MultiVAE", "EASE"):
        assert name in message


def test_cli_unknown_model_exits_with_one_clear_error(workdir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["run_recbole_diffrec.py", "--model=Nope"])
    assert cli_main(["--model=Nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "LightGCN" in err


@pytest.mark.slow
def test_cli_script_runs_end_to_end(workdir):
    args = [f"--{k}={v}" for k, v in FAST.items()] + ["--epochs=1"]
    args = [a for a in args if not a.startswith("--epochs=2")]
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_recbole_diffrec.py"),
            "--model=DiffRec",
            "--dataset=ml-100k",
            "--dims_dnn=[64]",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "test result (DiffRec on ml-100k)" in proc.stdout
    assert "recall@10" in proc.stdout
