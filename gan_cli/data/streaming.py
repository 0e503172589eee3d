"""Which sampler serves a task's real batches, and the streaming one.

`make_sampler` is the one place the choice is made: any dataset but a converted one is resident on
the device (DeviceSampler); a converted one (converted.py) is loaded the same way when
`dataset.in_memory=true`, or when `auto` and its images fit `dataset.memory_budget_gb`, and is
otherwise streamed from its memory-mapped images.npy by StreamingSampler.

StreamingSampler serves the same batches as DeviceSampler: batch k of epoch e takes rows
perm[k*B:(k+1)*B] of the permutation (and horizontal flips) drawn from a CPU generator seeded with
(seed, e), of the rank's rows rank::world_size. On the CPU, where DeviceSampler draws from the same
generator, the two are bitwise equal; on CUDA DeviceSampler draws on the device, so a streaming
run is another (equally valid) shuffle. Batch k is still a pure function of (seed, k, rank):
resuming at step k starts a DataLoader whose batch numbers count from k, with no sampler state.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from gan_cli.core.errors import GanCliError
from gan_cli.data.converted import IMAGES, OnDiskData
from gan_cli.data.datasets import DeviceSampler, ImageData, epoch_draws, to_float
from gan_cli.reporting.outputs import available_memory, size_text

log = logging.getLogger("gan_cli")

BUDGET_SHARE = 0.5  # default budget: this share of the device's free memory (the rest: networks, activations)
PREFETCH = 4  # batches each worker reads ahead


class BatchSource(Protocol):
    """What a task reads from its sampler: batch `index` (a pure function of seed, index and rank),
    the batches of an epoch, the device, and the rank's images (uint8 (N, C, H, W): previews)."""

    images: Tensor
    labels: Tensor
    device: torch.device
    batches_per_epoch: int

    def batch(self, index: int) -> tuple[Tensor, Tensor]: ...


