"""One training step of any task: its phases in order, each one or more optimizer updates, then
the EMA copies. What a phase computes is the task's (gan_cli/tasks/); how an update is applied is
here, once, for every family: zero_grad, backward, gradient all-reduce across ranks, the NaN
policy, the optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from gan_cli.core.config import build
from gan_cli.loop import distributed
from gan_cli.loop.distributed import SINGLE_PROCESS, Ranks
from gan_cli.tasks.base import Stats, Task


@dataclass
class Updater:
    """How every update is applied: the autocast context, the ranks to all-reduce over, and
    `trainer.on_nan=skip` (check each loss before its update, a host sync; count the skips)."""

    autocast: Callable[[], AbstractContextManager[Any]]
    ranks: Ranks = SINGLE_PROCESS
    skip_nonfinite: bool = False
    skipped: int = 0

    def update(self, optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.ranks.enabled:
            distributed.average_gradients(optimizer)
        if self.skip_nonfinite and distributed.any_rank(not bool(torch.isfinite(loss)), loss.device):  # a host sync
            self.skipped += 1
            return
        optimizer.step()


def build_task(cfg: DictConfig, device: torch.device, ranks: Ranks = SINGLE_PROCESS) -> Task:
    """The configured task (`task._target_`) with its networks, optimizers and data on `device`."""
    return build(cfg.task, cfg, device, ranks, expect=Task)


def build_updater(cfg: DictConfig, device: torch.device, ranks: Ranks = SINGLE_PROCESS) -> Updater:
    bf16 = cfg.trainer.precision == "bf16"
    return Updater(partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=bf16), ranks,
                   cfg.trainer.on_nan == "skip")


def train_step(task: Task, step: int, updater: Updater) -> Tensor:
    """Every phase of `task` at (0-based) `step`. Returns the statistics as one device tensor in
    `task.stat_names` order (no host sync); a phase repeated n times reports its last update."""
    stats: Stats = {}
    handed: object = None  # what a phase passes on to the next (base.py)
    for phase in task.phases:
        for repeat in range(phase.repeats):
            with updater.autocast():
                loss, phase_stats, handed = phase.loss(step, repeat, handed)
            updater.update(task.optimizers[phase.optimizer], loss)
            phase.after_update(step)
            stats.update(phase_stats)
    for average in task.averages.values():
        average.update(step)
    return torch.stack([stats[name].float() for name in task.stat_names])  # on_nan=skip: the Meter masks
