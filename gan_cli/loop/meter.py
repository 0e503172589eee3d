"""Step statistics summed on the device between log intervals; `read` is the loop's one host sync.

With `trainer.on_nan=stop`, a NaN or inf anywhere in an interval reaches the sum and `read`
stops the run. With `skip`, the step's update was already dropped (step.update), and the step's
non-finite statistics are masked out here, on the device, so they cannot poison the interval's
mean (an inf loss used to become float-max and overflow the sum). `read` reports how many
updates were skipped, and stops the run when more than half of an interval's updates were: a
run that trains on almost nothing must not end with exit 0 and losses of 0.000.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from gan_cli.core.errors import GanCliError

log = logging.getLogger("gan_cli")


class TrainingDiverged(GanCliError):
    pass


class Meter:
    def __init__(self, names: tuple[str, ...], device: torch.device, images_per_step: int, step: int,
                 updates_per_step: int = 2, skip_nonfinite: bool = False):
        self.names, self.skip_nonfinite, self.updates_per_step = names, skip_nonfinite, updates_per_step
        self.sums = torch.zeros(len(names), device=device)
        self.kept = torch.zeros((), device=device)  # steps with finite statistics (on_nan=skip)
        self.count, self.images_per_step = 0, images_per_step
        self.since_step, self.since_time, self.skipped_before = step, time.perf_counter(), 0
        self.last: dict[str, float] = {}

    def add(self, stats: Tensor) -> None:
        if self.skip_nonfinite:  # no sync: a device-side mask
            finite = stats.isfinite().all()
            self.sums += torch.where(finite, stats, torch.zeros_like(stats))
            self.kept += finite
        else:
            self.sums += stats
        self.count += 1

    @contextmanager
    def excluded(self) -> Iterator[None]:
        """Time spent inside on something other than training steps (an evaluation, a grid) is
        left out of the interval's img/s, which would otherwise dip after every evaluation."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.since_time += time.perf_counter() - started

    def read(self, step: int, skipped_total: int = 0) -> dict[str, float]:
        """The interval's means; `skipped_total`: updates dropped so far in this session (run.skipped)."""
        steps = f"steps {self.since_step + 1}..{step}"
        kept = int(self.kept) if self.skip_nonfinite else self.count
        skipped = skipped_total - self.skipped_before
        if self.skip_nonfinite:
            self._check_skipped(skipped, kept, steps)
        values = dict(zip(self.names, (self.sums / max(kept, 1)).tolist(), strict=True))
        for name, value in values.items():
            if not math.isfinite(value):  # NaN or inf anywhere in the interval reaches the sum
                raise TrainingDiverged(f"{name} is {value} in {steps} (trainer.on_nan=stop): stopped; "
                                       f"checkpoints from before step {self.since_step + 1} are kept")
        now = time.perf_counter()
        values["perf/img_per_sec"] = (step - self.since_step) * self.images_per_step / (now - self.since_time)
        if self.skip_nonfinite:
            values["train/skipped_updates"] = float(skipped)
        self.sums.zero_()
        self.kept.zero_()
        self.count, self.since_step, self.since_time, self.last = 0, step, now, values
        self.skipped_before = skipped_total
        return values

    def _check_skipped(self, skipped: int, kept: int, steps: str) -> None:
        updates = self.count * self.updates_per_step
        if skipped * 2 > updates or (self.count and not kept):
            raise TrainingDiverged(
                f"{skipped} of {updates} updates in {steps} had a non-finite loss and were skipped "
                f"(trainer.on_nan=skip): stopped, as more than half were; checkpoints from before step "
                f"{self.since_step + 1} are kept")
        if skipped:
            log.warning("%s: skipped %d of %d updates with a non-finite loss (trainer.on_nan=skip)", steps, skipped,
                        updates)
