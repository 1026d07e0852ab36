"""Bad settings get one clear error naming the key, before any data is loaded."""

import numpy as np
import pytest

from recbole_diffrec import run
from recbole_diffrec.convert import convert_release


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"noise_schedule": "sigmoid"}, "noise_schedule"),
        ({"mean_type": "v"}, "mean_type"),
        ({"noise_min": 0.02, "noise_max": 0.01}, "noise_min"),
        ({"noise_min": 0.01, "noise_max": 0.01}, "noise_min"),
        ({"noise_min": -0.1}, "noise_min"),
        ({"noise_max": 1.5}, "noise_max"),
        ({"noise_scale": 2.0}, "noise_scale"),
        ({"steps": 0}, "steps"),
        ({"steps": 10, "sampling_steps": 11}, "sampling_steps"),
        ({"dims_dnn": [200, -1]}, "dims_dnn"),
        ({"dims_dnn": []}, "dims_dnn"),
        ({"dims_dnn": "wide"}, "dims_dnn"),
        ({"dims_dnn": [200.5]}, "dims_dnn"),
        ({"embedding_size": 0}, "embedding_size"),
        ({"timestep_sampler": "lossaware"}, "timestep_sampler"),
        ({"steps": 10, "inference_steps": 11}, "inference_steps"),
        ({"inference_steps": 0}, "inference_steps"),
        # Used to pass the checks, train, and fail at the first evaluation on "steps=3".
        (
            {"steps": 10, "inference_steps": 3, "sampling_steps": 5},
            "sampling_steps: got 5 with inference_steps=3",
        ),
        # Used to pass, then fail on the first batch with an AttributeError.
        (
            {"mean_type": "eps", "noise_scale": 0},
            "mean_type: got 'eps' with noise_scale=0",
        ),
        # Used to be ignored silently for plugin models.
        ({"save_dataloaders": True}, "save_dataloaders"),
        ({"dataloaders_save_path": "loaders.pth"}, "dataloaders_save_path"),
    ],
)
def test_bad_model_settings_fail_before_loading_data(workdir, settings, key):
    # The dataset does not exist: an error about the key proves nothing was loaded first.
    with pytest.raises(ValueError, match=key) as err:
        run("DiffRec", "no-such-dataset", config_dict=settings)
    assert "allowed" in str(err.value)


def test_bad_eval_batch_users(workdir):
    with pytest.raises(ValueError, match="eval_batch_users"):
        run(
            "DiffRec",
            "ml-100k",
            config_dict={"eval_batch_users": 0, "state": "WARNING"},
        )


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((5, 3), dtype=np.int64), "shape"),
        (np.zeros(5, dtype=np.int64), "shape"),
        (np.array([[0, 1], [-1, 2]], dtype=np.int64), "negative"),
        (np.array([[0.0, 1.5]]), "dtype"),
    ],
)
def test_converter_rejects_bad_release_files(tmp_path, array, message):
    good = np.array([[0, 1], [1, 2]], dtype=np.int64)
    for name in ("train", "valid", "test"):
        np.save(tmp_path / f"{name}_list.npy", good)
    np.save(tmp_path / "valid_list.npy", array)
    with pytest.raises(ValueError, match=message) as err:
        convert_release(tmp_path, tmp_path / "out")
    assert "valid_list.npy" in str(err.value)


def test_converter_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_list.npy"):
        convert_release(tmp_path, tmp_path / "out")
