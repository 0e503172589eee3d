"""An exponential moving average of the generator's weights (the `ema` config group).

Averaging G's weights over the last ~1/(1 - decay) steps smooths out the oscillation of the
adversarial game; the average draws better samples than G itself (Karras et al. 2018; Yazici
et al. 2019), so it is what sample grids, metrics, gan-sample and checkpoints should use.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from gan_cli.errors import GanCliError


class GeneratorEMA:
    """`module` is the averaged copy of `generator` to sample from; call `update(step)` after
    each G optimizer step. Before `start_step` the copy just follows G. BatchNorm running
    statistics (and any other buffers) are copied from G, not averaged: they describe the
    activations of G's current weights. decay=0 means no averaging: `module` is G itself.
    """

    def __init__(self, generator: nn.Module, decay: float = 0.999, start_step: int = 0):
        if not 0.0 <= decay < 1.0:
            raise GanCliError(f"invalid value ema.decay={decay}: allowed is a number in [0, 1)")
        self.generator = generator
        self.decay = decay
        self.start_step = start_step
        self.module = generator if decay == 0 else copy.deepcopy(generator).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, step: int) -> None:
        if self.module is self.generator:
            return
        averaged, current = list(self.module.parameters()), list(self.generator.parameters())
        weight = 1.0 if step < self.start_step else 1.0 - self.decay
        torch._foreach_lerp_(averaged, current, weight)  # averaged += weight * (current - averaged)
        for ema_buffer, buffer in zip(self.module.buffers(), self.generator.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)