class BatchReader(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Batch number -> (uint8 images (B, C, H, W), labels (B,), flips (B,)), read from images.npy.

    Each worker process maps the file itself (opened lazily: a DataLoader started with `spawn`
    pickles this object, and a pickled memory map would be the whole array)."""

    def __init__(self, folder: Path, labels: Tensor, seed: int, batch_size: int, rank: int, world_size: int,
                 count: int):
        self.path, self.labels, self.seed, self.batch_size = folder / IMAGES, labels, seed, batch_size
        self.rank, self.world_size, self.count = rank, world_size, count  # count: rows of this rank's shard
        self.batches_per_epoch = count // batch_size
        self._images: np.ndarray | None = None
        self._epoch, self._draws = -1, (torch.empty(0), torch.empty(0))

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        epoch, position = divmod(index, self.batches_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._draws = epoch, epoch_draws(self.seed, epoch, self.count, torch.device("cpu"))
        permutation, flips = self._draws
        rows = permutation[position * self.batch_size : (position + 1) * self.batch_size]
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        on_disk = rows.numpy() * self.world_size + self.rank  # the shard's row i is the file's row rank + i*world
        order = np.argsort(on_disk)  # read in file order (sequential pages), then put back in batch order
        images = np.empty((len(rows), *self._images.shape[1:]), dtype=np.uint8)
        images[order] = self._images[on_disk[order]]
        return torch.from_numpy(images), self.labels[rows], flips[rows]


class BatchNumbers(Sampler[int]):
    """start, start + 1, ...: the batch numbers a DataLoader asks its workers for."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start)


def _worker_start(worker: int) -> None:
    torch.set_num_threads(1)  # a worker only indexes arrays: its threads would compete with training's
    # Ctrl-C reaches the whole process group: the run stops at the end of its step (loop/signals.py),
    # which may still need batches; a worker that died of it would fail that step. The workers end
    # with the run: its loader shuts them down, multiprocessing's exit handler sends them SIGTERM
    # (so that one stays deadly), and a SIGKILLed run's end by their watchdog.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StreamingSampler:
    """DeviceSampler's batches, read from disk by `num_workers` DataLoader processes (pinned memory
    on CUDA, `PREFETCH` batches ahead per worker, copied without blocking)."""

    def __init__(self, data: OnDiskData, device: torch.device, batch_size: int, seed: int, hflip: bool,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0):
        count = data.images.shape[0] // world_size  # DeviceSampler's equal shards
        if count < batch_size:
            raise GanCliError(f"trainer.batch_size={batch_size} is larger than the dataset ({count} images): "
                              f"allowed is 1..{count}")
        self.images = data.images[rank::world_size][:count]  # memory-mapped: previews read only their rows
        self.labels = data.labels[rank::world_size][:count]
        self.device, self.hflip, self.num_workers = device, hflip, num_workers
        self.reader = BatchReader(data.folder, self.labels, seed, batch_size, rank, world_size, count)
        self.batches_per_epoch = self.reader.batches_per_epoch
        self._next = -1
        self._batches: Iterator[tuple[Tensor, Tensor, Tensor]] = iter(())

    def _start(self, index: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        workers = self.num_workers
        # A DataLoader draws its workers' base seed from the global RNG unless given a generator of its
        # own: that draw would shift every later torch.randn of training (z) and break bitwise equality.
        loader = DataLoader(self.reader, batch_size=None, sampler=BatchNumbers(index), num_workers=workers,
                            pin_memory=self.device.type == "cuda", prefetch_factor=PREFETCH if workers else None,
                            worker_init_fn=_worker_start if workers else None, generator=torch.Generator())
        return iter(loader)

    def batch(self, index: int) -> tuple[Tensor, Tensor]:
        """Images scaled to [-1, 1] (B, C, H, W) and their labels (B,) on the device, for batch `index`."""
        if index != self._next:  # the first batch, or a jump (resume): workers reading from `index`
            self._batches = self._start(index)
        images, labels, flips = next(self._batches)
        self._next = index + 1
        real = to_float(images.to(self.device, non_blocking=True))
        if self.hflip:
            real = torch.where(flips.to(self.device, non_blocking=True).view(-1, 1, 1, 1), real.flip(3), real)
        return real, labels.to(self.device, non_blocking=True)


def default_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(4, cores)


def free_memory(device: torch.device) -> int:
    """Bytes free on the training device: CUDA's free memory, else the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_memory()


def streams(data: OnDiskData, device: torch.device, world_size: int) -> tuple[bool, str]:
    """Whether to stream `data`, and the log line that says which and why."""
    needed = data.images.numel() // world_size  # uint8: bytes of this rank's share
    where = f"{data.folder} ({size_text(needed)} of images per rank)"
    if isinstance(data.in_memory, bool):  # else "auto" (load_converted checks)
        mode = "in memory" if data.in_memory else "streaming from disk"
        return not data.in_memory, f"dataset: {mode}: {where}, as dataset.in_memory={str(data.in_memory).lower()} says"
    if data.memory_budget_gb is not None:
        budget, told = int(data.memory_budget_gb * 1e9), f"dataset.memory_budget_gb={data.memory_budget_gb}"
    else:
        budget = int(BUDGET_SHARE * free_memory(device))
        told = f"{BUDGET_SHARE:.0%} of the free memory of {device} (dataset.memory_budget_gb sets it)"
    fits = needed <= budget
    verdict = "fits in" if fits else "does not fit in"
    mode = "in memory" if fits else "streaming from disk"
    return not fits, f"dataset: {mode}: {where} {verdict} the {size_text(budget)} budget, {told}"


def make_sampler(data: ImageData, device: torch.device, batch_size: int, seed: int, hflip: bool,
                 rank: int = 0, world_size: int = 1) -> BatchSource:
    """The sampler a task reads real batches from (module docstring): a task calls this, never a
    sampler class, so a new data path is a change here, not in every task."""
    if not isinstance(data, OnDiskData):
        return DeviceSampler(data, device, batch_size, seed, hflip, rank, world_size)
    stream, why = streams(data, device, world_size)
    log.info(why)
    if not stream:
        return DeviceSampler(data.loaded(), device, batch_size, seed, hflip, rank, world_size)
    workers = default_workers() if data.num_workers is None else data.num_workers
    return StreamingSampler(data, device, batch_size, seed, hflip, rank, world_size, workers)
