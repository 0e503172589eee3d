"""Regularizers of the discriminator, added to its loss: the `reg` config group.

Same hook as the losses' `penalty`: `penalty(critic, real, fake, step) -> Tensor | None`, where
`critic` is D with the batch's labels bound (images -> logits (B,)), `real` / `fake` are the
images D just saw (after augmentation) and `step` counts D steps. None means "nothing this step",
so the loop adds the term only when there is one. Spectral norm is not here: it is a property of
D's layers (`model.discriminator.spectral_norm`). The contract is contracts.Regularizer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gan_cli.components.contracts import Critic
from gan_cli.core.errors import GanCliError


class NoRegularizer:
    def penalty(self, critic: Critic, real: Tensor, fake: Tensor, step: int) -> Tensor | None:
        return None


class R1Penalty:
    """R1 (Mescheder, Geiger & Nowozin 2018): gamma/2 * E[||grad_x D(x)||^2] on real images only.

    Penalizing D's slope on the data keeps the game from oscillating around the equilibrium.
    Lazy regularization (StyleGAN2): computing it only every `every_n_steps` D steps and scaling
    it by that interval gives the same expected gradient for a fraction of the cost of the extra
    double-backward pass.
    """

    def __init__(self, gamma: float = 10.0, every_n_steps: int = 1):
        if every_n_steps < 1:
            raise GanCliError(f"invalid value reg.every_n_steps={every_n_steps}: allowed is an integer >= 1")
        self.gamma = gamma
        self.every_n_steps = every_n_steps

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor, step: int) -> Tensor | None:
        if step % self.every_n_steps != 0:
            return None
        real = real.detach().requires_grad_(True)  # (B, C, H, W)
        # create_graph: the penalty is itself differentiated w.r.t. D's weights
        (grad,) = torch.autograd.grad(critic(real).sum(), real, create_graph=True)
        squared_norms = grad.float().flatten(1).pow(2).sum(1)  # (B,)
        return self.every_n_steps * self.gamma / 2 * squared_norms.mean()
