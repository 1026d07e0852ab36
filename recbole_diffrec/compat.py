"""Every patch the plugin needs to run RecBole 1.2.1 and Ray on both supported stacks.

The plugin installs on two stacks (README, "Install"): Python 3.9-3.11 with RecBole's own
pins (NumPy 1.x, Ray 2.6.3) and Python 3.12-3.13 with current NumPy 2, SciPy and Ray. RecBole
1.2.1 predates the second; the shims below make it run there without copying any of its
code. Each shim names the library version that needs it, is applied only where that
version is installed, does nothing twice, and has a test in ``tests/test_compat.py`` that
shows the failure it prevents.

:func:`apply` runs when ``recbole_diffrec`` is imported, so a RecBole pipeline that imports
the plugin gets the shims before it builds a ``Config``. The Ray helpers are functions, not
patches: they import Ray only when a search runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

# Aliases removed in NumPy 2.0 that RecBole 1.2.1's Config.compatibility_settings reads
# (it re-creates np.bool, np.int, np.float, np.complex, np.object, np.str, np.long,
# np.unicode from them).
NUMPY2_ALIASES = {
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
}


def numpy2_aliases() -> bool:
    """NumPy >= 2.0: restore ``np.float_``, ``np.complex_`` and ``np.unicode_``.

    RecBole 1.2.1 reads them while building any ``Config``, so without this no RecBole run
    starts on NumPy 2 (``AttributeError: np.float_ was removed in the NumPy 2.0 release``).
    Returns whether anything was added."""
    added = False
    for alias, target in NUMPY2_ALIASES.items():
        if alias not in np.__dict__:
            setattr(np, alias, target)
            added = True
    return added


def _dok_update(self, data: Dict[Tuple[int, int], Any]) -> None:
    """What ``dok_matrix._update`` did before SciPy 1.13: store entries without checks."""
    self._dict.update(data)


def scipy_dok_update() -> bool:
    """SciPy >= 1.13: give ``dok_matrix`` back the ``_update`` method it removed.

    RecBole 1.2.1's graph models (LightGCN, NGCF, SpectralCF, GCMC, NCL, KGIN, MCCLK) fill
    their adjacency matrix with ``A._update(dict)``; L-DiffRec trains RecBole's LightGCN for
    its item clusters. SciPy 1.13 rewrote ``dok_matrix`` on an internal ``_dict``, which is
    what the restored method updates. Returns whether the method was added."""
    import scipy.sparse as sp

    if hasattr(sp.dok_matrix, "_update"):
        return False
    sp.dok_matrix._update = _dok_update
    return True


def apply() -> Dict[str, bool]:
    """Apply every shim the installed libraries need; returns which ones were added."""
    return {
        "numpy2_aliases": numpy2_aliases(),
        "scipy_dok_update": scipy_dok_update(),
    }


# ------------------------------------------------------------------ Ray Tune
def modern_ray_tune() -> bool:
    """Whether the installed Ray has the Tune function API of Ray >= 2.7.

    Ray 2.6.3 (RecBole's pin) reports through ``ray.air.session``; current Ray reports
    through ``ray.tune.report(metrics)`` and ``ray.tune.get_context()``, and deprecates the
    ``ray.air`` session and ``ray.air.RunConfig``."""
    from ray import tune

    return hasattr(tune, "get_context")


def _trial_context():
    """The running trial's context: ``ray.tune.get_context()`` or Ray 2.6's session."""
    if modern_ray_tune():
        from ray import tune

        return tune.get_context()
    from ray.air import session

    return session


def tune_report() -> Callable[[Dict[str, Any]], None]:
    """The function a trial calls with its metrics dict, on either Ray."""
    if modern_ray_tune():
        from ray import tune

        return tune.report
    from ray.air import session

    return session.report


def trial_info(experiment_dir: str) -> Tuple[str, str]:
    """(trial folder inside ``experiment_dir``, trial id) of the running trial.

    Ray 2.6's ``get_trial_dir()`` is that folder. Current Ray returns a staging folder
    under ``/tmp/ray/session_*`` instead, which the driver copies into the experiment
    folder only now and then (and never from another node): a checkpoint written there
    can be lost, or point to a path that is gone after the search. Tune's layout is
    ``<storage_path>/<experiment>/<trial folder>`` on every version, so the trial folder
    is taken by name inside the experiment folder."""
    context = _trial_context()
    name = Path(context.get_trial_dir()).name
    return str(Path(experiment_dir) / name), context.get_trial_id()


def run_config_class():
    """Tune's ``RunConfig``: ``ray.tune.RunConfig`` on current Ray, ``ray.air`` on 2.6."""
    if modern_ray_tune():
        from ray import tune

        return tune.RunConfig
    from ray.air import RunConfig

    return RunConfig


def latest_experiment_state(experiment_dir) -> Dict[str, Any]:
    """The newest ``experiment_state-<start time>.json`` of a Tune experiment folder.

    A resumed search writes a new file beside the old one. Current Ray copies both back
    into the folder at the end, in no set order, so the newest is told by the start time
    in its name, not by its modification time. ``{}`` when there is none."""
    states = sorted(Path(experiment_dir).glob("experiment_state-*.json"))
    return json.loads(states[-1].read_text()) if states else {}


def experiment_state_trials(state: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The trials saved in a Tune ``experiment_state-*.json`` (what a resume reads).

    Ray 2.6 keeps a list of trial json under ``checkpoints``; current Ray keeps
    ``[trial json, runtime json]`` pairs under ``trial_data``."""
    entries = state.get("checkpoints") or [
        pair[0] for pair in state.get("trial_data", [])
    ]
    return [json.loads(e) if isinstance(e, str) else e for e in entries]


# ------------------------------------------------------------------ the installed stack
STACK = ("numpy", "pandas", "scipy", "ray", "torch", "recbole")


def stack_versions() -> Dict[str, str]:
    """Python and the versions of the libraries the two stacks differ in."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in STACK:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
