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

A sequence file also becomes a *general* (implicit-feedback) dataset split per user in time
order, ``<name>.{train,valid,test}.inter`` with the release's timestamps (``--split`` on the
command line, ``sequence_split`` next to ``sequence_file`` in a dataset yaml; DiffRec's 7:1:2):

    python -m recbole_diffrec.convert --input ../shared/datasets/sequential/amazon-beauty.jsonl --output dataset/amazon-beauty-general --split 0.7 0.1 0.2

The rule, for a user with ``n`` distinct items and ratios normalised to sum 1 (exact rational
arithmetic, round half up): ``n_test = max(1, round(p_test * n))``, ``n_valid = max(1,
round(p_valid * n))``, the rest is training; when that would leave no training item, test then
valid give items back (``n_test <= n - 2``, ``n_valid <= n - n_test - 1``), so every user has
at least one item in each split (a user needs >= 3 distinct items). The first ``n_train`` items
are training, the next ``n_valid`` validation, the last ``n_test`` test. A repeated (user,
item) pair keeps its first occurrence only (implicit feedback: one interaction per pair).
With 7:1:2, n = 5 -> 3/1/1, 6 -> 4/1/1, 10 -> 7/1/2, 11 -> 8/1/2, 23 -> 16/2/5.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
from fractions import Fraction
from logging import getLogger
from pathlib import Path
import sys
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from .errors import BadInputError, MissingInputError, debug_enabled
from .utils import write_atomically

SPLITS = ("train", "valid", "test")
HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"
# DiffRec's train:valid:test ratio for a per-user chronological split.
DEFAULT_SPLIT = (0.7, 0.1, 0.2)
# Beside the split files: the ratios they were made with (other ratios convert again).
SPLIT_RECORD = "{name}.split.json"


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
    return write_splits(output_dir, name, arrays)


def write_splits(
    output_dir: Path, name: str, arrays: Sequence[np.ndarray]
) -> Dict[str, Path]:
    """Write train, valid and test (user, item) rows as ``<name>.<split>.inter``; the
    timestamp is the row's position in train, then valid, then test."""
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


def split_ratios(value: Any, key: str = "sequence_split") -> Tuple[Fraction, ...]:
    """Three positive numbers (train, valid, test) as exact fractions summing to 1; one
    clear error naming ``key`` otherwise."""
    allowed = (
        "allowed: three positive numbers (train, valid, test), e.g. [0.7, 0.1, 0.2]"
    )
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(
            isinstance(v, numbers.Real)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and v > 0
            for v in value
        )
    ):
        raise BadInputError(f"{key}: got {value!r}; {allowed}")
    # str() first: 0.1 is 1/10 here, not the binary float's 3602879701896397/36028797018963968.
    parts = [Fraction(str(v)) for v in value]
    total = sum(parts)
    return tuple(p / total for p in parts)


def _round_half_up(fraction: Fraction, n: np.ndarray) -> np.ndarray:
    """``floor(fraction * n + 1/2)`` for integer counts ``n``, exactly."""
    a, b = fraction.numerator, fraction.denominator
    # Python integers: a ratio such as 1e-30 has a denominator beyond int64.
    exact = (2 * a * n.astype(object) + b) // (2 * b)
    return np.minimum(exact, n).astype(np.int64)


def split_counts(lengths: Any, ratios: Any = DEFAULT_SPLIT) -> np.ndarray:
    """(users, 3) train/valid/test counts for users with ``lengths`` distinct items (see
    the module's rule); every count >= 1, so every length must be >= 3."""
    _, p_valid, p_test = split_ratios(ratios)
    n = np.asarray(lengths, dtype=np.int64)
    n_test = np.minimum(np.maximum(1, _round_half_up(p_test, n)), n - 2)
    n_valid = np.minimum(np.maximum(1, _round_half_up(p_valid, n)), n - n_test - 1)
    return np.column_stack([n - n_valid - n_test, n_valid, n_test])


def split_sequences(
    pairs: np.ndarray, ratios: Any = DEFAULT_SPLIT, source: str = "sequences"
) -> Tuple[List[np.ndarray], int]:
    """Per-user chronological train/valid/test rows of (user, item) ``pairs`` (each user's
    rows contiguous and in time order, as :func:`read_sequences` gives them), and the
    number of repeated (user, item) pairs dropped (the first occurrence is kept)."""
    ratios = split_ratios(ratios)
    key = pairs[:, 0] * (int(pairs[:, 1].max()) + 1) + pairs[:, 1]
    keep = np.zeros(len(pairs), dtype=bool)
    keep[np.unique(key, return_index=True)[1]] = True
    duplicates = int(len(pairs) - keep.sum())
    pairs = pairs[keep]
    starts = np.flatnonzero(np.r_[True, pairs[1:, 0] != pairs[:-1, 0]])
    lengths = np.diff(np.r_[starts, len(pairs)])
    if lengths.min() < 3:
        user = int(pairs[starts[int(np.argmin(lengths))], 0])
        raise BadInputError(
            f"{source}: user {user} has {int(lengths.min())} distinct items; allowed: "
            ">= 3 for a train/valid/test split (sequence_split)"
        )
    counts = split_counts(lengths, ratios)
    position = np.arange(len(pairs)) - np.repeat(starts, lengths)
    n_train = np.repeat(counts[:, 0], lengths)
    n_seen = np.repeat(counts[:, 0] + counts[:, 1], lengths)
    which = (position >= n_train).astype(int) + (position >= n_seen)
    return [pairs[which == s] for s in range(3)], duplicates


