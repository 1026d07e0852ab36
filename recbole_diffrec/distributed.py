"""Data-parallel training on torch.distributed, driven by RecBole's own flags.

RecBole 1.2.1 reads ``nproc`` (processes on this machine), ``world_size`` (processes in
all; -1 = nproc), ``ip``/``port`` (the rendezvous of rank 0), ``group_offset`` (the first
rank on this machine) and ``gpu_id``, but always initialises NCCL, so it cannot run on a
CPU. Here the backend follows the device (``dist_backend: ~`` = gloo on CPU, nccl on
CUDA; set it to override) and collectives time out after ``dist_timeout`` seconds.

How a run is made equal to one process on the same global batch:

* every rank iterates the same global batches (the train loader's generator is seeded the
  same way on all ranks, so the per-epoch reshuffle is the one a single process makes) and
  keeps its contiguous shard of rows (:class:`~.diffusion.resample.BatchShard`; per-rank
  batch = global / world size);
* random draws shaped like the batch draw the global batch's tensor and keep the shard's
  rows (:func:`~.diffusion.resample.draw_rows`); the importance sampler records the
  gathered (t, loss) of the whole batch;
* each rank's loss is weighted by ``n_rank / n_global x world_size``, so DDP's averaged
  gradient is the gradient of the global batch's mean loss;
* evaluation shards each batch's users over the ranks and gathers the collected top-k
  lists in global order (:func:`gather_struct`) before the metrics are computed.

:func:`launch` starts the local processes (spawn) and turns the first failure of any rank
into one :class:`DistributedRunError` naming the rank; the other ranks are stopped, not
left waiting in a collective.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist

from .errors import BadInputError

BACKENDS = ("gloo", "nccl")
DEFAULT_TIMEOUT = 600.0


class DistributedRunError(RuntimeError):
    """A rank of a data-parallel run failed; the message names the rank and its error."""

    def __init__(self, rank: int, error_type: str, message: str, details: str = ""):
        self.rank, self.error_type, self.details = rank, error_type, details
        super().__init__(f"rank {rank} failed: {error_type}: {message}")


@dataclass(frozen=True)
class DistSettings:
    nproc: int
    world_size: int
    offset: int
    ip: str
    port: Optional[int]
    backend: str
    timeout: float
    cuda: bool

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.nproc > 1

    @property
    def multi_node(self) -> bool:
        return self.world_size > self.nproc


def _get(config: Any, key: str, default: Any = None) -> Any:
    try:
        value = config[key] if key in config else default
    except (KeyError, TypeError):
        value = default
    return default if value is None else value


def _int(key: str, value: Any, allowed: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise BadInputError(f"{key}: got {value!r}; allowed: {allowed}")
    return value


def gpu_ids(config: Any) -> List[str]:
    value = _get(config, "gpu_id", "")
    if isinstance(value, (tuple, list)):
        value = ",".join(map(str, value))
    return [g for g in str(value).split(",") if g.strip()]


def settings(config: Any) -> DistSettings:
    """The run's data-parallel settings, checked: one error naming the key and what is
    allowed for the first bad value."""
    nproc = _int("nproc", _get(config, "nproc", 1), "an integer >= 1")
    if nproc < 1:
        raise BadInputError(f"nproc: got {nproc}; allowed: an integer >= 1")
    world = _int(
        "world_size", _get(config, "world_size", -1), "-1 (= nproc) or an integer >= 1"
    )
    if world == -1:
        world = nproc
    if world < 1:
        raise BadInputError(
            f"world_size: got {world}; allowed: -1 (= nproc) or an integer >= 1"
        )
    if world < nproc:
        raise BadInputError(
            f"world_size: got {world} with nproc={nproc}; allowed: -1 or >= nproc "
            "(processes on all machines)"
        )
    offset_key = (
        "group_offset" if _get(config, "group_offset") is not None else "offset"
    )
    offset = _int(offset_key, _get(config, offset_key, 0), "an integer >= 0")
    if offset < 0 or offset + nproc > world:
        raise BadInputError(
            f"{offset_key}: got {offset} with nproc={nproc}, world_size={world}; allowed: "
            f"0 <= {offset_key} <= world_size - nproc (the first rank on this machine)"
        )
    ip = _get(config, "ip", "localhost")
    if not isinstance(ip, str) or not ip.strip():
        raise BadInputError(f"ip: got {ip!r}; allowed: rank 0's host name or address")
    port = _get(config, "port")
    if port is not None:
        port = _int("port", port, "an integer in 1..65535 or ~ (a free port)")
        if not 1 <= port <= 65535:
            raise BadInputError(
                f"port: got {port}; allowed: an integer in 1..65535 or ~ (a free port)"
            )
    elif world > nproc:
        raise BadInputError(
            f"port: got ~ with world_size={world} > nproc={nproc}; allowed: the port "
            "rank 0 listens on, the same on every machine"
        )
    timeout = _get(config, "dist_timeout", DEFAULT_TIMEOUT)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not timeout > 0
    ):
        raise BadInputError(
            f"dist_timeout: got {timeout!r}; allowed: seconds > 0 that a collective "
            "may wait for the other ranks"
        )
    cuda = bool(gpu_ids(config)) and torch.cuda.is_available()
    backend = _get(config, "dist_backend")
    if backend is None:
        backend = "nccl" if cuda else "gloo"
    if not isinstance(backend, str) or backend.lower() not in BACKENDS:
        raise BadInputError(
            f"dist_backend: got {backend!r}; allowed: ~ (gloo on CPU, nccl on CUDA), "
            + ", ".join(BACKENDS)
        )
    backend = backend.lower()
    if backend == "nccl" and not cuda:
        raise BadInputError(
            "dist_backend: got 'nccl' without a CUDA device (gpu_id empty or no GPU); "
            "allowed: gloo (or ~) on CPU"
        )
    if world > 1 and cuda and len(gpu_ids(config)) < nproc:
        raise BadInputError(
            f"gpu_id: got {','.join(gpu_ids(config))!r} for nproc={nproc}; allowed: one "
            "GPU per process on this machine (e.g. gpu_id: '0,1'), or gpu_id: '' for CPU"
        )
    return DistSettings(nproc, world, offset, ip, port, backend, float(timeout), cuda)


def check_run(config: Any) -> DistSettings:
    """:func:`settings` plus the checks that need the model and batch size."""
    found = settings(config)
    if not found.enabled:
        return found
    model_class = getattr(config, "model_class", None)
    from recbole.utils import ModelType

    model_type = _get(config, "MODEL_TYPE")
    if model_type == ModelType.TRADITIONAL:
        name = getattr(model_class, "__name__", _get(config, "model"))
        raise BadInputError(
            f"nproc: got {found.nproc} (world_size {found.world_size}) for {name}, which "
            "trains in one closed-form pass; allowed: nproc: 1 and world_size: -1 for "
            "training-free models"
        )
    batch = _get(config, "train_batch_size", 0)
    if isinstance(batch, int) and batch < found.world_size:
        raise BadInputError(
            f"train_batch_size: got {batch} for world_size={found.world_size}; allowed: "
            "at least one row per process (the global batch is cut into world_size shards)"
        )
    return found


# ----------------------------------------------------------------- process group
# Set in each launched process before its Config is built (see Config._init_device).
_WORKER: Optional[Dict[str, Any]] = None


def worker_context() -> Optional[Dict[str, Any]]:
    return _WORKER


def init_process_group(config: Any, local_rank: int) -> torch.device:
    """Join the process group as rank ``group_offset + local_rank``; the device."""
    found = settings(config)
    rank = found.offset + local_rank
    if found.cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    port = found.port or (_WORKER or {}).get("port")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=found.backend,
            rank=rank,
            world_size=found.world_size,
            init_method=f"tcp://{found.ip}:{port}",
            timeout=timedelta(seconds=found.timeout),
        )
    return device


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_object(value: Any, src: int = 0) -> Any:
    """``value`` from rank ``src`` on every rank (itself when not distributed)."""
    if not active():
        return value
    box = [value if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(value: Any) -> List[Any]:
    if not active():
        return [value]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if active():
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def gather_struct(
    struct: Any, counts: Sequence[int], keys: Optional[Sequence[str]] = None
) -> None:
    """Replace each per-row entry of RecBole's evaluation ``DataStruct`` (``rec.*``,
    ``data.label``) by the rows of all ranks in global order: batch by batch, rank 0's
    rows of the batch, then rank 1's, ... ``counts`` are this rank's rows per batch."""
    if not active():
        return
    data = struct._data_dict
    keys = [
        k for k in (keys or list(data)) if k.startswith("rec.") or k == "data.label"
    ]
    local = {k: data[k].cpu() for k in keys if torch.is_tensor(data[k])}
    parts = all_gather_object((list(counts), local))
    for key, value in local.items():
        pieces = []
        splits = [
            list(torch.split(p[1][key], p[0])) if sum(p[0]) else [] for p in parts
        ]
        for batch in range(len(counts)):
            for r, split in enumerate(splits):
                if batch < len(split):
                    pieces.append(split[batch])
        data[key] = torch.cat(pieces).to(data[key].device)


# ----------------------------------------------------------------- launching
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _worker(
    local_rank: int, fn: Callable, args: tuple, folder: str, port: int, nproc: int
) -> None:
    global _WORKER
    _WORKER = {"local_rank": local_rank, "port": port}
    if "OMP_NUM_THREADS" not in os.environ:
        # The processes share this machine's cores (one process would use them all).
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    try:
        result = fn(local_rank, *args)
        if local_rank == 0:
            with open(os.path.join(folder, "result.pkl"), "wb") as f:
                pickle.dump(result, f)
    except BaseException as err:
        record = {
            "time": time.time(),
            "type": type(err).__name__,
            "message": str(err).strip().splitlines()[0] if str(err).strip() else "",
            "traceback": traceback.format_exc(),
            "comm": _is_comm_error(err),
        }
        with open(os.path.join(folder, f"error-{local_rank}.pkl"), "wb") as f:
            pickle.dump(record, f)
        raise
    finally:
        with contextlib.suppress(Exception):
            destroy_process_group()
        _WORKER = None


def _is_comm_error(err: BaseException) -> bool:
    """An error a rank gets because another rank went away (reported second)."""
    names = {"DistBackendError", "DistNetworkError", "DistStoreError"}
    text = str(err).lower()
    return type(err).__name__ in names or any(
        word in text
        for word in (
            "connection closed",
            "connection reset",
            "gloo",
            "nccl",
            "timed out",
        )
    )


def launch(fn: Callable, args: tuple, nproc: int, port: Optional[int] = None) -> Any:
    """Run ``fn(local_rank, *args)`` in ``nproc`` spawned processes; rank 0's result.

    ``port``: where rank 0 listens when the settings say ``port: ~`` (default: a free one).

    A rank that raises (or dies) ends the run: the others are terminated and one
    :class:`DistributedRunError` names the rank whose error came first (a rank whose
    collective broke because another left is reported only when nothing else failed).
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="recbole_diffrec-dist-") as folder:
        try:
            port = port or free_port()
            mp.spawn(
                _worker, args=(fn, args, folder, port, nproc), nprocs=nproc, join=True
            )
        except Exception as err:  # ProcessRaisedException / ProcessExitedException
            raise _first_failure(err, folder, nproc) from None
        path = os.path.join(folder, "result.pkl")
        if not os.path.isfile(path):
            raise DistributedRunError(0, "RuntimeError", "rank 0 returned no result")
        with open(path, "rb") as f:
            return pickle.load(f)


