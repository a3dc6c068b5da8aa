"""Multi-process training: the process group, the rank's device and the collectives the engine uses.

A run started by ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment) joins
one process group: ``nccl`` when it trains on CUDA (each process on ``cuda:LOCAL_RANK``), ``gloo``
on CPU. Without those variables (or with ``WORLD_SIZE=1``) every helper here is the single-process
identity, so the engine calls them unconditionally.

The global batch is ``data.batch_size`` whatever the world size: each rank serves ``batch /
world`` samples of every global batch (:func:`per_rank_batch`), and ``train.accumulate`` splits a
rank's share into micro-batches. Only rank 0 writes files (:func:`is_main`).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import Tensor

from kdlab.errors import KdlabError


@dataclass(frozen=True)
class Launch:
    """What torchrun put in the environment (rank 0 of 1 when nothing did)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    restart: int = 0  # TORCHELASTIC_RESTART_COUNT: > 0 after an elastic restart


def launch_env(env: dict[str, str] | None = None) -> Launch:
    """The launch variables of ``env`` (default ``os.environ``); bad values are one line."""
    env = os.environ if env is None else env
    try:
        return Launch(rank=int(env.get("RANK", 0)), world=int(env.get("WORLD_SIZE", 1)),
                      local_rank=int(env.get("LOCAL_RANK", 0)),
                      restart=int(env.get("TORCHELASTIC_RESTART_COUNT", 0)))
    except ValueError:
        raise KdlabError("RANK, WORLD_SIZE, LOCAL_RANK must be integers (set by torchrun); "
                         "start distributed runs with torchrun or `kdlab train --nproc N`") from None


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device, launch: Launch | None = None) -> torch.device:
    """The device of this process: ``cuda`` / ``cuda:N`` becomes ``cuda:LOCAL_RANK`` in a multi-process run."""
    launch = launch or launch_env()
    if device.type != "cuda" or launch.world <= 1:
        return device
    return torch.device("cuda", launch.local_rank)


def init(device: torch.device) -> Launch:
    """Join torchrun's process group (once) and return the launch; a no-op for single-process runs."""
    launch = launch_env()
    if launch.world <= 1 or (dist.is_available() and dist.is_initialized()):
        return launch
    if not dist.is_available():
        raise KdlabError("this torch build has no torch.distributed; run with one process")
    if device.type == "cuda":
        torch.cuda.set_device(rank_device(device, launch))
    timeout = datetime.timedelta(minutes=30)
    store = attempt_store(launch, timeout)
    if store is None:
        dist.init_process_group(backend=backend_for(device), timeout=timeout)
    else:
        dist.init_process_group(backend=backend_for(device), store=store, rank=launch.rank,
                                world_size=launch.world, timeout=timeout)
    return launch


def attempt_store(launch: Launch, timeout: datetime.timedelta) -> dist.Store | None:
    """torchrun's store seen under a prefix of this restart attempt (None: let torch read the env).

    torchrun keeps one store across elastic restarts; without a per-attempt prefix a restarted
    rank can read the address a dead rank of the previous attempt published and fail to connect
    ("Gloo connectFullMesh failed ... Connection refused"; pytorch/pytorch#167288).
    """
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not addr or not port or not port.isdigit():
        return None
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # the agent hosts the store
    base = dist.TCPStore(addr, int(port), launch.world, is_master=not agent and launch.rank == 0,
                         timeout=timeout, multi_tenant=True)
    return dist.PrefixStore(f"kdlab/attempt_{launch.restart}", base)


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on the process that writes files (rank 0; the only process of a single-process run)."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over ranks (in place, returned); ``t`` itself when single-process."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_cat(t: Tensor) -> Tensor:
    """The ranks' ``t`` concatenated along dim 0 in rank order (sizes may differ between ranks)."""
    if not active():
        return t
    w = dist.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(w)]
    dist.all_gather(sizes, n)
    sizes_i = [int(s) for s in sizes]
    top = max(sizes_i)
    padded = t if t.shape[0] == top else torch.cat([t, t.new_zeros((top - t.shape[0], *t.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes_i)])


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers of ``module`` (BatchNorm running statistics) to every rank, in place.

    Without SyncBatchNorm each rank updates its running statistics from its own samples after DDP's
    last broadcast; evaluating then would score every rank's part with other statistics than the
    ones rank 0 saves in ``best.pt``.
    """
    if active():
        with torch.no_grad():
            for b in module.buffers():
                dist.broadcast(b, src=0)


def gather_objects(obj: object) -> list[object] | None:
    """Every rank's picklable ``obj`` on rank 0, in rank order (None on the other ranks); ``[obj]`` single-process."""
    if not active():
        return [obj]
    out: list[object] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def per_rank_batch(batch_size: int, world: int, accumulate: int = 1) -> int:
    """Samples each rank serves per global batch; one line when ``world`` x ``accumulate`` does not divide it."""
    if batch_size % world:
        raise KdlabError(f"data.batch_size={batch_size} does not divide among {world} processes (the global "
                         f"batch is split evenly); use a multiple of {world}, e.g. "
                         f"data.batch_size={max(world, batch_size - batch_size % world)}")
    share = batch_size // world
    if share % accumulate:
        raise KdlabError(f"train.accumulate={accumulate} does not divide the {share} samples per process "
                         f"(data.batch_size={batch_size} over {world} processes); choose a divisor of {share}")
    return share


def local_policy(policy):
    """A :class:`~kdlab.engine.device.DevicePolicy` moved to this rank's device."""
    dev = rank_device(policy.device)
    return policy if dev == policy.device else replace(policy, device=dev)
