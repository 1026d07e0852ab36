"""Convert released datasets to RecBole atomic files.

DiffRec release format:

The release (``train_list.npy``, ``valid_list.npy``, ``test_list.npy``) holds (user, item)
pairs with each user's rows in time order. The output ``<name>.train.inter``,
``<name>.valid.inter`` and ``<name>.test.inter`` carry a ``timestamp`` equal to the row's
position in train, then valid, then test, which keeps every user's order and puts
validation after training and test after validation.

    python -m recbole_diffrec.convert --input ../shared/datasets/ml-1m_clean --output dataset/ml-1m_clean

Sequence files (``.jsonl``, one ``{"user": int, "items": [ids in time order]}`` per line, as
DiffuRec's releases) become one ``<name>.inter`` whose ``timestamp`` is the running position,
for RecBole's leave-one-out split (``eval_args: split: {LS: valid_and_test}, order: TO``):

    python -m recbole_diffrec.convert --input ../shared/datasets/sequential/amazon-beauty.jsonl --output dataset/amazon-beauty
"""

from __future__ import annotations

import argparse
import json
import os
from logging import getLogger
from pathlib import Path
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .errors import BadInputError, MissingInputError, debug_enabled
from .utils import write_atomically

SPLITS = ("train", "valid", "test")
HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def load_pairs(path: Path) -> np.ndarray:
    """A release file as an (n, 2) int64 array; one clear error for anything else."""
    if not path.is_file():
        raise MissingInputError(
            f"{path}: missing; the release needs {', '.join(s + '_list.npy' for s in SPLITS)}"
        )
    try:
        pairs = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        # Truncated, pickled or not an .npy file at all: numpy's message names no file.
        raise BadInputError(
            f"{path}: not a readable .npy array ({err}); allowed: an integer (n, 2) array "
            "saved by numpy.save"
        ) from err
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise BadInputError(
            f"{path}: has shape {pairs.shape}; allowed: (n, 2) rows of (user, item)"
        )
    if not np.issubdtype(pairs.dtype, np.integer):
        raise BadInputError(f"{path}: has dtype {pairs.dtype}; allowed: integer ids")
    if len(pairs) and pairs.min() < 0:
        raise BadInputError(f"{path}: holds negative ids; allowed: ids >= 0")
    return pairs.astype(np.int64)


