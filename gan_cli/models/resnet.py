"""SNGAN ResNet generator and discriminator (Miyato et al. 2018, CIFAR-10 configuration).

G: z -> linear -> (ngf, 4, 4) -> 3 up-sampling residual blocks -> BN, ReLU, 3x3 conv, tanh.
D: 4 residual blocks of ndf channels (the first two halve the size: 32 -> 16 -> 8), ReLU,
global sum pooling, linear head; spectral norm on every layer. This is the architecture of the
published recipe (hinge loss, Adam lr 2e-4 betas (0, 0.9), n_critic 5) and of Mimicry's sngan_32.

Other sizes follow the same plan: G starts from the base size of layers.stages_for (28: 7x7 and
2 blocks; 64: 4x4 and 4 blocks); D halves the size down to at most 8x8, then adds 2 blocks.

Class-conditional when built with num_classes > 0 (and conditional=True): G's BatchNorms take
their scale and shift from the label (conditional BatchNorm); D is a projection discriminator
(Miyato & Koyama 2018), logit += <embed(y), pooled features>.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from gan_cli.core.sizes import ImageSize, image_shape
from gan_cli.models.layers import ClassBatchNorm2d, class_count, require_labels, spectral_normalize, stages_for


def xavier(layer: nn.Conv2d | nn.Linear, gain: float = 1.0) -> nn.Module:
    """Mimicry's init: Xavier-uniform, gain sqrt(2) on the residual 3x3 convs, 1 elsewhere."""
    nn.init.xavier_uniform_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class GeneratorBlock(nn.Module):
    """BN, ReLU, 2x nearest up-sampling, 3x3 conv, BN, ReLU, 3x3 conv; shortcut: up-sample, 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, num_classes: int):
        super().__init__()
        self.bn1 = ClassBatchNorm2d(in_channels, num_classes)
        self.conv1 = xavier(nn.Conv2d(in_channels, out_channels, 3, 1, 1), math.sqrt(2))
        self.bn2 = ClassBatchNorm2d(out_channels, num_classes)
        self.conv2 = xavier(nn.Conv2d(out_channels, out_channels, 3, 1, 1), math.sqrt(2))
        self.shortcut = xavier(nn.Conv2d(in_channels, out_channels, 1, 1, 0))

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, labels)), scale_factor=2)  # (B, C_in, 2H, 2W)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), labels)))  # (B, C_out, 2H, 2W)
        return h + self.shortcut(F.interpolate(x, scale_factor=2))


class DiscriminatorBlock(nn.Module):
    """(ReLU,) 3x3 conv, ReLU, 3x3 conv, (2x2 average pooling); 1x1 conv shortcut when the shape
    changes. The first block takes the image directly, so it has no leading ReLU and pools
    before its shortcut conv (SNGAN's "optimized" block)."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool, first: bool = False):
        super().__init__()
        self.downsample, self.first = downsample, first
        self.conv1 = xavier(nn.Conv2d(in_channels, out_channels, 3, 1, 1), math.sqrt(2))
        self.conv2 = xavier(nn.Conv2d(out_channels, out_channels, 3, 1, 1), math.sqrt(2))
        reshapes = downsample or in_channels != out_channels
        self.shortcut = xavier(nn.Conv2d(in_channels, out_channels, 1, 1, 0)) if reshapes else None

    def pool(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self.pool(self.conv2(F.relu(self.conv1(h))))  # (B, C_out, H/2, W/2) when down-sampling
        if self.shortcut is None:
            return h + x
        skip = self.shortcut(self.pool(x)) if self.first else self.pool(self.shortcut(x))
        return h + skip


class Generator(nn.Module):
    def __init__(
        self,
        z_dim: int = 128,
        channels: int = 3,
        image_size: ImageSize = 32,
        ngf: int = 256,
        num_classes: int = 0,
        conditional: bool = True,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.num_classes = class_count(num_classes, conditional)
        self.ngf = ngf
        self.base, stages = stages_for(image_size, "resnet")  # (height, width)
        self.linear = xavier(nn.Linear(z_dim, ngf * self.base[0] * self.base[1]))
        self.blocks = nn.ModuleList(GeneratorBlock(ngf, ngf, self.num_classes) for _ in range(stages))
        self.bn = nn.BatchNorm2d(ngf)
        self.out = xavier(nn.Conv2d(ngf, channels, 3, 1, 1))

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.num_classes:
            labels = require_labels(labels, z.shape[0])
        h = self.linear(z).view(z.shape[0], self.ngf, *self.base)  # (B, ngf, base_h, base_w)
        for block in self.blocks:
            h = block(h, labels)  # doubles H and W
        return self.out(F.relu(self.bn(h))).tanh()  # (B, C, H, W)


def downsamplings_for(image_size: ImageSize) -> int:
    """Halvings that take image_size to at most 8 (at least one): 32 -> 2, 28 -> 2, 64 -> 3; a
    non-square size by its smaller side ([48, 64] -> 3: 6x8), as D sums its features over positions."""
    size, count = min(image_shape(image_size)), 0
    while size > 8 and size % 2 == 0:
        size, count = size // 2, count + 1
    return max(count, 1)


class Discriminator(nn.Module):
    def __init__(
        self,
        channels: int = 3,
        image_size: ImageSize = 32,
        ndf: int = 128,
        spectral_norm: bool = True,
        num_classes: int = 0,
        conditional: bool = True,
    ):
        super().__init__()
        self.num_classes = class_count(num_classes, conditional)
        stages_for(image_size, "resnet")  # same sizes as G, same message
        downs = downsamplings_for(image_size)
        blocks = [DiscriminatorBlock(channels, ndf, downsample=True, first=True)]
        blocks += [DiscriminatorBlock(ndf, ndf, downsample=True) for _ in range(downs - 1)]
        blocks += [DiscriminatorBlock(ndf, ndf, downsample=False) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.head = xavier(nn.Linear(ndf, 1))
        self.embed = nn.Embedding(self.num_classes, ndf) if self.num_classes else None
        if self.embed is not None:
            nn.init.xavier_uniform_(self.embed.weight)
        if spectral_norm:
            spectral_normalize(self)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        features = F.relu(self.blocks(images)).sum(dim=(2, 3))  # (B, ndf): global sum pooling
        logits = self.head(features).squeeze(1)  # (B,)
        if self.embed is not None:
            logits = logits + (self.embed(require_labels(labels, images.shape[0])) * features).sum(1)
        return logits
