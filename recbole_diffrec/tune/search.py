"""Running a search: check everything before Ray starts, start or join Ray, run the trials
(or resume an interrupted search in the same experiment folder), then report.

Ray is imported inside the functions that start it, so importing this module never does.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..compat import run_config_class
from ..convert import ensure_release_converted
from ..quick_start import check_model_config
from .checks import build_config, check_space_against_model
from .reports import summarize
from .space import PATH_SETTINGS, RESERVED, SearchSpace, load_search_space
from .trial import run_trial

# The package folder, shipped to the workers of a Ray cluster (they may not have it).
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# Manifest keys a resumed search must share with the one in the folder.
RESUME_KEYS = (
    "model",
    "dataset",
    "space_fingerprint",
    "fixed",
    "config_files",
    "base_seed",
)


def run_search(
    model: str,
    dataset: str,
    space_file: str,
    config_files: Sequence[str] = (),
    fixed: Optional[Dict[str, Any]] = None,
    options: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Run (or resume) a search; returns a summary with the chosen trial and file paths."""
    spec = load_search_space(space_file, options)
    opts = spec.options
    config_files = [os.path.abspath(f) for f in config_files]
    for f in config_files:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"--config_files: {f} does not exist")
    config, fixed = _checked_config(spec, model, dataset, config_files, fixed)
    base_seed = int(fixed.pop("seed", config["seed"]))
    name = opts["name"] or f"{config['model']}-{dataset}-{Path(space_file).stem}"
    exp_dir = Path(opts["tune_dir"]).resolve() / name
    evaluations = max(1, int(config["epochs"]) // max(1, int(config["eval_step"])))
    if opts["scheduler"] == "asha" and opts["grace_period"] > evaluations + 1:
        # ASHA's max_t is the number of reports a trial makes; Ray asserts otherwise.
        raise ValueError(
            f"grace_period: got {opts['grace_period']} with epochs={config['epochs']} and "
            f"eval_step={config['eval_step']} ({evaluations} evaluations); allowed: an "
            f"integer in [1, {evaluations + 1}], or more epochs, or scheduler: fifo"
        )

    # Data conversion happens once here, not in every trial.
    ensure_release_converted(config)

    manifest = {
        "model": model,
        "dataset": dataset,
        "space": spec.space,
        "space_fingerprint": spec.fingerprint(),
        "fixed": fixed,
        "config_files": config_files,
        "base_seed": base_seed,
        "metric": str(config["valid_metric"]).lower(),
        "bigger": bool(config["valid_metric_bigger"]),
    }
    resuming = _is_resume(exp_dir, manifest)
    job = {
        **{k: manifest[k] for k in ("model", "dataset", "config_files", "fixed")},
        **{k: manifest[k] for k in ("base_seed", "metric", "bigger")},
        "cpus_per_trial": opts["cpus_per_trial"],
        "item_emb_cache_dir": str(exp_dir / "item_emb"),
        "exp_dir": str(exp_dir),
    }
    _start_ray(opts["address"])
    tuner = _tuner(spec, job, manifest, exp_dir, name, resuming, evaluations)
    results = tuner.fit()
    return summarize(results, spec, manifest, exp_dir, model, dataset)


def _checked_config(
    spec: SearchSpace,
    model: str,
    dataset: str,
    config_files: Sequence[str],
    fixed: Optional[Dict[str, Any]],
):
    """(the search's Config, the fixed settings with absolute paths), once the fixed
    settings, the model's own checks and the space have passed."""
    fixed = dict(fixed or {})
    for key in RESERVED:
        if key in fixed and key not in ("seed",):
            raise ValueError(f"--{key}: set by the search for each trial; remove it")
    config = build_config(model, dataset, config_files, fixed)
    check_model_config(config)
    check_space_against_model(spec, config)
    return config, _absolute_paths(config, fixed)


def _absolute_paths(config, settings: Dict[str, Any]) -> Dict[str, Any]:
    """Path settings made absolute against the driver's working directory."""
    out = dict(settings)
    for key in PATH_SETTINGS:
        value = config[key]
        if isinstance(value, str) and value:
            out[key] = os.path.abspath(value)
    if config["dataset"] != "ml-100k":  # RecBole finds its bundled ml-100k by itself
        # RecBole joins data_path and the dataset name; keep the parent, made absolute.
        parent = os.path.dirname(os.path.normpath(config["data_path"]))
        out["data_path"] = os.path.abspath(parent)
    return out


def _is_resume(exp_dir: Path, manifest: Dict[str, Any]) -> bool:
    """Whether ``exp_dir`` holds this search already, to resume; an error if it holds
    another one."""
    manifest_path = exp_dir / "search.json"
    if not manifest_path.is_file():
        return False
    previous = json.loads(manifest_path.read_text())
    for key in RESUME_KEYS:
        if previous.get(key) != json.loads(json.dumps(manifest[key], default=str)):
            raise ValueError(
                f"{exp_dir} holds a search with a different {key}; resume it with the "
                f"same command, or start a new one with --name=<new name>"
            )
    return True


def _start_ray(address: Optional[str]) -> None:
    """Join the cluster at ``address``, else start a local Ray (unless one is running)."""
    import ray

    if ray.is_initialized():
        return
    if not address:
        ray.init(include_dashboard=False, log_to_driver=False)
        return
    try:
        ray.init(
            address=address,
            runtime_env={"py_modules": [str(PACKAGE_DIR)]},
            log_to_driver=False,
        )
    except ConnectionError as err:
        raise ConnectionError(
            f"address: could not join the Ray cluster at {address} "
            f"({str(err).strip().splitlines()[-1]}); if the cluster uses token "
            "authentication (Ray >= 2.5x turns it on by default), set "
            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or ~/.ray/auth_token) to its "
            "token before the search"
        ) from err


