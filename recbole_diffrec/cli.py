"""Command line in RecBole's style:

    python run_recbole_diffrec.py --model=DiffRec --dataset=ml-100k [--config_files="a.yaml b.yaml"] [--key=value ...]
    python run_recbole_diffrec.py --model=DiffRec --dataset=ml-100k --tune=properties/hyper/DiffRec.yaml [--num_samples=8 ...]

Any other ``--key=value`` is a RecBole/plugin setting (RecBole's Config reads them). With
``--tune`` the command runs a Ray Tune search (``recbole_diffrec.tune``); tune options such
as ``--num_samples`` or ``--address`` override the search file's ``tune`` section.

Bad input (a setting, a yaml or atomic file, a release, a search space) ends in one
``error: ...`` line on stderr and exit status 2; ``--debug`` (or the environment variable
``RECBOLE_DIFFREC_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from typing import Iterator, List, Optional, Sequence

from .distributed import DistributedRunError
from .errors import debug_enabled
from .quick_start import run

# What a bad input raises: the plugin's BadInputError is a ValueError; RecBole and Ray
# raise these for missing files and an unreachable cluster.
INPUT_ERRORS = (ValueError, FileNotFoundError, ConnectionError)
INPUT_ERROR_NAMES = {
    "ValueError",
    "BadInputError",
    "MissingInputError",
    "FileNotFoundError",
    "NonFiniteLossError",
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train and evaluate a plugin or RecBole model with RecBole's pipeline.",
        epilog="Other --key=value arguments are passed to RecBole's Config.",
    )
    parser.add_argument(
        "--model", "-m", default="DiffRec", help="model name (see --list)"
    )
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name")
    parser.add_argument(
        "--config_files",
        default=None,
        help="space-separated yaml files, applied in order",
    )
    parser.add_argument("--list", action="store_true", help="list the available models")
    parser.add_argument(
        "--versions",
        action="store_true",
        help="print Python and the library versions the install chose (a README stack row)",
    )
    parser.add_argument(
        "--tune",
        default=None,
        help="search-space yaml: run a Ray Tune search instead of one training run",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback behind an error: line (also RECBOLE_DIFFREC_DEBUG=1)",
    )
    args, rest = parser.parse_known_args(argv)
    debug = args.debug or debug_enabled()
    try:
        with _settings_argv(rest, argv is not None), _short_warnings():
            return _main(args, rest)
    except INPUT_ERRORS as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DistributedRunError as err:
        # One line naming the rank; the rank's traceback with --debug.
        if debug:
            print(err.details, file=sys.stderr)
        print(f"error: {err}", file=sys.stderr)
        return 2 if err.error_type in INPUT_ERROR_NAMES else 1


@contextlib.contextmanager
def _settings_argv(rest: List[str], explicit: bool) -> Iterator[None]:
    """RecBole's Config reads settings from sys.argv: give it the --key=value arguments
    this parser left; a call with explicit arguments adds them to the process's own."""
    for arg in rest:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"unexpected argument {arg!r}; allowed: --key=value")
    saved = sys.argv
    sys.argv = (saved if explicit else saved[:1]) + list(rest)
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def _short_warnings() -> Iterator[None]:
    """Warnings as ``warning: <message>`` lines, without Python's source location."""
    saved = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = saved


def _main(args, rest) -> int:
    if args.list:
        from .registry import available_models

        print("\n".join(available_models()))
        return 0
    if args.versions:
        from .compat import stack_versions

        versions = stack_versions()
        print("| " + " | ".join(versions) + " |")
        print("| " + " | ".join(versions.values()) + " |")
        return 0
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    if args.tune:
        return _tune(args, config_files or [], rest)
    result = run(args.model, args.dataset, config_file_list=config_files)
    for label, key in (
        ("best valid", "best_valid_result"),
        ("test result", "test_result"),
    ):
        # Plain floats: NumPy 2 would print np.float64(...) around every value.
        scores = {k: float(v) for k, v in (result[key] or {}).items()}
        print(f"{label} ({result['model']} on {result['dataset']}): {scores}")
    if result["model_file"]:
        print(f"model saved to {result['model_file']}")
    return 0


def _tune(args, config_files, rest) -> int:
    # Imported here: the plain runner never loads Ray.
    from . import tune

    options, fixed = {}, {}
    for arg in rest:
        key, value = arg[2:].split("=", 1)
        target = options if key in tune.TUNE_OPTIONS else fixed
        target[key] = tune.parse_cli_value(value)
    summary = tune.run_search(
        args.model, args.dataset, args.tune, config_files, fixed, options
    )
    tune.print_summary(summary, args.model, args.dataset)
    return 130 if summary["interrupted"] else 0
