"""What a component of each config group must provide: the typed contracts of `loss`, `reg`,
`augment`, `diversity` and `lr_schedule`.

A component is any class with these methods (no base class needed); the builder checks it when
it is made (`config.build(node, expect=AdversarialLoss)`), so a YAML option whose `_target_`
makes something else fails with one line, and mypy checks every caller against the methods here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

Critic = Callable[[Tensor], Tensor]  # D with the batch's labels bound: images (B, C, H, W) -> logits (B,)


@runtime_checkable
class AdversarialLoss(Protocol):
    """The `loss` group (losses.py): D's and G's losses on raw logits, and two hooks."""

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor: ...

    def g_loss(self, fake_logits: Tensor) -> Tensor: ...

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor, step: int) -> Tensor | None:
        """A term added to D's loss (WGAN-GP), or None for none this step."""
        ...

    def after_d_step(self, discriminator: nn.Module) -> None:
        """Called after each D optimizer step (WGAN weight clipping)."""
        ...


@runtime_checkable
class Regularizer(Protocol):
    """The `reg` group (regularizers.py): a term added to D's loss; `step` counts D steps."""

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor, step: int) -> Tensor | None: ...


@runtime_checkable
class Augmentation(Protocol):
    """The `augment` group (augment.py): images (B, C, H, W) -> (B, C, H, W), real and fake alike."""

    def __call__(self, images: Tensor) -> Tensor: ...


@runtime_checkable
class DiversityTerm(Protocol):
    """The `diversity` group (diversity.py): a term added to G's loss, from the batch G just drew
    (`fake` = generator(z, labels), still on G's graph); `step` counts G steps."""

    def penalty(self, generator: nn.Module, fake: Tensor, z: Tensor, labels: Tensor | None,
                step: int) -> Tensor | None: ...


@runtime_checkable
class LrSchedule(Protocol):
    """The `lr_schedule` group (schedule.py): progress of the run in [0, 1] -> learning-rate factor."""

    def __call__(self, progress: float) -> float: ...
