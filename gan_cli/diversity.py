"""Terms added to the generator's loss that reward varied samples: the `diversity` config group.

Hook: `penalty(generator, fake, z, labels) -> Tensor | None`, called in G's step with the batch
G just drew (`fake` = G(z, labels), still attached to G's graph). None means no term.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gan_cli.errors import GanCliError


class NoDiversityTerm:
    def penalty(self, generator: nn.Module, fake: Tensor, z: Tensor, labels: Tensor | None) -> Tensor | None:
        return None


class ModeSeeking:
    """Mode-seeking regularization (MSGAN, Mao et al. 2019): for pairs of latents with the same
    label, G maximizes |G(z1, y) - G(z2, y)| / |z1 - z2| (mean absolute differences), through
    the loss term weight / (ratio + eps).

    Why gan-cli has it: a class-conditional DCGAN on MNIST learned to ignore z and drew one
    style per class (every sample of a row the same). A per-image D cannot see that; this term
    makes an ignored z cost G directly. The second sample of each pair is a new forward of
    G over `fraction` of the batch, so it costs that fraction of a G forward and backward.
    """

    def __init__(self, weight: float = 1.0, fraction: float = 0.5, eps: float = 1e-5):
        if weight < 0:
            raise GanCliError(f"invalid value diversity.weight={weight}: allowed is a number >= 0")
        if not 0.0 < fraction <= 1.0:
            raise GanCliError(f"invalid value diversity.fraction={fraction}: allowed is a number in (0, 1]")
        self.weight, self.fraction, self.eps = weight, fraction, eps

    def penalty(self, generator: nn.Module, fake: Tensor, z: Tensor, labels: Tensor | None) -> Tensor:
        count = max(int(fake.shape[0] * self.fraction), 2)  # >= 2: BatchNorm in G needs a batch
        z1, z2 = z[:count], torch.randn_like(z[:count])
        other = generator(z2, None if labels is None else labels[:count])
        ratio = (fake[:count] - other).float().abs().mean() / (z1 - z2).abs().mean()
        return self.weight / (ratio + self.eps)
