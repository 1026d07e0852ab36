"""Drop-in use from an existing RecBole script, and the guards against silent mix-ups."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from recbole.config import Config as RecBoleConfig
from recbole.data import create_dataset
from recbole.data.interaction import Interaction

from recbole_diffrec import Config, data_preparation
from recbole_diffrec.models.diffrec import DiffRec

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_dropin_example_runs(workdir):
    script = ROOT / "examples" / "dropin_recbole_script.py"
    assert script.name in (ROOT / "README.md").read_text()
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test:" in proc.stdout and "recall@10" in proc.stdout
    assert list(Path("saved").glob("DiffRec-*.pth"))


def test_recbole_config_with_plugin_class_is_refused(workdir):
    # RecBole's Config merges RecBole's own DiffRec.yaml for a class named DiffRec.
    config = RecBoleConfig(
        model=DiffRec, dataset="ml-100k", config_dict={"state": "WARNING"}
    )
    assert config["mlp_act_func"] == "tanh"  # RecBole's defaults leaked in
    dataset = create_dataset(config)
    with pytest.raises(ValueError, match="recbole_diffrec.Config"):
        DiffRec(config, dataset)


@pytest.fixture
def small_model(workdir):
    config = Config(
        model=DiffRec,
        dataset="ml-100k",
        config_dict={"state": "WARNING", "steps": 5, "dims_dnn": [8]},
    )
    train, _, _ = data_preparation(config, create_dataset(config))
    return DiffRec(config, train.dataset), train


def test_interaction_batches_are_refused(small_model):
    model, train = small_model
    users = next(iter(train))
    assert set(users.interaction) == {"user_id"}
    assert 0 not in users["user_id"].tolist()  # the padding user is not trained on
    assert torch.isfinite(model.calculate_loss(users))
    # What RecBole's name-based routing gives an unknown class: interaction batches.
    batch = Interaction(
        {"user_id": torch.tensor([1, 2]), "item_id": torch.tensor([3, 4])}
    )
    with pytest.raises(ValueError, match="recbole_diffrec.data_preparation"):
        model.calculate_loss(batch)


def test_user_rows_are_built_from_sparse_history(small_model):
    model, train = small_model
    # Columns are the real items (ids 1..n); RecBole's id 0 is padding.
    dense = train.dataset.inter_matrix(form="csr").toarray()[:, 1:]
    users = torch.tensor([1, 5, 17, 5])
    rows = model.history(users)
    assert torch.equal(
        rows, torch.from_numpy((dense[users.numpy()] > 0).astype("float32"))
    )


@pytest.mark.parametrize("shuffle", [True, False])
def test_user_batches_follow_the_shuffle_setting(workdir, shuffle):
    config = Config(
        model=DiffRec,
        dataset="ml-100k",
        config_dict={"state": "WARNING", "shuffle": shuffle, "train_batch_size": 100},
    )
    train, _, _ = data_preparation(config, create_dataset(config))
    epochs = [torch.cat([b["user_id"] for b in train]) for _ in range(2)]
    users = torch.sort(epochs[0]).values
    assert torch.equal(torch.sort(epochs[1]).values, users)  # every user once an epoch
    assert users.unique().numel() == users.numel() == train.sample_size
    in_order = [torch.equal(e, users) for e in epochs]
    assert in_order == [not shuffle] * 2
    if shuffle:
        assert not torch.equal(epochs[0], epochs[1])  # reshuffled every epoch
