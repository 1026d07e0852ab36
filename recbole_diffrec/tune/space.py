"""Search-space files: reading, checking and fingerprinting them (no Ray, no RecBole).

A search-space yaml has a ``space`` (setting -> one distribution) and optional ``tune``
options (see :data:`TUNE_OPTIONS`); tune options given on the command line override the
file's.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import yaml


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "quniform")
SCHEDULERS = ("asha", "fifo")
SEARCHES = ("random", "grid")
# Tune options: name -> (default, type check, what is allowed).
TUNE_OPTIONS: Dict[str, Tuple[Any, Any, str]] = {
    "num_samples": (4, lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "scheduler": ("asha", lambda v: v in SCHEDULERS, " or ".join(SCHEDULERS)),
    "grace_period": (
        1,
        lambda v: _is_int(v) and v >= 1,
        "an integer >= 1 (evaluations)",
    ),
    "reduction_factor": (2, lambda v: _is_num(v) and v > 1, "a number > 1"),
    "search": ("random", lambda v: v in SEARCHES, " or ".join(SEARCHES)),
    "cpus_per_trial": (1, lambda v: _is_num(v) and v > 0, "a number > 0"),
    "gpus_per_trial": (0, lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    "max_concurrent_trials": (
        0,
        lambda v: _is_int(v) and v >= 0,
        "an integer >= 0 (0: no limit)",
    ),
    "search_seed": (
        2020,
        _is_int,
        "an integer (seeds the random sampling of the space)",
    ),
    "name": (
        None,
        lambda v: v is None or (isinstance(v, str) and v and "/" not in v),
        "a folder name",
    ),
    "tune_dir": ("saved/tune", lambda v: isinstance(v, str) and bool(v), "a folder"),
    "address": (
        None,
        lambda v: v is None or isinstance(v, str),
        "a Ray address, e.g. ray://head:10001 or auto",
    ),
}
# Settings that hold paths: made absolute before trials start (Ray runs each trial in its
# own working directory).
PATH_SETTINGS = (
    "release_path",
    "sequence_file",
    "item_emb_path",
    "item_emb_cache_dir",
)
# Settings a search must not vary: they belong to the search itself.
RESERVED = ("model", "dataset", "checkpoint_dir", "seed", "gpu_id")


@dataclass
class SearchSpace:
    """A validated search-space file: ``space`` is setting -> (distribution, arguments)."""

    path: str
    space: Dict[str, Tuple[str, List[Any]]]
    options: Dict[str, Any] = field(default_factory=dict)

    def candidates(self, key: str) -> List[Any]:
        """Values a setting can take, or the bounds of a continuous range."""
        dist, args = self.space[key]
        return list(args) if dist in ("choice", "grid") else list(args[:2])

    def fingerprint(self) -> str:
        payload = json.dumps(self.space, sort_keys=True, default=str)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


class YamlLoader(yaml.SafeLoader):
    """Safe yaml that reads ``1e-3`` as a float, as RecBole's loader does."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_cli_value(text: str) -> Any:
    """A ``--key=value`` value as a Python literal where it is one (``1e-3``, ``[300]``,
    ``True``), else the string (``linear-var``). Never evaluates code."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def load_search_space(
    path: str, overrides: Optional[Dict[str, Any]] = None
) -> SearchSpace:
    """Read and check a search-space yaml; one ``ValueError`` naming the file, the key and
    what is allowed. ``overrides`` are tune options from the command line."""
    raw = _read_mapping(path)
    space = _parse_space(path, raw.get("space"))
    options = _parse_options(path, raw.get("tune") or {}, overrides or {})
    if options["search"] == "grid":
        continuous = [k for k, (d, _) in space.items() if d not in ("choice", "grid")]
        if continuous:
            raise ValueError(
                f"{path}: search: grid enumerates every value, so it needs choice/grid "
                f"distributions; {continuous} are continuous (use search: random)"
            )
    return SearchSpace(path=path, space=space, options=options)


def _read_mapping(path: str) -> Dict[str, Any]:
    """The file's top-level mapping, with only the ``space`` and ``tune`` keys."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--tune: search space file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.load(f, Loader=YamlLoader) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid yaml ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping with 'space' and optional 'tune'")
    unknown = set(raw) - {"space", "tune"}
    if unknown:
        raise ValueError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: space, tune"
        )
    return raw


def _parse_space(path: str, space_raw: Any) -> Dict[str, Tuple[str, List[Any]]]:
    if not isinstance(space_raw, dict) or not space_raw:
        raise ValueError(
            f"{path}: 'space' must map at least one setting to a distribution"
        )
    space = {str(k): _check_distribution(path, str(k), v) for k, v in space_raw.items()}
    for key in space:
        if key in RESERVED:
            raise ValueError(
                f"{path}: space key {key!r} cannot be searched (reserved: {', '.join(RESERVED)}); "
                "every trial gets its own seed and checkpoint folder"
            )
    return space


def _parse_options(
    path: str, tune_raw: Any, overrides: Dict[str, Any]
) -> Dict[str, Any]:
    """The defaults, then the file's ``tune`` section, then the command line."""
    options = {name: default for name, (default, _, _) in TUNE_OPTIONS.items()}
    if not isinstance(tune_raw, dict):
        raise ValueError(f"{path}: 'tune' must be a mapping of tune options")
    for source, values in ((path, tune_raw), ("command line", overrides)):
        for name, value in values.items():
            if name not in TUNE_OPTIONS:
                raise ValueError(
                    f"{source}: unknown tune option {name!r}; allowed: {', '.join(TUNE_OPTIONS)}"
                )
            if not TUNE_OPTIONS[name][1](value):
                raise ValueError(
                    f"{source}: tune option {name}: got {value!r}; allowed: {TUNE_OPTIONS[name][2]}"
                )
            options[name] = value
    return options


def _check_distribution(path: str, key: str, value: Any) -> Tuple[str, List[Any]]:
    where = f"{path}: space key {key!r}"
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(
            f"{where}: expected one distribution, e.g. {{choice: [a, b]}}; "
            f"allowed: {', '.join(DISTRIBUTIONS)}"
        )
    ((dist, args),) = value.items()
    if dist not in DISTRIBUTIONS:
        raise ValueError(
            f"{where}: unknown distribution {dist!r}; allowed: {', '.join(DISTRIBUTIONS)}"
        )
    if dist in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise ValueError(f"{where}: {dist} needs a non-empty list of values")
        return dist, args
    arity = 3 if dist == "quniform" else 2
    shape = "[low, high, q]" if dist == "quniform" else "[low, high]"
    if not isinstance(args, list) or len(args) != arity or not all(map(_is_num, args)):
        raise ValueError(f"{where}: {dist} needs {shape} numbers; got {args!r}")
    low, high = args[0], args[1]
    if low > high:
        raise ValueError(
            f"{where}: {dist} low {low} > high {high}; allowed: low <= high"
        )
    if dist == "loguniform" and low <= 0:
        raise ValueError(f"{where}: loguniform needs low > 0; got {low}")
    if dist == "quniform" and args[2] <= 0:
        raise ValueError(f"{where}: quniform needs q > 0; got {args[2]}")
    return dist, list(args)