def convert_release(
    input_dir: os.PathLike, output_dir: os.PathLike, name: str | None = None
) -> Dict[str, Path]:
    """Write ``<name>.{train,valid,test}.inter`` under ``output_dir``; return their paths."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    name = name or output_dir.name
    arrays = [load_pairs(input_dir / f"{split}_list.npy") for split in SPLITS]
    output_dir.mkdir(parents=True, exist_ok=True)
    written: Dict[str, Path] = {}
    offset = 0
    for split, pairs in zip(SPLITS, arrays):
        times = np.arange(offset, offset + len(pairs), dtype=np.int64)
        offset += len(pairs)
        written[split] = write_inter(
            output_dir / f"{name}.{split}.inter", np.column_stack([pairs, times])
        )
    return written


def write_inter(path: Path, table: np.ndarray) -> Path:
    """Write (user, item, timestamp) rows as a RecBole ``.inter`` file, atomically (a
    converter killed half-way leaves no file a later run would take as finished)."""

    def write(handle) -> None:
        handle.write(HEADER)
        np.savetxt(handle, table, fmt="%d", delimiter="\t")

    return write_atomically(path, write)


def read_sequences(path: os.PathLike) -> np.ndarray:
    """(user, item) rows of a ``.jsonl`` sequence file in file and time order.

    One clear error, naming the file and line, for a malformed line, a duplicate user, an
    item id < 1 (0 is RecBole's padding) or a sequence shorter than 2 (a sequential sample
    needs one history item and a target).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"sequence_file: {path} does not exist (relative paths are read from "
            f"{os.getcwd()})"
        )
    users, items, seen = [], [], set()
    for number, line in enumerate(_text_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        user, sequence = _parse_sequence(where, line)
        if user in seen:
            raise BadInputError(f"{where}: user {user} appears on more than one line")
        seen.add(user)
        users.append(np.full(len(sequence), user, dtype=np.int64))
        items.append(np.asarray(sequence, dtype=np.int64))
    if not users:
        raise BadInputError(f"{path}: holds no sequences")
    return np.column_stack([np.concatenate(users), np.concatenate(items)])


def _text_lines(path: Path) -> List[str]:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise BadInputError(
            f"{path}:{line}: not UTF-8 text (byte {err.start}); allowed: UTF-8 JSON lines"
        ) from None


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_sequence(where: str, line: str) -> Tuple[int, list]:
    """One line's (user, items), checked."""
    try:
        record = json.loads(line)
        user, sequence = record["user"], record["items"]
    except (ValueError, KeyError, TypeError) as err:
        raise BadInputError(
            f'{where}: expected {{"user": int, "items": [int, ...]}} ({err})'
        ) from None
    if not _is_id(user):
        raise BadInputError(f"{where}: user: got {user!r}; allowed: an integer id")
    if not isinstance(sequence, list) or not all(_is_id(i) for i in sequence):
        raise BadInputError(f"{where}: items must be a list of integer ids")
    if len(sequence) < 2:
        raise BadInputError(
            f"{where}: user {user} has a sequence of length {len(sequence)}; "
            "allowed: length >= 2 (a history item and a target)"
        )
    if min(sequence) < 1:
        raise BadInputError(
            f"{where}: item ids start at 1 (0 is the padding item); got {min(sequence)}"
        )
    return user, sequence


def convert_sequences(
    input_file: os.PathLike, output_dir: os.PathLike, name: str | None = None
) -> Path:
    """Write ``<name>.inter`` (user, item, running position as timestamp); return its path."""
    output_dir = Path(output_dir)
    name = name or output_dir.name
    pairs = read_sequences(input_file)
    output_dir.mkdir(parents=True, exist_ok=True)
    return write_inter(
        output_dir / f"{name}.inter",
        np.column_stack([pairs, np.arange(len(pairs), dtype=np.int64)]),
    )


def ensure_release_converted(config) -> None:
    """If the config names a DiffRec release (``release_path``) or a sequence file
    (``sequence_file``), convert it once into ``data_path``."""
    sequences = config["sequence_file"]
    if sequences:
        data_dir, name = Path(config["data_path"]), config["dataset"]
        if not (data_dir / f"{name}.inter").is_file():
            getLogger().info(f"converting sequences {sequences} into {data_dir}")
            convert_sequences(sequences, data_dir, name)
    release = config["release_path"]
    if not release:
        return
    suffixes: Sequence[str] = config["benchmark_filename"] or ()
    if list(suffixes) != list(SPLITS):
        raise BadInputError(
            f"benchmark_filename: got {suffixes!r}; a release_path dataset needs {list(SPLITS)}"
        )
    data_dir = Path(config["data_path"])
    name = config["dataset"]
    if all((data_dir / f"{name}.{s}.inter").is_file() for s in SPLITS):
        return
    if not Path(release).is_dir():
        raise MissingInputError(
            f"release_path: {release} is not a directory (relative paths are read from "
            f"{os.getcwd()}); it should hold {', '.join(s + '_list.npy' for s in SPLITS)}"
        )
    getLogger().info(f"converting DiffRec release {release} into {data_dir}")
    convert_release(release, data_dir, name)


def main(argv: Sequence[str] | None = None) -> int:
    """The converter's command line: one ``error:`` line and exit status 2 for bad input
    (the traceback with ``--debug`` or the ``RECBOLE_DIFFREC_DEBUG=1`` environment
    variable)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        _convert(args)
    except BadInputError as err:
        if "--debug" in args or debug_enabled():
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _convert(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--input",
        required=True,
        help="folder with {train,valid,test}_list.npy, or a .jsonl sequence file",
    )
    parser.add_argument(
        "--output", required=True, help="folder to write the .inter files to"
    )
    parser.add_argument(
        "--name", default=None, help="dataset name (default: output folder name)"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback behind an error: line"
    )
    args = parser.parse_args(argv)
    if str(args.input).endswith(".jsonl"):
        print(f"all: {convert_sequences(args.input, args.output, args.name)}")
        return
    for split, path in convert_release(args.input, args.output, args.name).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    sys.exit(main())
