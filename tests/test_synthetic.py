import numpy as np
import pandas as pd
import pytest

from recbole_diffrec.synthetic import amazon_book_like, generate, write_atomic


def test_sizes_distinct_pairs_and_every_user_present():
    users, items = generate(500, 300, 6000, seed=3)
    assert len(users) == len(items) == 6000
    assert len(set(zip(users.tolist(), items.tolist()))) == 6000
    assert set(users.tolist()) == set(range(500))
    assert 0 <= items.min() and items.max() < 300


def test_seeded_and_seed_sensitive():
    a = generate(200, 100, 2000, seed=1)
    b = generate(200, 100, 2000, seed=1)
    c = generate(200, 100, 2000, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_popularity_and_activity_are_heavy_tailed():
    users, items = generate(3000, 2000, 40000, seed=0)
    item_counts = np.sort(np.bincount(items, minlength=2000))[::-1]
    user_counts = np.sort(np.bincount(users, minlength=3000))[::-1]
    assert item_counts[0] > 10 * np.median(item_counts)
    assert user_counts[0] > 10 * np.median(user_counts)
    # Top 10% of items take a large share, as in real catalogues.
    assert item_counts[:200].sum() > 0.4 * len(items)


def test_amazon_book_density():
    users, interactions = amazon_book_like(94_949)
    assert (users, interactions) == (108_822, 3_146_256)


@pytest.mark.parametrize(
    "args, key",
    [
        ((10, 10, 101), "interactions"),
        ((0, 10, 5), "users"),
        ((10, 10, 5), "interactions"),
    ],
)
def test_impossible_sizes_are_refused(args, key):
    with pytest.raises(ValueError, match=key):
        generate(*args)


def test_atomic_file(tmp_path):
    users, items = generate(50, 40, 400, seed=0)
    path = write_atomic(users, items, tmp_path / "synth")
    frame = pd.read_csv(path, sep="\t")
    assert path.name == "synth.inter"
    assert list(frame.columns) == ["user_id:token", "item_id:token", "timestamp:float"]
    assert len(frame) == 400 and frame["timestamp:float"].is_unique
