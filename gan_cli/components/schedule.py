"""Learning-rate schedules, the `lr_schedule` config group: one factor of training progress that
multiplies the configured learning rate of every optimizer of the task.

    constant      1 throughout (the GAN default: Adam at a fixed rate)
    linear_decay  1 until `start` of the run, then linearly to 0 at the end (CycleGAN: the second half)
    cosine        half a cosine from 1 down to `final` (SRGAN/ESRGAN-style annealing)

Progress is step / total steps of the run (`trainer.epochs` or `trainer.max_steps`), so the same
schedule fits a 10-minute CPU run and a 200-epoch GPU run. The schedulers are torch's LambdaLR,
stepped once per training step; their state is in the checkpoint. The contract of an option is
contracts.LrSchedule: progress in [0, 1] -> learning-rate factor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from gan_cli.components.contracts import LrSchedule
from gan_cli.core.errors import GanCliError


class Constant:
    def __call__(self, progress: float) -> float:
        return 1.0


class LinearDecay:
    def __init__(self, start: float = 0.5):
        if not 0.0 <= start < 1.0:
            raise GanCliError(f"invalid value lr_schedule.start={start}: allowed is a fraction in [0, 1)")
        self.start = start

    def __call__(self, progress: float) -> float:
        return min(1.0, max(0.0, (1.0 - progress) / (1.0 - self.start)))


class Cosine:
    def __init__(self, final: float = 0.0):
        if not 0.0 <= final <= 1.0:
            raise GanCliError(f"invalid value lr_schedule.final={final}: allowed is a factor in [0, 1]")
        self.final = final

    def __call__(self, progress: float) -> float:
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class Schedules:
    """A LambdaLR per optimizer; `step()` after each training step."""

    def __init__(self, factor: LrSchedule, optimizers: Mapping[str, torch.optim.Optimizer], total_steps: int):
        self.factor, self.total_steps = factor, max(total_steps, 1)
        self.schedulers = {name: LambdaLR(optimizer, self.at_step) for name, optimizer in optimizers.items()}

    def at_step(self, step: int) -> float:
        return self.factor(step / self.total_steps)

    def step(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {name: {"last_epoch": s.last_epoch} for name, s in self.schedulers.items()}

    def load_state_dict(self, state: Mapping[str, Any], step: int) -> None:
        """Continue at `step`; the learning rates are the configured ones times the factor (the
        config's `optim.lr` wins over what the checkpoint's optimizer state holds)."""
        for name, scheduler in self.schedulers.items():
            scheduler.last_epoch = int(state.get(name, {}).get("last_epoch", step))
            for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True):
                group["lr"] = base * self.at_step(scheduler.last_epoch)
