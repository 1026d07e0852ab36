"""Checking a search space against the model before Ray starts: every searched key must be
one of the model's settings, and every candidate value must pass the model's own checks in
some combination with the other keys."""

from __future__ import annotations

import difflib
import itertools
import math
import random
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..config import Config, config_from_settings
from ..quick_start import check_model_config
from .space import SearchSpace

# Combinations tried per candidate value; past it, a seeded random sample of that size.
SPACE_CHECK_BUDGET = 4096


def build_config(
    model: str, dataset: str, config_files: Sequence[str], settings: Dict[str, Any]
) -> Config:
    """The search's Config: ``config_files``, then the fixed ``settings``."""
    return config_from_settings(model, dataset, settings, config_files)


def check_space_against_model(spec: SearchSpace, config) -> None:
    """Every searched key must be a setting of the model, and every candidate value (or
    range bound) must pass the model's own checks in at least one combination: all of
    them when there are at most ``SPACE_CHECK_BUDGET``, else a seeded random sample.
    ``config`` is left as it was."""
    known = set(config.final_config_dict)
    for key in spec.space:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{spec.path}: space key {key!r} is not a setting of {config['model']}{hint}"
            )
    keys = list(spec.space)
    grids = [spec.candidates(k) for k in keys]
    saved = {k: config[k] for k in keys}
    try:
        for i, key in enumerate(keys):
            for value in grids[i]:
                tried, error = _first_valid_combination(config, keys, grids, i, value)
                if error is None:
                    continue
                total = math.prod(len(g) for j, g in enumerate(grids) if j != i)
                where = (
                    "every combination"
                    if tried == total
                    else f"all {tried} sampled combinations (of {total})"
                )
                raise ValueError(
                    f"{spec.path}: space key {key!r}: value {value!r} fails the model's "
                    f"checks in {where}: {error}"
                )
    finally:
        for k, v in saved.items():
            config[k] = v


def _combinations(
    keys: List[str], grids: List[list], index: int, value: Any
) -> Iterator[tuple]:
    """Choices of the other keys to pair with ``keys[index] = value``: every one within
    the budget, else a sample seeded by the key and value (the same on every run)."""
    others = [g for j, g in enumerate(grids) if j != index]
    if math.prod(len(g) for g in others) <= SPACE_CHECK_BUDGET:
        return itertools.product(*others)
    rng = random.Random(f"{keys[index]}={value!r}")
    return (tuple(rng.choice(g) for g in others) for _ in range(SPACE_CHECK_BUDGET))


def _first_valid_combination(
    config, keys: List[str], grids: List[list], index: int, value: Any
) -> Tuple[int, Optional[str]]:
    """(combinations tried, None) once ``keys[index] = value`` passes the model's checks
    with some choice of the other keys, else (tried, the first error)."""
    tried, first_error = 0, None
    for rest in _combinations(keys, grids, index, value):
        combo = list(rest)
        combo.insert(index, value)
        for k, v in zip(keys, combo):
            config[k] = v
        tried += 1
        try:
            check_model_config(config)
        except ValueError as err:
            first_error = first_error or str(err)
            continue
        return tried, None
    return tried, first_error or "invalid"
