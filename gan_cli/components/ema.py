"""An exponential moving average of the generator's weights (the `ema` config group).

Averaging G's weights over the last ~1/(1 - decay) steps smooths out the oscillation of the
adversarial game; the average draws better samples than G itself (Karras et al. 2018; Yazici
et al. 2019), so it is what sample grids, metrics, gan-sample and checkpoints should use.

BatchNorm needs care: G's running statistics describe the activations of G's *current* weights,
not of the average. Copying them into the average (what a naive EMA does) feeds every layer the
wrong mean and variance; on MNIST that made the EMA of a DCGAN worse than G itself. So the
average's statistics are re-estimated from its own activations ("standing statistics", Brock et
al. 2019) each time someone reads `module` after an update. Every other buffer (StyleGAN2's
w_avg and pl_mean, its fixed noise) is G's own running state, not a function of the weights: it
is copied from G at every update, as stylegan2-ada-pytorch does for G_ema.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from gan_cli.core.errors import GanCliError

# (count, private noise generator) -> the network's inputs for a training-mode forward
InputSampler = Callable[[int, torch.Generator], Sequence[Any]]


class GeneratorEMA:
    """`module` is the averaged copy of `generator` to sample from; call `update(step)` after
    each G optimizer step. Before `start_step` the copy just follows G (weights and buffers).
    After it, reading `module` first re-estimates BatchNorm statistics from `bn_samples` of the
    average's own samples (fixed noise, so runs and resumes stay reproducible). decay=0 means
    no averaging: `module` is G itself, with G's own running statistics. `inputs` draws the
    network's inputs for the estimate (the task knows what its generator takes: z and labels,
    or images); None is fine for a network without BatchNorm.
    """

    def __init__(self, generator: nn.Module, inputs: InputSampler | None = None, decay: float = 0.999,
                 start_step: int = 0, bn_samples: int = 4096):
        if not 0.0 <= decay < 1.0:
            raise GanCliError(f"invalid value ema.decay={decay}: allowed is a number in [0, 1)")
        if bn_samples < 1:
            raise GanCliError(f"invalid value ema.bn_samples={bn_samples}: allowed is an integer >= 1")
        self.generator = generator
        self.decay = decay
        self.start_step = start_step
        self.bn_samples = bn_samples
        self.inputs = inputs
        self._average = generator if decay == 0 else copy.deepcopy(generator).eval().requires_grad_(False)
        self._norms = [m for m in self._average.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        if self._norms and inputs is None and self._average is not generator:
            raise GanCliError("an EMA of a network with BatchNorm needs an input sampler to re-estimate its statistics")
        self._stale = False  # the average's BatchNorm statistics no longer match its weights

    @property
    def module(self) -> nn.Module:
        if self._stale:
            self._stale = False
            self._estimate_batchnorm()
        return self._average

    @torch.no_grad()
    def update(self, step: int) -> None:
        if self._average is self.generator:
            return
        averaged: list[torch.Tensor] = list(self._average.parameters())
        current: list[torch.Tensor] = list(self.generator.parameters())
        if step < self.start_step:  # a plain copy: G's statistics are right for these weights
            for mine, theirs in ((averaged, current), (list(self._average.buffers()), list(self.generator.buffers()))):
                if mine:  # _foreach ops refuse empty lists (an MLP G has no buffers)
                    torch._foreach_copy_(mine, theirs)
            self._stale = False
            return
        torch._foreach_lerp_(averaged, current, 1.0 - self.decay)  # averaged += (1 - decay) * (current - averaged)
        mine, theirs = self._plain_buffers(self._average), self._plain_buffers(self.generator)
        if mine:
            torch._foreach_copy_(mine, theirs)
        self._stale = bool(self._norms)

    @staticmethod
    def _plain_buffers(network: nn.Module) -> list[torch.Tensor]:
        """Buffers outside BatchNorm layers (those are re-estimated), in a fixed module order."""
        return [buffer for module in network.modules() if not isinstance(module, _BatchNorm)
                for buffer in module.buffers(recurse=False)]

    @torch.no_grad()
    def _estimate_batchnorm(self) -> None:
        """Cumulative (momentum=None) BatchNorm statistics over the average's training-mode forwards."""
        model = self._average
        device = next(model.parameters()).device
        noise = torch.Generator(device=device).manual_seed(0)
        momenta = [m.momentum for m in self._norms]
        for norm in self._norms:
            norm.reset_running_stats()
            norm.momentum = None
        model.train()
        batch = min(self.bn_samples, 512)
        assert self.inputs is not None
        for start in range(0, self.bn_samples, batch):
            model(*self.inputs(min(batch, self.bn_samples - start), noise))
        model.eval()
        for norm, momentum in zip(self._norms, momenta, strict=True):
            norm.momentum = momentum

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._average.load_state_dict(state)
        self._stale = False
