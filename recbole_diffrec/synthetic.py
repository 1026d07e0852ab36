"""Synthetic implicit feedback with power-law item popularity and user activity.

    python -m recbole_diffrec.synthetic --users 20000 --items 10000 --interactions 300000 \\
        --seed 0 --output dataset/synth-10k

Item i (by popularity rank) is drawn with probability proportional to (i + 1)^-item_exponent
and user u with probability proportional to (u + 1)^-user_exponent (Zipf-like, as in real
catalogues); repeated (user, item) pairs are dropped and redrawn until the requested number of
distinct interactions is reached. Every user gets at least ``min_per_user`` interactions.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from .utils import write_atomically

# Amazon-book as used by DiffRec (clean): 108,822 users, 94,949 items, 3,146,256 interactions.
AMAZON_BOOK_USERS_PER_ITEM = 108_822 / 94_949
AMAZON_BOOK_INTERACTIONS_PER_ITEM = 3_146_256 / 94_949


def amazon_book_like(n_items: int) -> Tuple[int, int]:
    """(users, interactions) for ``n_items`` at Amazon-book's density."""
    return (
        round(n_items * AMAZON_BOOK_USERS_PER_ITEM),
        round(n_items * AMAZON_BOOK_INTERACTIONS_PER_ITEM),
    )


def _zipf(n: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


def generate(
    n_users: int,
    n_items: int,
    n_interactions: int,
    seed: int = 0,
    item_exponent: float = 0.8,
    user_exponent: float = 0.8,
    min_per_user: int = 1,
) -> Tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs, users 0..n_users-1 and items 0..n_items-1, shuffled."""
    for key, value in (
        ("users", n_users),
        ("items", n_items),
        ("interactions", n_interactions),
    ):
        if value < 1:
            raise ValueError(f"{key}: got {value}; allowed: >= 1")
    if n_interactions > n_users * n_items:
        raise ValueError(
            f"interactions: got {n_interactions}; allowed: at most users x items = {n_users * n_items}"
        )
    if n_interactions < n_users * min_per_user:
        raise ValueError(
            f"interactions: got {n_interactions}; allowed: at least users x min_per_user = "
            f"{n_users * min_per_user}"
        )
    rng = np.random.default_rng(seed)
    item_p = _zipf(n_items, item_exponent)
    user_p = _zipf(n_users, user_exponent)
    # Random identities for the popularity ranks, so id order carries no signal.
    item_ids = rng.permutation(n_items)
    user_ids = rng.permutation(n_users)

    # Each user's first interactions, then power-law draws until enough distinct pairs.
    users = np.repeat(np.arange(n_users), min_per_user)
    items = rng.choice(n_items, size=len(users), p=item_p)
    keys = np.unique(users.astype(np.int64) * n_items + items)
    for _ in range(100):
        missing = n_interactions - len(keys)
        if missing <= 0:
            break
        draw = int(missing * 1.2) + 16
        new = rng.choice(n_users, size=draw, p=user_p).astype(
            np.int64
        ) * n_items + rng.choice(n_items, size=draw, p=item_p)
        fresh = np.setdiff1d(np.unique(new), keys, assume_unique=True)
        fresh = rng.permutation(fresh)[:missing]
        keys = np.union1d(keys, fresh)
    else:
        raise RuntimeError(
            "could not draw enough distinct interactions; lower the density"
        )
    keys = rng.permutation(keys)
    return user_ids[keys // n_items], item_ids[keys % n_items]


def write_atomic(
    users: np.ndarray,
    items: np.ndarray,
    output: os.PathLike,
    name: Optional[str] = None,
    seed: int = 0,
) -> Path:
    """Write ``<output>/<name>.inter`` (RecBole atomic file) with random timestamps."""
    output = Path(output)
    name = name or output.name
    output.mkdir(parents=True, exist_ok=True)
    times = np.random.default_rng(seed + 1).permutation(len(users))
    path = output / f"{name}.inter"

    def write(f) -> None:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        np.savetxt(f, np.column_stack([users, items, times]), fmt="%d", delimiter="\t")

    write_atomically(path, write)
    return path


def generate_sequences(
    n_users: int,
    n_items: int,
    min_length: int = 5,
    max_length: int = 20,
    follow: float = 0.8,
    seed: int = 0,
) -> list:
    """Item sequences (ids 1..n_items, 0 is RecBole's padding) with a learnable order.

    Each sequence starts at a power-law draw; with probability ``follow`` the next item is
    the current one's fixed successor (a random permutation of the catalogue), otherwise a
    fresh power-law draw. A sequential model can therefore beat popularity by far.
    """
    for key, value, low in (
        ("users", n_users, 1),
        ("items", n_items, 2),
        ("min_length", min_length, 2),
    ):
        if value < low:
            raise ValueError(f"{key}: got {value}; allowed: >= {low}")
    if max_length < min_length:
        raise ValueError(
            f"max_length: got {max_length}; allowed: >= min_length={min_length}"
        )
    if not 0 <= follow <= 1:
        raise ValueError(f"follow: got {follow}; allowed: a number in [0, 1]")
    rng = np.random.default_rng(seed)
    popularity = _zipf(n_items, 0.8)
    successor = rng.permutation(n_items)
    lengths = rng.integers(min_length, max_length + 1, size=n_users)
    total = int(lengths.sum())
    draws = rng.choice(n_items, size=total, p=popularity)
    follows = rng.random(total) < follow
    items = np.empty(total, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    follows[starts] = False
    # The chain is sequential by nature; one pass over positions, vectorised over users.
    for offset in range(int(lengths.max())):
        alive = starts[lengths > offset] + offset
        previous = items[alive - 1] if offset else None
        items[alive] = (
            draws[alive]
            if offset == 0
            else np.where(follows[alive], successor[previous], draws[alive])
        )
    return [list(map(int, chunk + 1)) for chunk in np.split(items, starts[1:])]


def write_sequences(sequences: Sequence[Sequence[int]], path: os.PathLike) -> Path:
    """Write a ``.jsonl`` sequence file (one {"user", "items"} object per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for user, items in enumerate(sequences, 1):
            f.write(json.dumps({"user": user, "items": list(items)}) + "\n")
    return path


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--users", type=int, default=None, help="default: Amazon-book density"
    )
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument(
        "--interactions", type=int, default=None, help="default: Amazon-book density"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", required=True, help="folder; the dataset is named after it"
    )
    args = parser.parse_args(argv)
    users, interactions = amazon_book_like(args.items)
    u, i = generate(
        args.users or users, args.items, args.interactions or interactions, args.seed
    )
    print(write_atomic(u, i, args.output, seed=args.seed))


if __name__ == "__main__":
    main()