def convert_sequence_split(
    input_file: os.PathLike,
    output_dir: os.PathLike,
    name: str | None = None,
    ratios: Any = DEFAULT_SPLIT,
) -> Tuple[Dict[str, Path], int]:
    """Write ``<name>.{train,valid,test}.inter`` from a sequence file, split per user in
    time order (see the module's rule); their paths and the duplicates dropped."""
    output_dir = Path(output_dir)
    name = name or output_dir.name
    ratios = split_ratios(ratios)
    arrays, duplicates = split_sequences(
        read_sequences(input_file), ratios, str(input_file)
    )
    written = write_splits(output_dir, name, arrays)
    record = json.dumps({"ratios": [str(r) for r in ratios], "rule": 1})
    write_atomically(
        output_dir / SPLIT_RECORD.format(name=name), lambda f: f.write(record + "\n")
    )
    return written, duplicates


def _split_is_current(data_dir: Path, name: str, ratios: Tuple[Fraction, ...]) -> bool:
    record = data_dir / SPLIT_RECORD.format(name=name)
    if not record.is_file() or not all(
        (data_dir / f"{name}.{s}.inter").is_file() for s in SPLITS
    ):
        return False
    try:
        made = json.loads(record.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return made == {"ratios": [str(r) for r in ratios], "rule": 1}


def _setting(config: Any, key: str) -> Any:
    """``config[key]``, None when absent (a RecBole Config already answers None)."""
    try:
        return config[key]
    except KeyError:
        return None


def _check_benchmark(config: Any, key: str) -> None:
    suffixes: Sequence[str] = config["benchmark_filename"] or ()
    if list(suffixes) != list(SPLITS):
        raise BadInputError(
            f"benchmark_filename: got {suffixes!r}; a {key} dataset needs {list(SPLITS)}"
        )


def ensure_release_converted(config) -> None:
    """If the config names a DiffRec release (``release_path``) or a sequence file
    (``sequence_file``), convert it once into ``data_path``: a sequence file becomes one
    ``<name>.inter``, or with ``sequence_split`` the train/valid/test files of a general
    dataset (split per user in time order; converted again when the ratios change)."""
    sequences = config["sequence_file"]
    split = _setting(config, "sequence_split")
    if split is not None:
        ratios = split_ratios(split)
        if not sequences:
            raise BadInputError(
                "sequence_split: needs sequence_file (the .jsonl file to split)"
            )
        if config["release_path"]:
            raise BadInputError(
                "sequence_split: got both sequence_file and release_path; allowed: one "
                "source for the train/valid/test files"
            )
        _check_benchmark(config, "sequence_split")
        data_dir, name = Path(config["data_path"]), config["dataset"]
        if not _split_is_current(data_dir, name, ratios):
            getLogger().info(
                f"splitting sequences {sequences} per user in time order "
                f"({':'.join(map(str, split))}) into {data_dir}"
            )
            _, duplicates = convert_sequence_split(sequences, data_dir, name, ratios)
            getLogger().info(f"{duplicates} repeated (user, item) pairs dropped")
        return
    if sequences:
        data_dir, name = Path(config["data_path"]), config["dataset"]
        if not (data_dir / f"{name}.inter").is_file():
            getLogger().info(f"converting sequences {sequences} into {data_dir}")
            convert_sequences(sequences, data_dir, name)
    release = config["release_path"]
    if not release:
        return
    _check_benchmark(config, "release_path")
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
        "--split",
        nargs=3,
        default=None,
        metavar=("TRAIN", "VALID", "TEST"),
        help="with a .jsonl input: write a general dataset split per user in time order "
        "in this ratio (DiffRec: 0.7 0.1 0.2) instead of one .inter",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback behind an error: line"
    )
    args = parser.parse_args(argv)
    if args.split is not None:
        ratios = split_ratios(_numbers(args.split), "--split")
        if not str(args.input).endswith(".jsonl"):
            raise BadInputError(
                f"--split: needs a .jsonl sequence file as --input; got {args.input}"
            )
        written, duplicates = convert_sequence_split(
            args.input, args.output, args.name, ratios
        )
        for split, path in written.items():
            rows = sum(1 for _ in open(path, encoding="utf-8")) - 1
            print(f"{split}: {path} ({rows} interactions)")
        print(f"duplicates dropped: {duplicates}")
        return
    if str(args.input).endswith(".jsonl"):
        print(f"all: {convert_sequences(args.input, args.output, args.name)}")
        return
    for split, path in convert_release(args.input, args.output, args.name).items():
        print(f"{split}: {path}")


def _numbers(words: Sequence[str]) -> List[Any]:
    """Command-line words as numbers (a word that is not one stays, for the error)."""
    numbers: List[Any] = []
    for word in words:
        try:
            numbers.append(float(word))
        except ValueError:
            numbers.append(word)
    return numbers


if __name__ == "__main__":
    sys.exit(main())
