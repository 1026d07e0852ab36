"""The compatibility shims: each test shows the failure its shim prevents on the stack
that needs it, and that the shim is inert on the stack that does not."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy
import scipy.sparse as sp

from recbole_diffrec import compat


def release(version: str) -> tuple:
    return tuple(int(part) for part in version.split(".")[:2])


NUMPY2 = release(np.__version__) >= (2, 0)
SCIPY_WITHOUT_DOK_UPDATE = release(scipy.__version__) >= (1, 13)


def recbole_config(model="BPR"):
    from recbole.config import Config

    return Config(model, "ml-100k", config_dict={"state": "WARNING"})


def test_numpy2_aliases_let_recbole_build_a_config(workdir, monkeypatch):
    if not NUMPY2:
        # NumPy 1.x still has the aliases: the shim adds nothing.
        assert np.__dict__["float_"] is np.float64
        assert compat.numpy2_aliases() is False
        return
    for alias in compat.NUMPY2_ALIASES:
        monkeypatch.delitem(np.__dict__, alias, raising=False)
    with pytest.raises(AttributeError, match="float_"):
        recbole_config()  # what NumPy 2 does to RecBole 1.2.1 without the shim
    assert compat.numpy2_aliases() is True
    assert compat.numpy2_aliases() is False  # applied once
    config = recbole_config()
    assert config["model"] == "BPR"
    assert np.float_ is np.float64 and np.unicode_ is np.str_


def lightgcn_on_ml100k():
    from recbole.data import create_dataset
    from recbole.model.general_recommender import LightGCN

    config = recbole_config("LightGCN")
    dataset = create_dataset(config)
    return LightGCN(config, dataset), dataset


def test_dok_update_lets_recbole_lightgcn_build_its_graph(workdir, monkeypatch):
    if not SCIPY_WITHOUT_DOK_UPDATE:
        assert compat.scipy_dok_update() is False  # SciPy < 1.13 has the method
    else:
        # The plugin applied the shim on import; take it away to see what it prevents.
        monkeypatch.delattr(sp.dok_matrix, "_update")
        with pytest.raises(AttributeError, match="_update"):
            lightgcn_on_ml100k()
        assert compat.scipy_dok_update() is True
        assert compat.scipy_dok_update() is False  # applied once
    model, dataset = lightgcn_on_ml100k()
    # The graph RecBole built through the shim is D^-1/2 A D^-1/2 of the bipartite
    # user-item graph, computed here without dok_matrix.
    inter = dataset.inter_matrix(form="coo").astype(np.float32)
    n_users, n_items = inter.shape
    adjacency = sp.bmat([[None, inter], [inter.T, None]]).tocsr()
    degree = np.asarray(adjacency.sum(axis=1)).ravel() + 1e-7
    scale = sp.diags(np.power(degree, -0.5))
    expected = (scale @ adjacency @ scale).toarray()
    built = model.norm_adj_matrix.to_dense().numpy()
    assert built.shape == (n_users + n_items, n_users + n_items)
    assert np.abs(built - expected).max() < 1e-6
    assert (built > 0).sum() == 2 * inter.nnz


def test_experiment_state_of_either_ray_lists_trials():
    old = {"checkpoints": [json.dumps({"trial_id": "a_00000", "status": "RUNNING"})]}
    new = {
        "trial_data": [
            [json.dumps({"trial_id": "a_00000", "status": "TERMINATED"}), "{}"],
            [json.dumps({"trial_id": "a_00001", "status": "PENDING"}), "{}"],
        ]
    }
    assert [t["status"] for t in compat.experiment_state_trials(old)] == ["RUNNING"]
    assert [
        (t["trial_id"], t["status"]) for t in compat.experiment_state_trials(new)
    ] == [("a_00000", "TERMINATED"), ("a_00001", "PENDING")]
    assert compat.experiment_state_trials({}) == []


def test_the_newest_experiment_state_is_told_by_its_name(tmp_path):
    # A resumed search leaves two state files; current Ray copies the older one back
    # last, so its modification time is the newer one.
    newer = tmp_path / "experiment_state-2026-12-01_01-05-21.json"
    older = tmp_path / "experiment_state-2026-12-01_01-04-24.json"
    newer.write_text(
        json.dumps(
            {"trial_data": [['{"trial_id": "t", "status": "TERMINATED"}', "{}"]]}
        )
    )
    older.write_text(
        json.dumps({"trial_data": [['{"trial_id": "t", "status": "PENDING"}', "{}"]]})
    )
    os.utime(older, (newer.stat().st_mtime + 10,) * 2)
    state = compat.latest_experiment_state(tmp_path)
    assert [t["status"] for t in compat.experiment_state_trials(state)] == [
        "TERMINATED"
    ]
    assert compat.latest_experiment_state(tmp_path / "missing") == {}


@pytest.mark.slow
def test_tune_helpers_report_every_step_into_the_experiment_folder(tmp_path):
    ray = pytest.importorskip("ray")
    from ray import tune

    # Defined here, so Ray ships them by value (the tests folder is no package).
    def _trainable(config):
        """A Tune trial through the compat helpers: files in its folder, three reports."""
        report = compat.tune_report()
        trial_dir, trial_id = compat.trial_info(config["exp_dir"])
        Path(trial_dir).mkdir(parents=True, exist_ok=True)
        Path(trial_dir, "mine.txt").write_text(trial_id)
        for step in range(3):
            report({"step": step, "score": float(step)})

    def _own_trial_dir(config):
        """What Ray itself calls the trial folder."""
        from ray import tune

        compat.tune_report()({"trial_dir": tune.get_context().get_trial_dir()})

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        exp_dir = tmp_path / "exp"
        tuner = tune.Tuner(
            _trainable,
            param_space={"exp_dir": str(exp_dir)},
            run_config=compat.run_config_class()(
                name="exp", storage_path=str(tmp_path), verbose=0
            ),
        )
        (result,) = tuner.fit()
        assert result.error is None
        assert list(result.metrics_dataframe["step"]) == [0, 1, 2]
        trial_id = result.metrics["trial_id"]
        assert Path(result.path).parent == exp_dir
        assert (Path(result.path) / "mine.txt").read_text() == trial_id
        states = sorted(exp_dir.glob("experiment_state-*.json"))
        trials = compat.experiment_state_trials(json.loads(states[-1].read_text()))
        assert [(t["trial_id"], t["status"]) for t in trials] == [
            (trial_id, "TERMINATED")
        ]
        if compat.modern_ray_tune():
            # Why the helper: current Ray's own trial folder is a staging folder under
            # the Ray session's temporary files, outside the experiment folder.
            (own,) = tune.Tuner(
                _own_trial_dir,
                run_config=compat.run_config_class()(
                    name="own", storage_path=str(tmp_path), verbose=0
                ),
            ).fit()
            assert not Path(own.metrics["trial_dir"]).is_relative_to(tmp_path)
    finally:
        ray.shutdown()
