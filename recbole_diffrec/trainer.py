"""Trainers with checkpoints that load on modern torch without unpickling code.

RecBole 1.2.1 saves its ``Config`` object (and numpy/scipy objects) in checkpoints and reads
them back with ``torch.load`` defaults, which on torch >= 2.6 means ``weights_only=True``:
``Trainer.evaluate(load_best_model=True)`` then fails. Here checkpoints hold only tensors
and plain Python values, so they load with ``weights_only=True``; anything else (a RecBole
checkpoint, say) is only unpickled when the caller says it trusts the file.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import pickle
from functools import lru_cache
from typing import Any, Callable, Dict, Optional

import numpy as np
import scipy.sparse as sp
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import get_trainer as recbole_get_trainer
from recbole.utils import set_color

from . import distributed
from .diffusion.resample import BatchShard, batch_shard
from .models.checks import LR_DECAY, check_settings
from .registry import is_plugin_model, registry_name
from .training_state import (
    STATE_FORMAT,
    NonFiniteLossError,
    capture_rng,
    non_finite_message,
    restore_rng,
    save_atomic,
    state_file_for,
)
from .utils import plain

CHECKPOINT_FORMAT = "recbole_diffrec-checkpoint-1"


def encode_array(value: Any) -> Any:
    """numpy / scipy values as tensors, tagged so :func:`decode_array` restores them."""
    if isinstance(value, np.ndarray):
        return {"__numpy__": torch.from_numpy(np.ascontiguousarray(value))}
    if sp.issparse(value):
        csr = sp.csr_matrix(value)
        return {
            "__scipy__": value.format,
            "data": torch.from_numpy(csr.data),
            "indices": torch.from_numpy(csr.indices.astype(np.int64)),
            "indptr": torch.from_numpy(csr.indptr.astype(np.int64)),
            "shape": list(csr.shape),
        }
    if isinstance(value, dict):
        return {k: encode_array(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode_array(value: Any) -> Any:
    if isinstance(value, dict):
        if "__numpy__" in value:
            return value["__numpy__"].numpy()
        if "__scipy__" in value:
            csr = sp.csr_matrix(
                (
                    value["data"].numpy(),
                    value["indices"].numpy(),
                    value["indptr"].numpy(),
                ),
                shape=tuple(value["shape"]),
            )
            return csr.asformat(value["__scipy__"])
        return {k: decode_array(v) for k, v in value.items()}
    return value


def load_checkpoint(
    path: str, trusted: bool = False, map_location=None
) -> Dict[str, Any]:
    """Read a checkpoint; unpickle arbitrary objects only when ``trusted``. A missing,
    truncated or foreign file is one error naming it (torch's own range from KeyError to
    EOFError with no message)."""
    # Imported here: this edit stays inside the function (the import block is shared).
    from .errors import BadInputError, MissingInputError

    allowed = "allowed: a model file saved by a run (saved/<model>-<date>.pth)"
    if not os.path.isfile(path):
        raise MissingInputError(f"checkpoint {path}: does not exist; {allowed}")
    with open(path, "rb") as f:
        magic = f.read(4)
    # torch.save writes a zip archive (PK..); torch's legacy format is a pickle (0x80).
    if not (magic.startswith(b"PK") or magic.startswith(b"\x80")):
        raise BadInputError(
            f"checkpoint {path}: not a torch checkpoint (starts with {magic!r}); {allowed}"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise BadInputError(f"checkpoint {path}: unreadable ({err}); {allowed}")
        raise BadInputError(
            f"checkpoint {path}: holds pickled Python objects (e.g. a RecBole checkpoint) and "
            "was not loaded; pass trusted=True only if you trust where the file came from"
        ) from err
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        first = (str(err).splitlines() or [""])[0][:120]
        raise BadInputError(
            f"checkpoint {path}: truncated or not a torch checkpoint "
            f"({type(err).__name__}: {first}); {allowed}"
        ) from err


class SafeCheckpointMixin:
    """Overrides the three places RecBole's trainers write and read checkpoints, writes a
    training-state file at epoch boundaries (see :mod:`.training_state`) and resumes from
    one, and stops on the first non-finite loss.

    Data-parallel (``config["single_spec"]`` False, set by the plugin's Config in a
    launched process): the model is wrapped in DDP (gloo on CPU, NCCL on CUDA), each rank
    trains on its shard of every global batch with its loss weighted so the averaged
    gradient is the global batch's, evaluation is sharded over users and gathered, and
    only rank 0 writes files (see :mod:`.distributed`)."""

    def __init__(self, config, model):
        self.data_parallel = not config["single_spec"]
        # RecBole's constructor creates checkpoint_dir with a check-then-create: ranks
        # starting together race on it (one fails with FileExistsError). Create it first.
        os.makedirs(config["checkpoint_dir"], exist_ok=True)
        if self.data_parallel:
            # RecBole's constructor would build a CUDA-only DDP (device_ids=[local_rank]);
            # ranks other than 0 write no tensorboard folder.
            with distributed.single_spec(config):
                with _no_tensorboard(distributed.rank() != 0):
                    super().__init__(config, model)
            self._wrap_ddp()
        else:
            super().__init__(config, model)
        self._eval_counts: Optional[list] = None
        self.valid_curve: list = []  # one entry per evaluation, kept across resumes
        self.state_file: Optional[str] = None
        self._pending_rng: Optional[Dict[str, Any]] = None
        self._train_generator: Optional[torch.Generator] = None
        self._saving = False
        self._epochs_done = 0
        every = config["checkpoint_every"] if "checkpoint_every" in config else None
        self.checkpoint_every = int(
            every if every is not None else max(self.eval_step, 1)
        )
        # RecBole's TraditionalTrainer (EASE, ItemKNN, ...) sets epochs = 1 after eval_step
        # was clamped to the configured epochs: with eval_step > 1 it never evaluates, never
        # saves, and evaluate(load_best_model=True) then fails on a missing file.
        if self.eval_step > self.epochs:
            self.eval_step = self.epochs

    def _wrap_ddp(self) -> None:
        from torch.nn.parallel import DistributedDataParallel

        device = torch.device(self.config["device"])
        # Buffers (e.g. the importance sampler's history) stay equal on all ranks by
        # construction: synced once at the start, not before every forward.
        newer = (
            "forward_sync_buffers"
            in inspect.signature(DistributedDataParallel).parameters
        )
        sync = {"forward_sync_buffers" if newer else "broadcast_buffers": False}
        self.distributed_model = DistributedDataParallel(
            self.model,
            device_ids=[device.index] if device.type == "cuda" else None,
            **sync,
        )
        # One file name for all ranks (each rank's clock named its own).
        self.saved_model_file = distributed.broadcast_object(self.saved_model_file)

    def _writes_files(self) -> bool:
        return not self.data_parallel or distributed.rank() == 0

    def _load_shared(self, path: str, map_location=None) -> Dict[str, Any]:
        """A checkpoint or state file read by rank 0 and sent to the others (who may run
        on machines without the file)."""
        if not self.data_parallel:
            return load_checkpoint(path, map_location=map_location)
        loaded = (
            load_checkpoint(path, map_location="cpu") if self._writes_files() else None
        )
        return distributed.broadcast_object(loaded)

    def _build_optimizer(self, **kwargs):
        groups = getattr(self.model, "optimizer_param_groups", None)
        if "params" not in kwargs and groups is not None:
            kwargs["params"] = (
                groups()
            )  # per-part learning rates (e.g. L-DiffRec's lr1/lr2)
        learner = kwargs.get("learner", self.learner).lower()
        if is_plugin_model(type(self.model)) and learner in ("adam", "adamw"):
            # The fused kernels run the same update rule in one pass over the parameters.
            cls = torch.optim.AdamW if learner == "adamw" else torch.optim.Adam
            params = list(kwargs.get("params", self.model.parameters()))
            try:
                return cls(
                    params,
                    lr=kwargs.get("learning_rate", self.learning_rate),
                    weight_decay=kwargs.get("weight_decay", self.weight_decay),
                    fused=True,
                )
            except (RuntimeError, TypeError, ValueError):
                kwargs["params"] = params
        return super()._build_optimizer(**kwargs)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self._writes_files():
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": self.config["model"],
            "registry_name": registry_name(type(self.model)),
            "model_class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "dataset": self.config["dataset"],
            "config": plain(self.config.final_config_dict),
            "external_config": plain(self.config.external_config_dict),
            "epoch": int(epoch),
            "cur_step": int(self.cur_step),
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": encode_array(self.model.other_parameter()),
            "optimizer": self.optimizer.state_dict(),
        }
        save_atomic(state, saved_model_file)
        if verbose:
            self.logger.info(
                set_color("Saving current", "blue") + f": {saved_model_file}"
            )

    def _restore_model(self, checkpoint: Dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(decode_array(checkpoint.get("other_parameter")))

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        checkpoint = self._load_shared(resume_file, map_location=self.device)
        self.saved_model_file = resume_file
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if checkpoint["model"].lower() != self.config["model"].lower():
            self.logger.warning(
                f"checkpoint {resume_file} was written for model {checkpoint['model']}, "
                f"resuming {self.config['model']}"
            )
        self._restore_model(checkpoint)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(
            f"Checkpoint loaded. Resume training from epoch {self.start_epoch}"
        )

    def fit(
        self,
        train_data,
        valid_data=None,
        verbose=True,
        saved=True,
        show_progress=False,
        callback_fn=None,
    ):
        self._saving = bool(saved)
        self._epochs_done = self.start_epoch
        self._train_generator = getattr(train_data, "generator", None)
        if saved and self.state_file is None and self.checkpoint_every > 0:
            self.state_file = state_file_for(self.saved_model_file)
        if self._pending_rng is not None:
            # Last, after the model, trainer and dataloaders drew their own numbers.
            restore_rng(self._pending_rng, self._train_generator)
            cuda = self._pending_rng.get("cuda")
            device = torch.device(self.config["device"])
            if self.data_parallel and cuda is not None and device.type == "cuda":
                # Rank 0's state for its own device, on every rank's own device: the
                # batch-shaped draws stay the same on all ranks after a resume.
                torch.cuda.set_rng_state(cuda[0].cpu(), device=device)
            self._pending_rng = None
            if self._training_ended():
                # RecBole's fit would overwrite the best model with the current one.
                self.logger.info("The resumed run had finished training.")
                return self.best_valid_score, self.best_valid_result
        result = super().fit(
            train_data, valid_data, verbose, saved, show_progress, callback_fn
        )
        if self._saving and self.checkpoint_every > 0:
            self._write_training_state(self._epochs_done)
        return result

    def _training_ended(self) -> bool:
        stopped = self.cur_step > self.stopping_step  # RecBole's early-stopping rule
        return self.start_epoch >= self.epochs or stopped

    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        every = self.checkpoint_every
        if self._saving and every > 0 and epoch_idx > self.start_epoch:
            if epoch_idx % every == 0:
                self._write_training_state(epoch_idx)
        model = self.model
        if self.data_parallel:
            self._check_train_loader(train_data)
        own = model.__dict__.get("calculate_loss")
        guarded = self._guard_loss(model.calculate_loss, epoch_idx, len(train_data))
        model.calculate_loss = guarded
        try:
            loss = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
            self._epochs_done = epoch_idx + 1
            return loss
        finally:
            if own is None:
                del model.calculate_loss
            else:
                model.calculate_loss = own

    def _guard_loss(self, loss_func: Callable, epoch_idx: int, batches: int):
        """``loss_func`` that raises :class:`NonFiniteLossError` on a NaN/Inf loss, before
        the optimizer step, so the model and the files written so far stay good."""
        counter = iter(range(1, batches + 1))
        if self.data_parallel:
            loss_func = self._sharded_loss(loss_func)

        def guarded(interaction):
            losses = loss_func(interaction)
            batch = next(counter, batches)
            parts = losses if isinstance(losses, tuple) else (losses,)
            if not all(bool(torch.isfinite(part).all()) for part in parts):
                kept = (self.state_file, self.saved_model_file)
                message = non_finite_message(epoch_idx, batch, batches, kept)
                raise NonFiniteLossError(message)
            return losses

        return guarded

    def _check_train_loader(self, train_data) -> None:
        from torch.utils.data.distributed import DistributedSampler

        sampler = getattr(train_data, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            raise ValueError(
                "train_data: got a loader with RecBole's DistributedSampler (each rank "
                "a different subset); allowed: loaders from recbole_diffrec.data."
                "data_preparation, which give every rank the global batches"
            )
        if sampler is not None and not hasattr(sampler, "set_epoch"):
            # RecBole calls set_epoch when distributed; the loader's generator, seeded
            # alike on every rank, already reshuffles each epoch as one process does.
            sampler.set_epoch = lambda epoch: None

    def _sharded_loss(self, loss_func: Callable) -> Callable:
        """``loss_func`` on this rank's rows of the global batch, weighted by
        n_rank / n_global x world size (DDP averages the gradients over the ranks, so
        the result is the global batch's gradient); the value returned is the global
        batch's loss (the same on every rank, so all stop together on a NaN)."""
        rank, world = distributed.rank(), distributed.world_size()

        def sharded(interaction):
            shard = BatchShard(rank, world, len(interaction))
            with batch_shard(shard):
                losses = loss_func(interaction[shard.start : shard.stop])
            weight = shard.size * world / shard.total
            parts = losses if isinstance(losses, tuple) else (losses,)
            if shard.size == 0:
                # The last batch shorter than the world: this rank ran the model on no
                # rows (its draws and collectives kept in step) and adds nothing.
                parts = [torch.nan_to_num(part) for part in parts]
            weighted = [part * weight if weight != 1 else part for part in parts]
            total = torch.stack([part.detach().float() for part in weighted])
            total = distributed.all_reduce_sum(total) / world
            out = tuple(
                part + (value.to(part.dtype) - part.detach())
                for part, value in zip(weighted, total)
            )
            return out if isinstance(losses, tuple) else out[0]

        return sharded

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self.valid_curve.append(
            {"epoch": self._epochs_done - 1, "score": float(score), **plain(result)}
        )
        return score, result

    def _write_training_state(self, epochs_done: int) -> None:
        """Everything the next epoch depends on, at an epoch boundary (after evaluation)."""
        if not self._writes_files():
            return
        state = {
            "format": STATE_FORMAT,
            "model": self.config["model"],
            "dataset": self.config["dataset"],
            "external_config": plain(self.config.external_config_dict),
            "epochs_done": int(epochs_done),
            "cur_step": int(self.cur_step),
            "best_valid_score": float(self.best_valid_score),
            "best_valid_result": plain(self.best_valid_result),
            "best_model_file": self.saved_model_file,
            "train_loss": [[int(e), plain(v)] for e, v in self.train_loss_dict.items()],
            "valid_curve": plain(self.valid_curve),
            "state_dict": self.model.state_dict(),
            "other_parameter": encode_array(self.model.other_parameter()),
            "optimizer": self.optimizer.state_dict(),
            "rng": capture_rng(self._train_generator),
        }
        save_atomic(state, self.state_file)

    def resume_training(self, state_file: str) -> None:
        """Load a training-state file; the next :meth:`fit` continues after its epoch."""
        state = self._load_shared(str(state_file), map_location="cpu")
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"resume: {state_file} is not a training-state file")
        for key in ("model", "dataset"):
            if state[key] != self.config[key]:
                raise ValueError(
                    f"resume: {state_file} was written for {key} {state[key]}, "
                    f"this run is {self.config[key]}"
                )
        self._restore_model(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = state["epochs_done"]
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self.best_valid_result = state["best_valid_result"]
        self.saved_model_file = state["best_model_file"]
        self.train_loss_dict = {e: loss for e, loss in state["train_loss"]}
        self.valid_curve = list(state["valid_curve"])
        self.state_file = str(state_file)
        self._pending_rng = state["rng"]  # restored in fit, after everything else drew
        self.logger.info(f"Resuming from {state_file} at epoch {self.start_epoch}")

    @torch.no_grad()
    def evaluate(
        self, eval_data, load_best_model=True, model_file=None, show_progress=False
    ):
        if load_best_model and eval_data:
            checkpoint_file = model_file or self.saved_model_file
            self._restore_model(
                self._load_shared(checkpoint_file, map_location=self.device)
            )
            self.logger.info(
                f"Loading model structure and parameters from {checkpoint_file}"
            )
        if not self.data_parallel or not eval_data:
            return super().evaluate(
                eval_data, load_best_model=False, show_progress=show_progress
            )
        # Full ranking: each batch's users are cut into world-size shards, each rank
        # scores its shard, and the collected top-k lists are gathered in global order.
        # Sampled-negative evaluation is not sharded (every rank scores every row).
        sharded = isinstance(eval_data, FullSortEvalDataLoader)
        self._eval_counts = [] if sharded else None
        collector = self.eval_collector
        own = collector.get_data_struct

        def gathered():
            struct = own()
            if self._eval_counts is not None:
                distributed.gather_struct(struct, self._eval_counts)
            return struct

        collector.get_data_struct = gathered
        try:
            return super().evaluate(
                eval_data, load_best_model=False, show_progress=show_progress
            )
        finally:
            del collector.get_data_struct
            self._eval_counts = None

    def _map_reduce(self, result, num_sample):
        # RecBole averages per-rank metrics weighted by rows; here the ranks' collected
        # rows were gathered before the metrics, which are already the global ones.
        return result

    def _full_sort_batch_eval(self, batched_data):
        if self._eval_counts is None:
            return super()._full_sort_batch_eval(batched_data)
        interaction, history_index, positive_u, positive_i = batched_data
        shard = BatchShard(
            distributed.rank(), distributed.world_size(), len(interaction)
        )
        start, stop = shard.start, shard.stop

        def rows(row, *columns):
            keep = (row >= start) & (row < stop)
            return (row[keep] - start, *(c[keep] for c in columns))

        if history_index is not None:
            history_index = rows(*history_index)
        positive_u, positive_i = rows(positive_u, positive_i)
        self._eval_counts.append(shard.size)
        with batch_shard(shard):
            return super()._full_sort_batch_eval(
                (interaction[start:stop], history_index, positive_u, positive_i)
            )


class StepDecayTrainer(RecBoleTrainer):
    """RecBole's Trainer with a step learning-rate decay (torch's StepLR rule):
    lr = learning_rate x lr_decay_gamma ** (epoch // lr_decay_step).

    Computed from the epoch number rather than kept as scheduler state, so a resumed run
    continues on the right rate. ``lr_decay_step: ~`` keeps the rate constant.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        check_settings(config, LR_DECAY)
        step, gamma = config["lr_decay_step"], config["lr_decay_gamma"]
        self.lr_decay_step, self.lr_decay_gamma = step, float(gamma)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]

    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        if self.lr_decay_step is not None:
            factor = self.lr_decay_gamma ** (epoch_idx // self.lr_decay_step)
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base * factor
        return super()._train_epoch(train_data, epoch_idx, *args, **kwargs)


class _NoWriter:
    """Stands in for a tensorboard SummaryWriter: every call does nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def _no_tensorboard(active: bool):
    import recbole.trainer.trainer as recbole_trainer

    saved = recbole_trainer.get_tensorboard
    if active:
        recbole_trainer.get_tensorboard = lambda logger: _NoWriter()
    try:
        yield
    finally:
        recbole_trainer.get_tensorboard = saved


@lru_cache(maxsize=None)
def _with_safe_checkpoints(base: type) -> type:
    return type(base.__name__, (SafeCheckpointMixin, base), {"__module__": __name__})


# RecBole's general Trainer with safe checkpoints, for drop-in use in RecBole scripts.
Trainer = _with_safe_checkpoints(RecBoleTrainer)


def get_trainer(model_class: type) -> type:
    """The RecBole trainer for ``model_class``, with checkpoints that work on torch >= 2.6."""
    # Imported here: this edit stays inside the function (the import block is shared).
    from recbole.trainer import TraditionalTrainer
    from recbole.utils import ModelType

    if is_plugin_model(model_class) and model_class.type == ModelType.TRADITIONAL:
        # Training-free plugin models (GF-CF, BSPM): one pass, as for RecBole's EASE.
        base = TraditionalTrainer
    elif is_plugin_model(model_class):
        decays = getattr(model_class, "step_lr_decay", False)
        base = StepDecayTrainer if decays else RecBoleTrainer
    else:
        base = recbole_get_trainer(model_class.type, model_class.__name__)
    return _with_safe_checkpoints(base)
