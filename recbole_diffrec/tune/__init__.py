"""Ray Tune searches for plugin and RecBole models.

    python run_recbole_diffrec.py --model=DiffRec --dataset=ml-100k --tune=properties/hyper/DiffRec.yaml

A search-space yaml has a ``space`` (setting -> one distribution) and optional ``tune``
options (see :data:`TUNE_OPTIONS`); ``--key=value`` on the command line overrides a tune
option, and any other ``--key=value`` is a fixed setting of every trial::

    space:
      learning_rate: {loguniform: [1.0e-5, 1.0e-2]}
      dims_dnn: {choice: [[300], [200, 600], [1000]]}
      steps: {grid: [2, 5, 10]}
    tune:
      num_samples: 8
      scheduler: asha

Every trial reports its validation metrics after every evaluation (so ASHA can stop it), and
the search picks the trial with the best validation score; the test metrics of that trial's
best checkpoint are recorded beside it and never used to choose. The experiment folder gets
``trials.csv``, ``trials.md``, ``best.yaml`` (runnable as it is) and ``best.json``.

Modules, one job each: ``space`` (the search-space file), ``checks`` (the space against
the model), ``trial`` (one Ray trial), ``search`` (Ray and the experiment folder),
``reports`` (the tables and the chosen trial). The space is checked before Ray starts.
Ray is imported only inside :func:`run_search` and the trial function, and the names
below load on first use, so importing this package never imports Ray (nor RecBole).
"""

from __future__ import annotations

from ..utils import lazy_exports

# Public name -> the module that defines it.
_EXPORTS = {
    "DISTRIBUTIONS": ".space",
    "PATH_SETTINGS": ".space",
    "RESERVED": ".space",
    "SCHEDULERS": ".space",
    "SEARCHES": ".space",
    "SearchSpace": ".space",
    "TUNE_OPTIONS": ".space",
    "load_search_space": ".space",
    "parse_cli_value": ".space",
    "SPACE_CHECK_BUDGET": ".checks",
    "build_config": ".checks",
    "check_space_against_model": ".checks",
    "device_settings": ".trial",
    "run_trial": ".trial",
    "trial_index": ".trial",
    "run_search": ".search",
    "evaluate_checkpoint_on_test": ".reports",
    "print_summary": ".reports",
    "rerun_command": ".reports",
    "summarize": ".reports",
    "write_best": ".reports",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
