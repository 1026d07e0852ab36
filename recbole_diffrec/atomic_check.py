"""Check RecBole atomic files before RecBole reads them.

RecBole reads ``<data_path>/<dataset>.inter`` (``.user``, ``.item``) with pandas and, on a
malformed file, fails far away: a row missing a field ends in ``selected index k out of
range``, a word in a float field in a message about users who interacted with all items.
:func:`check_dataset_files` reads each file the config points at once, vectorised (an
ml-1m-sized file takes well under a second), and raises one :class:`BadInputError` naming the
file, the line and the field: a missing or malformed header, an unknown type, a row with too
few or too many fields, a value that is not a number in a float / float_seq field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from .errors import BadInputError

TYPES = ("token", "float", "token_seq", "float_seq")
SOURCES = ("inter", "user", "item")
# Files already checked in this process, by (path, size, mtime): Config is built often.
_CHECKED: set = set()


def check_dataset_files(config: Any) -> None:
    """Check the atomic files of ``config``'s dataset that exist (a missing one is RecBole's
    business: it may download it, or a converter may write it)."""
    folder, name = Path(config["data_path"]), config["dataset"]
    splits = config["benchmark_filename"] or ()
    splits = [splits] if isinstance(splits, str) else splits
    suffixes = [f"{b}.inter" for b in splits] or ["inter"]
    for suffix in suffixes + ["user", "item"]:
        path = folder / f"{name}.{suffix}"
        if path.is_file():
            source = suffix.rsplit(".", 1)[-1]
            check_atomic_file(
                path,
                separator=config["field_separator"] or "\t",
                seq_separator=config["seq_separator"] or " ",
                encoding=config["encoding"] or "utf-8",
                columns=_loaded_columns(config, source),
            )


def _loaded_columns(config: Any, source: str) -> Optional[set]:
    """RecBole's load_col / unload_col for one source: None = every column."""
    load, unload = config["load_col"], config["unload_col"]
    if isinstance(load, dict):
        return set(load.get(source) or ())
    if isinstance(unload, dict) and unload.get(source):
        return {"!" + c for c in unload[source]}  # marked: everything but these
    return None


def check_atomic_file(
    path: Path,
    separator: str = "\t",
    seq_separator: str = " ",
    encoding: str = "utf-8",
    columns: Optional[set] = None,
) -> None:
    """Raise :class:`BadInputError` naming file, line and field for a malformed file."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, separator, encoding)
    key += (None if columns is None else frozenset(columns),)
    if key in _CHECKED:
        return
    raw = path.read_bytes()
    _check_encoding(path, raw, encoding)
    fields = _parse_header(path, raw, separator, encoding)
    rows = _check_field_counts(path, raw, separator, fields)
    numeric = [
        (i, f, t)
        for i, (f, t) in enumerate(fields)
        if t.startswith("float") and _loaded(f, columns)
    ]
    if numeric and len(rows):
        _check_numbers(path, separator, seq_separator, encoding, numeric, rows)
    _CHECKED.add(key)


def _loaded(field: str, columns: Optional[set]) -> bool:
    if columns is None:
        return True
    if any(c.startswith("!") for c in columns):
        return "!" + field not in columns
    return field in columns


def _check_encoding(path: Path, raw: bytes, encoding: str) -> None:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise BadInputError(
            f"{path}, line {line}: not {encoding} text (byte {err.start}); allowed: text "
            f"in the encoding setting ({encoding})"
        ) from None
    except LookupError:
        raise BadInputError(
            f"encoding: got {encoding!r}; allowed: a Python codec name"
        ) from None


def _parse_header(
    path: Path, raw: bytes, separator: str, encoding: str
) -> List[Tuple[str, str]]:
    """The header's (field, type) pairs, as RecBole splits them."""
    head = raw.split(b"\n", 1)[0].decode(encoding)
    if not head.strip():
        raise BadInputError(
            f"{path}, line 1: no header; allowed: a first line of name:type columns "
            f"separated by {separator!r}, types {', '.join(TYPES)}"
        )
    fields = []
    for column in head.split(separator):
        name, _, ftype = column.partition(":")
        if not _ or not name or ftype.strip() not in TYPES:
            what = "no type" if not _ else f"type {ftype!r}"
            raise BadInputError(
                f"{path}, line 1 (header), column {column!r}: {what}; allowed: "
                f"name:type with type one of {', '.join(TYPES)} (is the header missing?)"
            )
        if ftype != ftype.strip():
            raise BadInputError(
                f"{path}, line 1 (header), column {column!r}: space or \\r around the "
                "type; allowed: name:type exactly, lines ending in \\n"
            )
        fields.append((name, ftype))
    return fields