def _tuner(spec, job, manifest, exp_dir: Path, name: str, resuming: bool, evaluations):
    """The restored Tuner of an interrupted search in ``exp_dir``, else a new one."""
    from ray import tune

    trainable = tune.with_resources(
        partial(run_trial, job=job),
        {"cpu": spec.options["cpus_per_trial"], "gpu": spec.options["gpus_per_trial"]},
    )
    exp_dir.parent.mkdir(parents=True, exist_ok=True)
    if resuming and tune.Tuner.can_restore(str(exp_dir)):
        print(f"resuming the search in {exp_dir}", flush=True)
        return tune.Tuner.restore(
            str(exp_dir),
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
        )
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "search.json").write_text(json.dumps(manifest, indent=1, default=str))
    return tune.Tuner(
        trainable,
        param_space=_ray_space(spec),
        tune_config=_tune_config(spec.options, manifest["bigger"], evaluations),
        run_config=run_config_class()(
            name=name, storage_path=str(exp_dir.parent), verbose=1
        ),
    )


def _tune_config(opts: Dict[str, Any], bigger: bool, evaluations: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    scheduler = (
        ASHAScheduler(
            max_t=evaluations + 1,
            grace_period=opts["grace_period"],
            reduction_factor=opts["reduction_factor"],
        )
        if opts["scheduler"] == "asha"
        else FIFOScheduler()
    )
    return tune.TuneConfig(
        metric="valid_score",
        mode="max" if bigger else "min",
        scheduler=scheduler,
        # Ray ignores TuneConfig.max_concurrent_trials for a generator instance.
        search_alg=BasicVariantGenerator(
            random_state=opts["search_seed"],
            max_concurrent=opts["max_concurrent_trials"],
        ),
        num_samples=opts["num_samples"],
        # A fresh worker per trial: CUDA_VISIBLE_DEVICES only takes effect before CUDA
        # starts, and nothing leaks between trials.
        reuse_actors=False,
    )


def _ray_space(spec: SearchSpace) -> Dict[str, Any]:
    """The space in Ray's distributions; under ``search: grid`` a choice is a grid."""
    from ray import tune

    out = {}
    for key, (dist, args) in spec.space.items():
        if dist == "grid" or (dist == "choice" and spec.options["search"] == "grid"):
            out[key] = tune.grid_search(list(args))
        elif dist == "choice":
            out[key] = tune.choice(list(args))
        elif dist == "uniform":
            out[key] = tune.uniform(*args)
        elif dist == "loguniform":
            out[key] = tune.loguniform(*args)
        else:
            out[key] = tune.quniform(*args)
    return out
