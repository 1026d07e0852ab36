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

The space is checked before Ray starts. Ray is imported only inside :func:`run_search` and
the trial function, so importing this module (or the package) never imports Ray.
"""

from __future__ import annotations

import ast
import csv
import difflib
import hashlib
import itertools
import json
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import yaml

from .utils import plain, plain_argv


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


# ------------------------------------------------------------------ reading the space
def load_search_space(
    path: str, overrides: Optional[Dict[str, Any]] = None
) -> SearchSpace:
    """Read and check a search-space yaml; one ``ValueError`` naming the file, the key and
    what is allowed. ``overrides`` are tune options from the command line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--tune: search space file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.load(f, Loader=_yaml_loader()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid yaml ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping with 'space' and optional 'tune'")
    unknown = set(raw) - {"space", "tune"}
    if unknown:
        raise ValueError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: space, tune"
        )
    space_raw = raw.get("space")
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

    options = {name: default for name, (default, _, _) in TUNE_OPTIONS.items()}
    tune_raw = raw.get("tune") or {}
    if not isinstance(tune_raw, dict):
        raise ValueError(f"{path}: 'tune' must be a mapping of tune options")
    for source, values in ((path, tune_raw), ("command line", overrides or {})):
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
    if options["search"] == "grid":
        continuous = [k for k, (d, _) in space.items() if d not in ("choice", "grid")]
        if continuous:
            raise ValueError(
                f"{path}: search: grid enumerates every value, so it needs choice/grid "
                f"distributions; {continuous} are continuous (use search: random)"
            )
    return SearchSpace(path=path, space=space, options=options)


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


class _Loader(yaml.SafeLoader):
    """Safe yaml that reads ``1e-3`` as a float, as RecBole's loader does."""