def _check_field_counts(
    path: Path, raw: bytes, separator: str, fields: Sequence[Tuple[str, str]]
) -> np.ndarray:
    """Every non-blank row has as many fields as the header; returns the 0-based line
    numbers of the data rows (pandas skips blank lines)."""
    data = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    if len(raw) and raw[-1:] != b"\n":
        ends = np.append(ends, len(raw))
    starts = np.concatenate([[0], ends[:-1] + 1])
    sep = separator.encode()
    if len(sep) == 1:
        marks = np.flatnonzero(data == sep[0])
        counts = np.searchsorted(marks, ends) - np.searchsorted(marks, starts) + 1
    else:  # a multi-character separator: count per line
        counts = np.array([raw[s:e].count(sep) + 1 for s, e in zip(starts, ends)])
    lengths = ends - starts - (data[np.maximum(ends - 1, 0)] == 13)
    rows = np.flatnonzero(lengths > 0)
    rows = rows[rows > 0]  # line 0 is the header
    bad = rows[counts[rows] != len(fields)]
    if len(bad):
        line = int(bad[0])
        got = int(counts[line])
        header = ", ".join(f"{n}:{t}" for n, t in fields)
        kind = "a missing field" if got < len(fields) else "an extra field"
        raise BadInputError(
            f"{path}, line {line + 1}: {kind}, got {got} fields; allowed: "
            f"{len(fields)} separated by {separator!r}, as the header ({header})"
        )
    return rows


def _check_numbers(path, separator, seq_separator, encoding, numeric, rows) -> None:
    """A float field holds a number or nothing (RecBole fills missing values); a float_seq
    field numbers separated by ``seq_separator``."""
    plain = [i for i, _, ftype in numeric if ftype == "float"]
    if len(plain) == len(numeric) and len(separator) == 1:
        try:  # the fast path: pandas' C parser reads the floats as RecBole will
            pd.read_csv(path, sep=separator, usecols=plain, dtype=np.float64, header=0)
            return
        except ValueError:
            pass  # find the line and field below
    table = pd.read_csv(
        path,
        sep=separator,
        usecols=[i for i, _, _ in numeric],
        dtype=str,
        encoding=encoding,
        header=0,
        engine="c" if len(separator) == 1 else "python",
    )
    for i, field, ftype in numeric:
        column = table.iloc[:, [j for j, _, _ in numeric].index(i)]
        if ftype == "float_seq":
            column = column.str.strip().str.split(seq_separator).explode()
        given = column.notna() & (column.astype(str).str.strip() != "")
        parsed = pd.to_numeric(column.where(given), errors="coerce")
        wrong = np.flatnonzero((given & parsed.isna()).to_numpy())
        if len(wrong):
            position = column.index[wrong[0]]
            line = int(rows[position]) + 1
            raise BadInputError(
                f"{path}, line {line}, field {field}:{ftype}: got "
                f"{column.iloc[wrong[0]]!r}; allowed: a number"
                + (
                    f" (or numbers separated by {seq_separator!r})"
                    if "seq" in ftype
                    else ""
                )
            )
