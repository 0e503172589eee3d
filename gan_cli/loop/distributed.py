"""Data-parallel training across processes with torch.distributed, launched by torchrun
(`torchrun --nproc_per_node=N -m gan_cli ...`) or by SLURM tasks through the submitit launcher.

Each rank holds its own shard of the device-resident data, draws its own batches and noise,
and the gradients of each update are averaged over ranks with one all_reduce of the flattened
gradients, as stylegan2-ada-pytorch does, rather than by wrapping the networks in
DistributedDataParallel: a GAN step runs D several times per backward (real, fake) and runs G
without a backward through it during D's update, and DDP's reducer expects each forward of a
wrapped module to be followed by exactly one backward. BatchNorm statistics stay per rank (each
normalizes with its own batch, as DDP's default also does); samples, metrics and checkpoints use
rank 0's buffers. Only rank 0 writes TensorBoard, samples, checkpoints and metrics.json.

A rank that stops answering (frozen, swapped out, hung in a driver) would leave the others waiting
in a collective: every collective here has `trainer.dist_timeout_minutes`, after which each waiting
rank checks in through the rendezvous store, and the ranks that did not are named in one line.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TypeVar

import torch
import torch.distributed as dist

from gan_cli.core.errors import GanCliError

T = TypeVar("T")

log = logging.getLogger("gan_cli")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = Ranks()  # the default everywhere: one process, rank 0 of 1


def launched_ranks() -> Ranks:
    """What torchrun says (RANK/WORLD_SIZE/LOCAL_RANK), or, in a SLURM job with several tasks
    (the submitit launcher's tasks_per_node), what submitit derives from SLURM, master address
    and port included."""
    env = os.environ
    if "WORLD_SIZE" not in env and int(env.get("SLURM_NTASKS", 1)) > 1 and "SLURM_PROCID" in env:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if "WORLD_SIZE" in env:
        return Ranks(int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    return Ranks()


class RankStopped(GanCliError):
    """A collective timed out or lost a peer: which ranks did not check in afterwards."""


_store: dist.Store | None = None  # the rendezvous store, for the roll call after a failed collective
_timeout = timedelta(minutes=10)


def init(device: torch.device, timeout_minutes: float = 10.0) -> Ranks:
    """Join the process group (NCCL on CUDA, gloo otherwise); a no-op for a single process.
    Collectives wait at most `timeout_minutes` (gloo raises then, which `collective` reports; NCCL's
    watchdog ends the process with its own message)."""
    global _store, _timeout
    ranks = launched_ranks()
    if not ranks.enabled or dist.is_initialized():
        return ranks
    _timeout = timedelta(minutes=timeout_minutes)
    _store, _, _ = next(dist.rendezvous("env://", ranks.rank, ranks.world_size, timeout=_timeout))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=_store, rank=ranks.rank,
                            world_size=ranks.world_size, timeout=_timeout)
    log.info("rank %d of %d (%s)", ranks.rank, ranks.world_size, dist.get_backend())
    return ranks


def collective(call: Callable[[], T]) -> T:
    """Run one collective; when it fails (a timeout, a peer gone), end with one line naming the
    ranks that stopped answering instead of gloo's traceback."""
    try:
        return call()
    except RuntimeError as err:
        if not lost_peer(err):
            raise
        rank, world_size = dist.get_rank(), dist.get_world_size()
        reason = re.sub(r"^\[[^\]]*\] ", "", str(err).splitlines()[0] if str(err) else type(err).__name__)[:160]
        missing = roll_call(rank, world_size)
        if missing is None and rank != 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
            missing = [0]  # without torchrun's agent, rank 0's process serves the store: it is the one not answering
        if missing is None:
            raise RankStopped(f"rank {rank}: a collective failed and the other ranks could not be asked why: "
                              f"{reason}") from None
        if not missing:
            raise
        names = ", ".join(str(r) for r in missing)
        raise RankStopped(f"rank{'s' if len(missing) > 1 else ''} {names} of {world_size} stopped answering (rank "
                          f"{rank}'s collective: {reason}; trainer.dist_timeout_minutes="
                          f"{_timeout.total_seconds() / 60:g}): ending the run, resume it with trainer.resume=auto"
                          ) from None


def lost_peer(err: RuntimeError) -> bool:
    """A timeout or a vanished peer, not this rank's own mistake: gloo raises a plain RuntimeError
    whose message starts with its source path ("[.../gloo/transport/tcp/...] Timed out waiting")."""
    return isinstance(err, dist.DistBackendError) or "gloo" in str(err).split("]", 1)[0]


def roll_call(rank: int, world_size: int) -> list[int] | None:
    """Every rank still running checks in through the store; the others are the ones that stopped.
    The ranks waiting in the same collective time out within about a step of each other, so they
    are waited for up to a minute (less with a short timeout). None: the store is gone too."""
    if _store is None:
        return None
    wait = min(60.0, _timeout.total_seconds())
    try:
        _store.set_timeout(timedelta(seconds=wait))
        _store.set(f"gan_cli/answering/{rank}", "1")
        deadline = time.monotonic() + wait
        while True:
            missing = [r for r in range(world_size) if not _store.check([f"gan_cli/answering/{r}"])]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.2)
    except RuntimeError:
        return None


def device_for(spec_device: torch.device, ranks: Ranks) -> torch.device:
    """One GPU per rank: cuda -> cuda:LOCAL_RANK."""
    if ranks.enabled and spec_device.type == "cuda" and spec_device.index is None:
        return torch.device("cuda", ranks.local_rank)
    return spec_device


def broadcast_parameters(*modules: torch.nn.Module) -> None:
    """Start every rank from rank 0's weights and buffers."""
    if dist.is_initialized():
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                collective(partial(dist.broadcast, tensor.data, src=0))


def average_gradients(optimizer: torch.optim.Optimizer) -> None:
    """One all_reduce over all of the optimizer's gradients (missing ones count as zeros)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)  # same memory format as the parameter
    flat = torch.cat([p.grad.reshape(-1) for p in params])  # (sum of numels,)
    collective(lambda: dist.all_reduce(flat))
    flat /= dist.get_world_size()
    for param, chunk in zip(params, flat.split([p.numel() for p in params]), strict=True):
        param.grad.copy_(chunk.view(param.grad.shape))


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is True on any: stops must be collective or a rank hangs."""
    return any_ranks([flag], device)[0]


def any_ranks(flags: list[bool], device: torch.device) -> list[bool]:
    if not dist.is_initialized():
        return flags
    values = torch.tensor([float(flag) for flag in flags], device=device)
    collective(lambda: dist.all_reduce(values, op=dist.ReduceOp.MAX))
    return [bool(v) for v in values.tolist()]


def broadcast_string(text: str) -> str:
    if not dist.is_initialized():
        return text
    holder = [text]
    collective(lambda: dist.broadcast_object_list(holder, src=0))
    return str(holder[0])


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
