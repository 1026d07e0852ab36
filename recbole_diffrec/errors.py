"""The plugin's error for bad input, and its unknown-setting warning.

Every check of a user's input (settings, yaml, atomic files, releases, checkpoints) raises
:class:`BadInputError` with one message in the package's style, ``<what>: got X; allowed: Y``,
naming the file, line or key at fault. It subclasses ``ValueError`` (and
:class:`MissingInputError` also ``FileNotFoundError``) so callers catching those keep working;
the command line prints the message as one ``error:`` line and exits 2.
"""

from __future__ import annotations

import os

# Set to 1 to see the traceback behind an ``error:`` line (the CLI's --debug does the same).
DEBUG_ENV = "RECBOLE_DIFFREC_DEBUG"


class BadInputError(ValueError):
    """A setting, file or argument the plugin cannot use; the message says which and why."""


class MissingInputError(BadInputError, FileNotFoundError):
    """A file or folder the input names does not exist."""


class UnknownSettingWarning(UserWarning):
    """A setting no RecBole, plugin or dataset yaml (and no model rule) declares."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")