def _first_failure(err: Exception, folder: str, nproc: int) -> DistributedRunError:
    records = []
    for r in range(nproc):
        path = os.path.join(folder, f"error-{r}.pkl")
        if os.path.isfile(path):
            with open(path, "rb") as f:
                records.append((r, pickle.load(f)))
    if records:
        records.sort(key=lambda item: (item[1]["comm"], item[1]["time"]))
        r, record = records[0]
        return DistributedRunError(
            r, record["type"], record["message"], record["traceback"]
        )
    index = getattr(err, "error_index", 0)
    code = getattr(err, "exit_code", None)
    what = f"exit code {code}" if code is not None else str(err).strip()
    if getattr(err, "signal_name", None):
        what = f"killed by {err.signal_name}"
    return DistributedRunError(index, "ProcessExited", f"the process ended ({what})")


def quiet_logging() -> None:
    """Ranks other than 0 log errors only, to stderr, and write no log file."""
    import logging

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR)
    root.addHandler(handler)
    root.setLevel(logging.ERROR)


@contextlib.contextmanager
def local_only(config: Any) -> Iterator[None]:
    """Within the block this process builds and trains as one process (a Config built
    there joins no process group; trainers on ``config`` stay local)."""
    global _WORKER
    saved = _WORKER
    _WORKER = None
    try:
        with single_spec(config):
            yield
    finally:
        _WORKER = saved


@contextlib.contextmanager
def single_spec(config: Any) -> Iterator[None]:
    """Within the block the config says one process (RecBole's loaders and trainer
    constructors would otherwise build their own NCCL-only distributed parts)."""
    saved = config["single_spec"]
    config["single_spec"] = True
    try:
        yield
    finally:
        config["single_spec"] = saved