_Loader.add_implicit_resolver(
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


def _yaml_loader():
    return _Loader


def parse_cli_value(text: str) -> Any:
    """A ``--key=value`` value as a Python literal where it is one (``1e-3``, ``[300]``,
    ``True``), else the string (``linear-var``). Never evaluates code."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# ------------------------------------------------------------------ checking against the model
def build_config(
    model: str, dataset: str, config_files: Sequence[str], settings: Dict[str, Any]
):
    from .config import config_from_settings

    return config_from_settings(model, dataset, settings, config_files)


def check_space_against_model(spec: SearchSpace, config) -> None:
    """Every searched key must be a setting of the model, and every candidate value (or
    range bound) must pass the model's own checks in at least one combination: all of
    them when there are at most ``SPACE_CHECK_BUDGET``, else a seeded random sample."""

    known = set(config.final_config_dict)
    for key in spec.space:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{spec.path}: space key {key!r} is not a setting of {config['model']}{hint}"
            )
    keys = list(spec.space)
    grids = [spec.candidates(k) for k in keys]
    saved = {k: config[k] for k in keys}
    try:
        for i, key in enumerate(keys):
            for value in grids[i]:
                tried, error = _first_valid_combination(config, keys, grids, i, value)
                if error is None:
                    continue
                total = math.prod(len(g) for j, g in enumerate(grids) if j != i)
                where = (
                    "every combination"
                    if tried == total
                    else f"all {tried} sampled combinations (of {total})"
                )
                raise ValueError(
                    f"{spec.path}: space key {key!r}: value {value!r} fails the model's "
                    f"checks in {where}: {error}"
                )
    finally:
        for k, v in saved.items():
            config[k] = v


# Combinations tried per candidate value; past it, a seeded random sample of that size.
SPACE_CHECK_BUDGET = 4096


def _first_valid_combination(
    config, keys: List[str], grids: List[list], index: int, value: Any
) -> Tuple[int, Optional[str]]:
    """(combinations tried, None) once ``keys[index] = value`` passes the model's checks
    with some choice of the other keys, else (tried, the first error)."""
    from .quick_start import check_model_config

    others = [g for j, g in enumerate(grids) if j != index]
    if math.prod(len(g) for g in others) <= SPACE_CHECK_BUDGET:
        rests: Iterator[tuple] = itertools.product(*others)
    else:
        rng = random.Random(f"{keys[index]}={value!r}")
        rests = (
            tuple(rng.choice(g) for g in others) for _ in range(SPACE_CHECK_BUDGET)
        )
    tried, first_error = 0, None
    for rest in rests:
        combo = list(rest)
        combo.insert(index, value)
        for k, v in zip(keys, combo):
            config[k] = v
        tried += 1
        try:
            check_model_config(config)
        except ValueError as err:
            first_error = first_error or str(err)
            continue
        return tried, None
    return tried, first_error or "invalid"


# ------------------------------------------------------------------ the trial
def device_settings(gpu_ids: Sequence[Any]) -> Dict[str, Any]:
    """RecBole's Config sets CUDA_VISIBLE_DEVICES from ``gpu_id``; give it exactly the GPUs
    Ray assigned to the trial (none: CPU)."""
    return {"gpu_id": ",".join(str(int(g)) for g in gpu_ids)}


def trial_index(trial_id: str) -> int:
    """Ray trial ids end in a zero-padded counter (``a1b2c_00003``)."""
    return int(trial_id.rsplit("_", 1)[-1])


def _reporting_trainer(base: type, report) -> type:
    class ReportingTrainer(base):
        """Reports validation metrics to Ray after every evaluation."""

        def _valid_epoch(self, valid_data, show_progress=False):
            score, result = super()._valid_epoch(
                valid_data, show_progress=show_progress
            )
            self._last_valid_result = dict(result)
            return score, result

        def fit(
            self,
            train_data,
            valid_data=None,
            verbose=True,
            saved=True,
            show_progress=False,
            callback_fn=None,
        ):
            def on_evaluation(epoch_idx, valid_score):
                report(self, epoch_idx, valid_score, self._last_valid_result)
                if callback_fn:
                    callback_fn(epoch_idx, valid_score)

            return super().fit(
                train_data, valid_data, verbose, saved, show_progress, on_evaluation
            )

    return ReportingTrainer


def run_trial(params: Dict[str, Any], job: Dict[str, Any]) -> None:
    """One trial (runs in a Ray worker): train with ``params`` over the fixed settings,
    reporting validation metrics after every evaluation, then the best checkpoint's test
    metrics."""
    import ray
    import torch

    from .compat import trial_info, tune_report
    from .quick_start import run
    from .registry import get_model
    from .trainer import get_trainer

    report_metrics = tune_report()
    trial_dir_name, trial_id = trial_info(job["exp_dir"])
    trial_dir = Path(trial_dir_name)
    # Written straight into the experiment folder, so nothing waits on Ray's copying.
    trial_dir.mkdir(parents=True, exist_ok=True)
    with open(trial_dir / "starts.log", "a", encoding="utf-8") as f:
        f.write(f"{time.time()}\n")  # one line per start: a resumed search adds none
    seed = int(job["base_seed"]) + trial_index(trial_id)
    torch.set_num_threads(max(1, int(job["cpus_per_trial"])))
    settings = {
        **job["fixed"],
        **params,
        "seed": seed,
        "checkpoint_dir": str(trial_dir / "checkpoints"),
        **device_settings(ray.get_gpu_ids()),
    }
    if job.get("item_emb_cache_dir") and "item_emb_cache_dir" not in job["fixed"]:
        settings["item_emb_cache_dir"] = job["item_emb_cache_dir"]
    settings_path = trial_dir / "settings.yaml"
    settings_path.write_text(yaml.safe_dump(settings, sort_keys=True))

    metric, bigger = job["metric"], job["bigger"]
    state = {"best": None, "best_epoch": None, "last": None, "epoch": 0}

    def report(trainer, epoch_idx, valid_score, valid_result):
        score = float(valid_result.get(metric, valid_score))
        if state["best"] is None or (
            score > state["best"] if bigger else score < state["best"]
        ):
            state["best"], state["best_epoch"] = score, epoch_idx + 1
        state["epoch"] = epoch_idx + 1
        state["last"] = {
            "valid_score": score,
            **{f"valid_{k}": float(v) for k, v in valid_result.items()},
        }
        report_metrics(
            {
                **state["last"],
                "best_valid_score": state["best"],
                "best_epoch": state["best_epoch"],
                "epoch": epoch_idx + 1,
                "seed": seed,
                "model_file": trainer.saved_model_file,
            }
        )

    model_class = get_model(job["model"])
    trainer_class = _reporting_trainer(get_trainer(model_class), report)
    try:
        with plain_argv():
            result = run(
                job["model"],
                job["dataset"],
                config_file_list=list(job["config_files"]) + [str(settings_path)],
                saved=True,
                trainer_class=trainer_class,
            )
    except ValueError as err:
        if state["last"] is not None:
            raise
        # A combination the model rejects (say noise_min >= noise_max): checked before any
        # data is loaded; recorded as invalid with the worst score instead of a crash.
        report_metrics(
            {
                "valid_score": -math.inf if bigger else math.inf,
                "invalid": str(err),
                "seed": seed,
            }
        )
        return
    report_metrics(
        {
            **(state["last"] or {"valid_score": float(result["best_valid_score"])}),
            "best_valid_score": state["best"],
            "best_epoch": state["best_epoch"],
            "epoch": state["epoch"],
            "seed": seed,
            "model_file": result["model_file"],
            "finished": True,
            **{f"test_{k}": float(v) for k, v in result["test_result"].items()},
        }
    )


# ------------------------------------------------------------------ the search
def _ray_space(spec: SearchSpace):
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
    fixed = dict(fixed or {})
    for key in RESERVED:
        if key in fixed and key not in ("seed",):
            raise ValueError(f"--{key}: set by the search for each trial; remove it")
    config = build_config(model, dataset, config_files, fixed)
    from .quick_start import check_model_config

    check_model_config(config)
    check_space_against_model(spec, config)
    fixed = _absolute_paths(config, fixed)
    metric = str(config["valid_metric"]).lower()
    bigger = bool(config["valid_metric_bigger"])
    base_seed = int(fixed.pop("seed", config["seed"]))
    name = opts["name"] or f"{config['model']}-{dataset}-{Path(space_file).stem}"
    exp_dir = Path(opts["tune_dir"]).resolve() / name
    evaluations = max(1, int(config["epochs"]) // max(1, int(config["eval_step"])))

    # Data conversion happens once here, not in every trial.
    from .convert import ensure_release_converted

    ensure_release_converted(config)

    manifest = {
        "model": model,
        "dataset": dataset,
        "space": spec.space,
        "space_fingerprint": spec.fingerprint(),
        "fixed": fixed,
        "config_files": config_files,
        "base_seed": base_seed,
        "metric": metric,
        "bigger": bigger,
    }
    manifest_path = exp_dir / "search.json"
    resuming = manifest_path.is_file()
    if resuming:
        previous = json.loads(manifest_path.read_text())
        for key in (
            "model",
            "dataset",
            "space_fingerprint",
            "fixed",
            "config_files",
            "base_seed",
        ):
            if previous.get(key) != json.loads(json.dumps(manifest[key], default=str)):
                raise ValueError(
                    f"{exp_dir} holds a search with a different {key}; resume it with the "
                    f"same command, or start a new one with --name=<new name>"
                )

    job = {
        "model": model,
        "dataset": dataset,
        "config_files": config_files,
        "fixed": fixed,
        "base_seed": base_seed,
        "metric": metric,
        "bigger": bigger,
        "cpus_per_trial": opts["cpus_per_trial"],
        "item_emb_cache_dir": str(exp_dir / "item_emb"),
        "exp_dir": str(exp_dir),
    }

    import ray
    from ray import tune

    from .compat import run_config_class
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    if not ray.is_initialized():
        if opts["address"]:
            package = str(Path(__file__).resolve().parent)
            try:
                ray.init(
                    address=opts["address"],
                    runtime_env={"py_modules": [package]},
                    log_to_driver=False,
                )
            except ConnectionError as err:
                raise ConnectionError(
                    f"address: could not join the Ray cluster at {opts['address']} "
                    f"({str(err).strip().splitlines()[-1]}); if the cluster uses token "
                    "authentication (Ray >= 2.5x turns it on by default), set "
                    "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or ~/.ray/auth_token) to its "
                    "token before the search"
                ) from err
        else:
            ray.init(include_dashboard=False, log_to_driver=False)

    from functools import partial

    trainable = tune.with_resources(
        partial(run_trial, job=job),
        {"cpu": opts["cpus_per_trial"], "gpu": opts["gpus_per_trial"]},
    )
    exp_dir.parent.mkdir(parents=True, exist_ok=True)
    if resuming and tune.Tuner.can_restore(str(exp_dir)):
        print(f"resuming the search in {exp_dir}", flush=True)
        tuner = tune.Tuner.restore(
            str(exp_dir),
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
        )
    else:
        exp_dir.mkdir(parents=True, exist_ok=True)
        manifest_path.write_text(json.dumps(manifest, indent=1, default=str))
        scheduler = (
            ASHAScheduler(
                max_t=evaluations + 1,
                grace_period=opts["grace_period"],
                reduction_factor=opts["reduction_factor"],
            )
            if opts["scheduler"] == "asha"
            else FIFOScheduler()
        )
        tuner = tune.Tuner(
            trainable,
            param_space=_ray_space(spec),
            tune_config=tune.TuneConfig(
                metric="valid_score",
                mode="max" if bigger else "min",
                scheduler=scheduler,
                # Ray ignores TuneConfig.max_concurrent_trials for a generator instance.
                search_alg=BasicVariantGenerator(
                    random_state=opts["search_seed"],
                    max_concurrent=opts["max_concurrent_trials"],
                ),
                num_samples=opts["num_samples"],
                # A fresh worker per trial: CUDA_VISIBLE_DEVICES only takes effect before
                # CUDA starts, and nothing leaks between trials.
                reuse_actors=False,
            ),
            run_config=run_config_class()(
                name=name, storage_path=str(exp_dir.parent), verbose=1
            ),
        )
    results = tuner.fit()
    return summarize(results, spec, manifest, exp_dir, model, dataset)


# ------------------------------------------------------------------ the report
def _trial_statuses(exp_dir: Path) -> Dict[str, str]:
    """Trial statuses as saved in the experiment state, which is what a resume reads
    (after Ctrl+C, Ray's in-memory trials all look terminated)."""
    from .compat import experiment_state_trials, latest_experiment_state

    return {
        trial.get("trial_id"): trial.get("status")
        for trial in experiment_state_trials(latest_experiment_state(exp_dir))
    }


def summarize(
    results,
    spec: SearchSpace,
    manifest: Dict[str, Any],
    exp_dir: Path,
    model: str,
    dataset: str,
) -> Dict[str, Any]:
    metric, bigger = manifest["metric"], manifest["bigger"]
    statuses = _trial_statuses(exp_dir)
    rows = []
    for result in results:
        m = dict(result.metrics or {})
        params = dict(result.config or {})
        # A trial interrupted before its first report has no metrics: id from its folder.
        found = re.search(r"_([0-9a-f]+_\d{5})(?:_|$)", Path(result.path).name)
        trial_id = m.get("trial_id") or (
            found.group(1) if found else Path(result.path).name
        )
        if statuses.get(trial_id) in ("RUNNING", "PENDING", "PAUSED"):
            status = "interrupted (resumes)"
        elif result.error is not None:
            status = f"error: {str(result.error).strip().splitlines()[-1][:160]}"
        elif m.get("invalid"):
            status = f"invalid: {m['invalid']}"
        elif m.get("finished"):
            status = "finished"
        else:
            status = "stopped by scheduler"
        row = {
            "trial": trial_id,
            "status": status,
            "seed": m.get("seed"),
            **{k: params.get(k) for k in spec.space},
            f"best valid {metric}": m.get("best_valid_score"),
            "best epoch": m.get("best_epoch"),
            "epochs run": m.get("epoch"),
            "model_file": m.get("model_file"),
            "path": result.path,
        }
        row.update({k: v for k, v in m.items() if k.startswith("test_")})
        rows.append(row)

    interrupted = any(r["status"].startswith("interrupted") for r in rows)
    # An interrupted trial reruns from the start on resume: not a candidate yet.
    scored = [
        r
        for r in rows
        if r[f"best valid {metric}"] is not None
        and not r["status"].startswith("interrupted")
    ]
    summary: Dict[str, Any] = {
        "exp_dir": str(exp_dir),
        "trials": rows,
        "interrupted": interrupted,
    }
    if not scored:
        _write_tables(rows, exp_dir, metric, None)
        summary["best"] = None
        return summary
    sign = 1 if bigger else -1
    best = max(
        scored, key=lambda r: (sign * r[f"best valid {metric}"], -_index(r["trial"]))
    )
    if not any(k.startswith("test_") for k in best) and best.get("model_file"):
        best.update(evaluate_checkpoint_on_test(best["model_file"]))
    best_settings = write_best(best, spec, manifest, exp_dir, model, dataset, metric)
    _write_tables(rows, exp_dir, metric, best["trial"])
    summary.update(best=best, best_settings=best_settings)
    return summary


def _index(trial: str) -> int:
    try:
        return trial_index(trial)
    except ValueError:
        return 0


def evaluate_checkpoint_on_test(model_file: str) -> Dict[str, float]:
    """Test metrics of a trial the scheduler stopped: its best checkpoint, evaluated here."""
    from .quick_start import load_model
    from .trainer import get_trainer

    with plain_argv():
        config, model, _, _, _, test_data = load_model(model_file)
        trainer = get_trainer(type(model))(config, model)
        result = trainer.evaluate(test_data, load_best_model=False)
    return {f"test_{k}": float(v) for k, v in result.items()}


def write_best(
    best, spec, manifest, exp_dir: Path, model: str, dataset: str, metric: str
):
    """best.yaml: the config files' settings, the fixed settings, the chosen values and
    the trial's seed, in one file the runner accepts as it is."""
    merged: Dict[str, Any] = {}
    with plain_argv():
        for f in manifest["config_files"]:
            with open(f, encoding="utf-8") as fh:
                merged.update(yaml.load(fh, Loader=_yaml_loader()) or {})
    merged.update(manifest["fixed"])
    for key in PATH_SETTINGS:
        if isinstance(merged.get(key), str):
            merged[key] = os.path.abspath(merged[key])
    chosen = {k: best[k] for k in spec.space}
    merged.update(chosen)
    merged["seed"] = best["seed"]
    tests = {k[5:]: v for k, v in best.items() if k.startswith("test_")}
    header = (
        f"# Best trial {best['trial']} of the search in {exp_dir}\n"
        f"# chosen on validation {metric} = {best[f'best valid {metric}']:.4f} "
        f"(epoch {best['best epoch']}); its test metrics, never used to choose: "
        + ", ".join(f"{k} {v:.4f}" for k, v in tests.items())
        + "\n# rerun: "
        + rerun_command(model, dataset, exp_dir / "best.yaml")
        + "\n"
    )
    (exp_dir / "best.yaml").write_text(
        header + yaml.safe_dump(plain(merged), sort_keys=True)
    )
    (exp_dir / "best.json").write_text(json.dumps(plain(best), indent=1))
    return chosen


def rerun_command(model: str, dataset: str, best_yaml: Path) -> str:
    return (
        f"python run_recbole_diffrec.py --model={model} --dataset={dataset} "
        f"--config_files={best_yaml}"
    )


def _write_tables(
    rows: List[Dict[str, Any]], exp_dir: Path, metric: str, best_trial
) -> None:
    columns: List[str] = []
    for row in rows:
        for key in row:
            if key not in columns and key not in ("path", "model_file"):
                columns.append(key)
    with open(exp_dir / "trials.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns + ["path"], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: json.dumps(v) if isinstance(v, (list, dict)) else v
                    for k, v in row.items()
                }
            )
    key = f"best valid {metric}"
    ordered = sorted(rows, key=lambda r: -(r[key] if r[key] is not None else -math.inf))

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
        return "" if v is None else str(v)

    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in ordered:
        cells = [cell(row.get(c)) for c in columns]
        if row["trial"] == best_trial:
            cells[0] = f"**{cells[0]}** (chosen)"
        lines.append("| " + " | ".join(cells) + " |")
    (exp_dir / "trials.md").write_text(
        f"Trials sorted by best validation {metric} (the search selects on validation only; "
        "test metrics are reported, never used to choose).\n\n"
        + "\n".join(lines)
        + "\n"
    )


def print_summary(summary: Dict[str, Any], model: str, dataset: str) -> None:
    exp_dir = Path(summary["exp_dir"])
    print((exp_dir / "trials.md").read_text())
    if summary["interrupted"]:
        print("The search was interrupted; run the same command again to resume it.")
    if summary.get("best"):
        print(
            f"best settings: {summary['best_settings']} (seed {summary['best']['seed']})"
        )
        print(
            f"written: {exp_dir / 'trials.csv'}, {exp_dir / 'trials.md'}, {exp_dir / 'best.yaml'}"
        )
        print("rerun the best: " + rerun_command(model, dataset, exp_dir / "best.yaml"))
