"""DiffRec release -> RecBole atomic files, and back through RecBole's loader."""

import numpy as np
import pandas as pd

from conftest import PAPER_PROTOCOL_YAML, make_release, release_settings
from recbole_diffrec import Config
from recbole_diffrec.convert import convert_release, main


def read_inter(path):
    return pd.read_csv(path, sep="\t")


def test_round_trip_keeps_pairs_and_each_users_order(tmp_path):
    splits = make_release(tmp_path / "release")
    paths = convert_release(tmp_path / "release", tmp_path / "toy")
    assert {p.name for p in paths.values()} == {
        "toy.train.inter",
        "toy.valid.inter",
        "toy.test.inter",
    }
    frames = {s: read_inter(p) for s, p in paths.items()}
    assert list(frames["train"].columns) == [
        "user_id:token",
        "item_id:token",
        "timestamp:float",
    ]
    for split, pairs in splits.items():
        got = frames[split][["user_id:token", "item_id:token"]].to_numpy()
        np.testing.assert_array_equal(got, np.array(pairs))
    # Within each user, timestamps follow the release order: train < valid < test.
    everything = pd.concat(
        [frames[s].assign(split=s) for s in ("train", "valid", "test")]
    )
    for _, rows in everything.groupby("user_id:token"):
        assert rows["timestamp:float"].is_monotonic_increasing
        assert list(dict.fromkeys(rows["split"])) == ["train", "valid", "test"]


def test_cli(tmp_path, capsys):
    make_release(tmp_path / "release")
    main(
        [
            "--input",
            str(tmp_path / "release"),
            "--output",
            str(tmp_path / "out"),
            "--name",
            "x",
        ]
    )
    assert (tmp_path / "out" / "x.test.inter").is_file()
    assert "x.train.inter" in capsys.readouterr().out


def test_recbole_loads_the_converted_split_as_is(workdir, release):
    folder, splits = release
    config = Config(
        "DiffRec",
        "toy",
        config_file_list=[PAPER_PROTOCOL_YAML],
        config_dict=release_settings(folder, workdir),
    )
    from recbole.data import create_dataset

    from recbole_diffrec.convert import ensure_release_converted

    ensure_release_converted(config)
    dataset = create_dataset(config)
    train, valid, test = dataset.build()
    assert (len(train), len(valid), len(test)) == tuple(
        len(splits[s]) for s in ("train", "valid", "test")
    )
