"""Every model setting the plugin checks, declared in one place.

A rule names the key(s) it reads and says what is allowed; :func:`check_settings` runs a
model's rules in order and raises one ``ValueError`` naming the first offending key, what
it got and what is allowed. Rules read only the config, so they run before any data is
loaded (the runner, the tuner's search-space check and each model's constructor call
them). A model declares its rules as ``config_rules`` (see the tables at the end); a new
model composes the groups here and adds its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple

from ..diffusion import MEAN_TYPES, NOISE_SCHEDULES, TIMESTEP_SAMPLERS


class Rule:
    """One check: ``problem(config)`` is None when the setting is allowed, else the message."""

    def problem(self, config: Any) -> Optional[str]:
        raise NotImplementedError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bound(config: Any, bound: Any) -> Any:
    """A bound given as a number, or as the name of another key (e.g. ``"steps"``)."""
    return config[bound] if isinstance(bound, str) else bound


def _bound_text(bound: Any, value: Any) -> str:
    return f"{bound}={value}" if isinstance(bound, str) else str(value)


@dataclass(frozen=True)
class Int(Rule):
    """An integer in [minimum, maximum]; a bound may name another key. ``optional``
    also allows null (~)."""

    key: str
    minimum: Any = None
    maximum: Any = None
    optional: bool = False
    null_means: str = ""

    def problem(self, config: Any) -> Optional[str]:
        value = config[self.key]
        if value is None and self.optional:
            return None
        low, high = _bound(config, self.minimum), _bound(config, self.maximum)
        if _is_int(value) and (low is None or value >= low):
            if high is None or value <= high:
                return None
        if high is not None:
            span = f"in [{_bound_text(self.minimum, low)}, {_bound_text(self.maximum, high)}]"
        else:
            span = f">= {low}"
        null = f"null ({self.null_means}) or " if self.optional else ""
        return f"{self.key}: got {value!r}; allowed: {null}an integer {span}"


@dataclass(frozen=True)
class Number(Rule):
    """A number between ``low`` and ``high``; ``open_low`` / ``open_high`` exclude the
    ends. ``note`` says why, when the range is not obvious."""

    key: str
    low: float = float("-inf")
    high: float = float("inf")
    open_low: bool = False
    open_high: bool = False
    note: str = ""

    def problem(self, config: Any) -> Optional[str]:
        value = config[self.key]
        if _is_number(value):
            above = value > self.low if self.open_low else value >= self.low
            below = value < self.high if self.open_high else value <= self.high
            if above and below:
                return None
        if self.high == float("inf"):
            span = f"{'>' if self.open_low else '>='} {self.low:g}"
        else:
            span = (
                f"in {'(' if self.open_low else '['}{self.low:g}, "
                f"{self.high:g}{')' if self.open_high else ']'}"
            )
        note = f" ({self.note})" if self.note else ""
        return f"{self.key}: got {value!r}; allowed: a number {span}{note}"


def Fraction(key: str) -> Number:
    """A rate such as a dropout: a number in [0, 1)."""
    return Number(key, 0.0, 1.0, open_high=True)


def NonNegative(key: str) -> Number:
    return Number(key, 0.0)


@dataclass(frozen=True)
class Choice(Rule):
    key: str
    options: Tuple[Any, ...]

    def problem(self, config: Any) -> Optional[str]:
        value = config[self.key]
        if value in self.options:
            return None
        return (
            f"{self.key}: got {value!r}; allowed: {', '.join(map(str, self.options))}"
        )


@dataclass(frozen=True)
class IntList(Rule):
    """A list of positive integers (layer sizes)."""

    key: str
    allow_empty: bool = False

    def problem(self, config: Any) -> Optional[str]:
        value = config[self.key]
        ok = isinstance(value, (list, tuple)) and all(
            _is_int(v) and v > 0 for v in value
        )
        if ok and (self.allow_empty or len(value) > 0):
            return None
        allowed = "a list of positive integers" + (
            "" if self.allow_empty else " with at least one entry"
        )
        return f"{self.key}: got {value!r}; allowed: {allowed}, e.g. [200, 600]"


@dataclass(frozen=True)
class Relation(Rule):
    """A rule over several keys (each already checked on its own): ``holds(*values)``
    must be true; ``allowed`` says what is allowed. Values of null skip the rule."""

    keys: Tuple[str, ...]
    holds: Callable[..., bool]
    allowed: str

    def problem(self, config: Any) -> Optional[str]:
        values = [config[key] for key in self.keys]
        if any(v is None for v in values) or self.holds(*values):
            return None
        others = ", ".join(f"{k}={v!r}" for k, v in zip(self.keys[1:], values[1:]))
        return (
            f"{self.keys[0]}: got {values[0]!r} with {others}; allowed: {self.allowed}"
        )


@dataclass(frozen=True)
class Check(Rule):
    """A rule too particular for the kinds above: ``problem_of(config)`` returns the
    message (naming the key) or None."""

    problem_of: Callable[[Any], Optional[str]]

    def problem(self, config: Any) -> Optional[str]:
        return self.problem_of(config)


def check_settings(config: Any, rules: Sequence[Rule]) -> None:
    """Raise one ``ValueError`` for the first rule ``config`` breaks."""
    for rule in rules:
        problem = rule.problem(config)
        if problem is not None:
            raise ValueError(problem)


class DeclaredSettings:
    """Mixin for a model: ``check_config`` runs the rules the class declares as
    ``config_rules`` (before any data is loaded)."""

    config_rules: Tuple[Rule, ...] = ()

    @classmethod
    def check_config(cls, config: Any) -> None:
        check_settings(config, cls.config_rules)


# ------------------------------------------------------------------------ rule groups
EVAL_HISTORY = ("unmasked", "masked")


def _eval_history_problem(config: Any) -> Optional[str]:
    if config["eval_history"] is None:  # RecBole's own protocol
        return None
    return Choice("eval_history", EVAL_HISTORY).problem(config)


# Settings the plugin adds to every run (plugin and RecBole models alike).
RUN: Tuple[Rule, ...] = (
    Int("eval_batch_users", 1, optional=True, null_means="RecBole's eval_batch_size"),
    Check(_eval_history_problem),
)


def _saved_loaders_problem(config: Any) -> Optional[str]:
    for key in ("save_dataloaders", "dataloaders_save_path"):
        if config[key]:
            return (
                f"{key}: got {config[key]!r}; allowed: False / null for the plugin's "
                "models, whose dataloaders (batches of users, masked histories) RecBole "
                "cannot save or reload; save_dataset / dataset_save_path do work"
            )
    return None


# Settings every plugin model refuses.
PLUGIN: Tuple[Rule, ...] = (Check(_saved_loaders_problem),)

NOISE: Tuple[Rule, ...] = (
    Choice("noise_schedule", NOISE_SCHEDULES),
    Choice("timestep_sampler", TIMESTEP_SAMPLERS),
    Int("steps", 1),
    Number("noise_min", 0.0, 1.0, open_low=True, open_high=True),
    Number("noise_max", 0.0, 1.0, open_low=True, open_high=True),
    Number("noise_scale", 0.0, 1.0, note="0 turns noise off"),
    Relation(
        ("noise_min", "noise_max"),
        lambda low, high: low < high,
        "noise_min < noise_max",
    ),
    Int("history_num_per_term", 1),
)

DIFFUSION: Tuple[Rule, ...] = (
    (Choice("mean_type", MEAN_TYPES),)
    + NOISE
    + (
        # Predicting the noise needs noise: with noise_scale 0 there is no eps to predict.
        Relation(
            ("mean_type", "noise_scale"),
            lambda mean_type, scale: mean_type == "x0" or scale > 0,
            "x0 when noise_scale is 0 (eps predicts the noise)",
        ),
    )
)

DIFFREC: Tuple[Rule, ...] = (
    PLUGIN
    + DIFFUSION
    + (
        Int("sampling_steps", 0, "steps"),
        Int("inference_steps", 1, "steps", optional=True, null_means="all steps"),
        # Inference runs on the respaced chain, which has only inference_steps steps.
        Relation(
            ("sampling_steps", "inference_steps"),
            lambda sampling, inference: sampling <= inference,
            "an integer in [0, inference_steps]",
        ),
        IntList("dims_dnn"),
        Int("embedding_size", 1),
        Fraction("dropout"),
    )
)

TIME_WEIGHTS: Tuple[Rule, ...] = (
    Number("w_min", 0.0, 1.0, open_low=True),
    Number("w_max", 0.0, 1.0, open_low=True),
    Relation(("w_min", "w_max"), lambda low, high: low <= high, "w_min <= w_max"),
)

# Where L-DiffRec's item embeddings come from (see recbole_diffrec.clustering).
EMBEDDING_SOURCES = ("file", "lightgcn", "svd")


def _embedding_source_problem(config: Any) -> Optional[str]:
    if config["n_cate"] == 1:  # one cluster needs no embeddings
        return None
    return Choice("item_emb_source", EMBEDDING_SOURCES).problem(config)


LATENT: Tuple[Rule, ...] = (
    Int("n_cate", 1),
    IntList("in_dims"),
    IntList("out_dims", allow_empty=True),
    Relation(
        ("in_dims", "n_cate"),
        lambda dims, n_cate: min(dims) >= n_cate,
        "every size >= n_cate, so that each item cluster keeps a latent dimension",
    ),
    Check(_embedding_source_problem),
    *(
        NonNegative(key)
        for key in ("lamda", "anneal_cap", "vae_anneal_cap", "lr1", "lr2", "wd1", "wd2")
    ),
    Int("anneal_steps", 0),
    Int("vae_anneal_steps", 0),
    Fraction("ae_dropout"),
)

LR_DECAY: Tuple[Rule, ...] = (
    Int("lr_decay_step", 1, optional=True, null_means="no decay"),
    Number("lr_decay_gamma", 0.0, 1.0, open_low=True),
)


def _negative_sampling_problem(config: Any) -> Optional[str]:
    args = config["train_neg_sample_args"]
    if args in (None, {}) or args.get("distribution") in (None, "none"):
        return None
    return (
        f"train_neg_sample_args: got {args!r}; allowed: None (the loss ranks all items)"
    )


SEQUENCE: Tuple[Rule, ...] = PLUGIN + (
    Int("MAX_ITEM_LIST_LENGTH", 1),
    Int("hidden_size", 1),
    Int("n_layers", 1),
    Int("n_heads", 1),
    Relation(
        ("n_heads", "hidden_size"),
        lambda heads, hidden: hidden % heads == 0,
        "a divisor of hidden_size",
    ),
    Fraction("dropout"),
    Check(_negative_sampling_problem),
    *LR_DECAY,
    # The sequential models diffuse the target item's embedding: without noise there is
    # nothing to learn (DiffRec's noise_scale 0, a plain autoencoder, has no counterpart).
    Number(
        "noise_scale",
        0.0,
        1.0,
        open_low=True,
        note="the sequential models need noise on the target embedding",
    ),
    *NOISE,
)

ATTENTION_MASKS = ("reference", "padding")  # DiffuRec
STEP_EMBEDDING_AT = ("all", "target")  # SeqDiffRec

# ------------------------------------------------------------------ the models' rules
DIFFREC_RULES = DIFFREC
TDIFFREC_RULES = DIFFREC + TIME_WEIGHTS
LDIFFREC_RULES = DIFFREC + LATENT
LTDIFFREC_RULES = DIFFREC + LATENT + TIME_WEIGHTS
DIFFUREC_INFERENCE_STEPS = Int(
    "inference_steps", 1, "steps", optional=True, null_means="the full chain"
)


def _seqdiffrec_inference_steps_problem(config: Any) -> Optional[str]:
    """The chain runs from inference_step (steps when that is null) down to 0."""
    start = "steps" if config["inference_step"] is None else "inference_step"
    rule = Int(
        "inference_steps",
        1,
        start,
        optional=True,
        null_means="one denoiser call at inference_step",
    )
    return rule.problem(config)


SEQDIFFREC_INFERENCE_STEPS = Check(_seqdiffrec_inference_steps_problem)

DIFFUREC_RULES = SEQUENCE + (
    DIFFUREC_INFERENCE_STEPS,
    Fraction("emb_dropout"),
    Choice("attention_mask", ATTENTION_MASKS),
    NonNegative("lambda_uncertainty"),
)
SEQDIFFREC_RULES = SEQUENCE + (
    Int("inference_draws", 1),
    Int("inference_step", 1, "steps", optional=True, null_means="the last step"),
    SEQDIFFREC_INFERENCE_STEPS,
    Choice("step_embedding_at", STEP_EMBEDDING_AT),
    NonNegative("mse_weight"),
)
