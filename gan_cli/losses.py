"""GAN losses on raw discriminator logits.

Each loss is a small class with `d_loss(real_logits, fake_logits)` and `g_loss(fake_logits)`;
the config picks one by `_target_`. softplus(-x) == -log(sigmoid(x)) computed stably, which is
why no model ends in a Sigmoid.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


class NonSaturatingLoss:
    """Goodfellow et al. (2014): D maximizes log D(x) + log(1 - D(G(z))); G maximizes log D(G(z)).

    G's loss is the non-saturating -log D(G(z)), not log(1 - D(G(z))), whose gradient vanishes
    while D still rejects every fake early in training.
    """

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return F.softplus(-fake_logits).mean()
