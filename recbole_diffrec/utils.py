"""Small helpers shared by the runner, the tuner and item-cluster preparation (no RecBole imports)."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
from enum import Enum
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, Optional

import yaml


def lazy_exports(package: str, exports: Dict[str, str], namespace: Dict[str, Any]):
    """``(__getattr__, __dir__)`` for a package whose public names (name -> defining
    module, relative to ``package``) load on first use; a loaded name is kept in
    ``namespace`` (the package's globals), so later lookups skip ``__getattr__``."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name], package)
        namespace[name] = value = getattr(module, name)
        return value

    def __dir__() -> list:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__


def plain(value: Any) -> Any:
    """A value as plain Python (str/int/float/bool/None, lists, dicts), for yaml, json and
    weights-only checkpoints; numpy and torch scalars become numbers, anything else a string.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        # numpy's float64 is a float subclass, which weights-only checkpoint loading refuses.
        return float(value)
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if hasattr(value, "item"):
        try:
            return value.item()
        except (TypeError, ValueError):  # an array of more than one value
            pass
    return str(value)


@contextlib.contextmanager
def plain_argv() -> Iterator[None]:
    """Hide the process's own ``--key=value`` arguments from RecBole's Config, which reads
    sys.argv over explicit settings (a Ray worker's, a driver's or an L-DiffRec run's).
    """
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def settings_file(settings: Dict[str, Any], folder: Optional[str] = None) -> str:
    """Write settings to a temporary yaml file and return its path (the caller removes it).

    RecBole eval()s string values of a ``config_dict``; a yaml file keeps them strings.
    """
    fd, name = tempfile.mkstemp(suffix=".yaml", dir=folder, text=True)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(plain(settings), f, sort_keys=True)
    return name


def write_atomically(
    path: os.PathLike, write: Callable[[IO], None], binary: bool = False
) -> Path:
    """Write ``path`` through ``write(handle)`` into a sibling temporary file, then rename it
    over ``path``: a reader (or a rerun after a crash) sees the old file or the whole new one,
    never a half-written one. The temporary name is unique, so concurrent writers never mix.
    """
    path = Path(path)
    fd, partial = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".partial", dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb" if binary else "w", **_text(binary)) as handle:
            write(handle)
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise
    return path


def write_text_atomically(path: os.PathLike, text: str) -> Path:
    return write_atomically(path, lambda handle: handle.write(text))


def _text(binary: bool) -> Dict[str, Any]:
    return {} if binary else {"encoding": "utf-8", "newline": ""}
