"""GAN losses on raw discriminator logits.

Each loss is a small class with `d_loss(real_logits, fake_logits)` and `g_loss(fake_logits)`;
the config picks one by `_target_`. softplus(-x) == -log(sigmoid(x)) computed stably, which is
why no model ends in a Sigmoid.

Two hooks let the loop treat every loss alike, with no branching on the loss's name:
  penalty(critic, real, fake, step) -> Tensor | None: a term added to the D loss (WGAN-GP);
  after_d_step(discriminator): called after each D optimizer step (WGAN weight clipping).
Both do nothing on `GanLoss`. `critic` is D with the batch's labels bound, images -> logits (B,).
The contract is contracts.AdversarialLoss, which the builder checks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_cli.components.contracts import Critic


class GanLoss:
    """Base of every loss: the hooks below do nothing unless a loss needs them."""

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor, step: int) -> Tensor | None:
        return None

    def after_d_step(self, discriminator: nn.Module) -> None:
        return None


class NonSaturatingLoss(GanLoss):
    """Goodfellow et al. (2014): D maximizes log D(x) + log(1 - D(G(z))); G maximizes log D(G(z)).

    G's loss is the non-saturating -log D(G(z)), not log(1 - D(G(z))), whose gradient vanishes
    while D still rejects every fake early in training.
    """

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return F.softplus(-fake_logits).mean()


class HingeLoss(GanLoss):
    """Lim & Ye (2017), used by SNGAN, SAGAN and BigGAN: D pushes real logits above +1 and fake
    logits below -1 and ignores samples already past the margin; G raises D's fake logits."""

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()


class LeastSquaresLoss(GanLoss):
    """Mao et al. (2017), LSGAN with targets a=0 (fake), b=1 (real), c=1 (what G wants): the
    squared error keeps pulling fakes that D already calls real but that lie far from the data,
    where the sigmoid loss has saturated."""

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return 0.5 * ((real_logits - 1) ** 2).mean() + 0.5 * (fake_logits**2).mean()

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return 0.5 * ((fake_logits - 1) ** 2).mean()


class WassersteinCritic(GanLoss):
    """The Wasserstein critic objective shared by WGAN and WGAN-GP: D maximizes
    E[D(x)] - E[D(G(z))], G maximizes E[D(G(z))]. They differ only in how D is kept Lipschitz."""

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return fake_logits.mean() - real_logits.mean()

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()


class WassersteinLoss(WassersteinCritic):
    """Arjovsky et al. (2017): D is a critic estimating the Wasserstein-1 distance
    E[D(x)] - E[D(G(z))], which requires D to be 1-Lipschitz; clipping every weight of D to
    [-clip, clip] after each D step is the paper's (crude) way to bound it. The paper pairs it
    with RMSprop at lr 5e-5 and n_critic 5: optim=rmsprop task.d_steps=5."""

    def __init__(self, clip: float = 0.01):
        self.clip = clip

    @torch.no_grad()
    def after_d_step(self, discriminator: nn.Module) -> None:
        for parameter in discriminator.parameters():
            parameter.clamp_(-self.clip, self.clip)


class WassersteinGPLoss(WassersteinCritic):
    """Gulrajani et al. (2017), WGAN-GP: the Wasserstein critic loss, with the weight clipping
    replaced by a penalty on the critic's input-gradient norm leaving 1 on random interpolates
    between real and fake images: gp_weight * E[(||grad_x D(x_hat)||_2 - 1)^2]. The paper uses
    gp_weight 10, Adam lr 1e-4 betas (0, 0.9), n_critic 5, and no BatchNorm in D (the penalty is
    per sample; BatchNorm mixes the samples of a batch)."""

    def __init__(self, gp_weight: float = 10.0):
        self.gp_weight = gp_weight

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor, step: int) -> Tensor:
        mix = torch.rand(real.shape[0], *[1] * (real.dim() - 1), device=real.device, dtype=real.dtype)
        interpolates = (mix * real.detach() + (1 - mix) * fake.detach()).requires_grad_(True)  # (B, C, H, W)
        # create_graph: the penalty is itself differentiated w.r.t. D's weights in d_loss.backward()
        (grad,) = torch.autograd.grad(critic(interpolates).sum(), interpolates, create_graph=True)
        norms = grad.float().flatten(1).norm(2, dim=1)  # (B,)
        return self.gp_weight * ((norms - 1) ** 2).mean()
