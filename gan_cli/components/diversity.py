"""Terms added to the generator's loss: the `diversity` config group (G's regularizers: mode
seeking for varied samples, StyleGAN2's path length for a smooth w -> image map).

Hook: `penalty(generator, fake, z, labels, step) -> Tensor | None`, called in G's step with the
batch G just drew (`fake` = G(z, labels), still attached to G's graph); `step` counts G steps
(0-based), for lazy terms. None means no term this step. The contract is contracts.DiversityTerm.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gan_cli.core.errors import GanCliError
from gan_cli.models.abilities import is_style_generator


class NoDiversityTerm:
    def penalty(self, generator: nn.Module, fake: Tensor, z: Tensor, labels: Tensor | None,
                step: int) -> Tensor | None:
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

    def penalty(self, generator: nn.Module, fake: Tensor, z: Tensor, labels: Tensor | None, step: int) -> Tensor:
        count = max(int(fake.shape[0] * self.fraction), 2)  # >= 2: BatchNorm in G needs a batch
        z1, z2 = z[:count], torch.randn_like(z[:count])
        other = generator(z2, None if labels is None else labels[:count])
        ratio = (fake[:count] - other).float().abs().mean() / (z1 - z2).abs().mean()
        return self.weight / (ratio + self.eps)


class PathLength:
    """Path-length regularization (StyleGAN2, Karras et al. 2020, sec. 3.2): for random images y
    ~ N(0, I) / sqrt(H W), the length |J_w^T y| of the generator's Jacobian-vector product should
    be the same constant a everywhere in w, so a fixed step in w moves the image by a fixed amount
    (smoother interpolations, easier inversion). a is the running mean of the lengths (decay
    `decay`), kept in the generator's `pl_mean` buffer so checkpoints and resumes carry it.

    Lazy (the paper's G_reg_interval): every `every_n_steps` G steps, on batch / `batch_shrink`
    new latents (a second forward through G and a double backward), scaled by the interval.
    """

    def __init__(self, weight: float = 2.0, every_n_steps: int = 4, batch_shrink: int = 2, decay: float = 0.01):
        if weight < 0:
            raise GanCliError(f"invalid value diversity.weight={weight}: allowed is a number >= 0")
        if every_n_steps < 1:
            raise GanCliError(f"invalid value diversity.every_n_steps={every_n_steps}: allowed is an integer >= 1")
        if batch_shrink < 1:
            raise GanCliError(f"invalid value diversity.batch_shrink={batch_shrink}: allowed is an integer >= 1")
        self.weight, self.every_n_steps, self.batch_shrink, self.decay = weight, every_n_steps, batch_shrink, decay

    def penalty(self, generator: nn.Module, fake: Tensor, z: Tensor, labels: Tensor | None,
                step: int) -> Tensor | None:
        if step % self.every_n_steps != 0 or self.weight == 0:
            return None
        if not is_style_generator(generator):
            raise GanCliError(f"diversity=path_length needs a generator with a mapping network and "
                              f"w (model=stylegan2); {type(generator).__name__} has none")
        count = max(z.shape[0] // self.batch_shrink, 1)
        ws = generator.mapping_ws(torch.randn_like(z[:count]), None if labels is None else labels[:count])
        images = generator.synthesis(ws)  # (count, C, H, W)
        noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
        (grads,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)  # (count, num_ws, w_dim)
        lengths = grads.float().square().sum(2).mean(1).sqrt()  # (count,)
        mean = generator.pl_mean.lerp(lengths.mean().detach(), self.decay)
        generator.pl_mean.copy_(mean)
        return (lengths - mean).square().mean() * self.weight * self.every_n_steps
