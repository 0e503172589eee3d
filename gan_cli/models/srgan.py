"""SRGAN's networks (Ledig et al. 2017, "Photo-Realistic Single Image Super-Resolution Using a
Generative Adversarial Network", Figure 4), for task=srgan.

Generator (SRResNet): a 9x9 conv + PReLU, `blocks` residual blocks (conv3-BN-PReLU-conv3-BN, plus
the input), conv3-BN plus a long skip from the first conv, log2(scale) upsampling stages (conv3 to
4x the width, PixelShuffle x2, PReLU), a 9x9 conv to the image, tanh (images are in [-1, 1]).
Fully convolutional: any input size, output `scale` times larger. The paper: width 64, 16 blocks.

Discriminator: a 3x3 conv + LeakyReLU(0.2), then conv-BN-LeakyReLU pairs, the first of each pair
strided (`stages` halvings, the paper's 4: 96 -> 6 px), widths ndf, 2ndf, 4ndf, 8ndf ...; a dense
head Dense(1024) - LeakyReLU - Dense(1) -> a logit per image. The paper flattens the 6x6x512 map at
96 px; here an adaptive average pool to `pool` x `pool` comes first, so the same D works at any
size (28 px MNIST: 2x2 after 4 halvings; `pool` 6 at 96 px is the paper's head exactly).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from gan_cli.core.errors import GanCliError


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.PReLU(width),
                                  nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """SRResNet: LR images (B, C, h, w) in [-1, 1] -> (B, C, scale*h, scale*w) in [-1, 1]."""

    def __init__(self, channels: int = 3, scale: int = 4, width: int = 64, blocks: int = 16):
        super().__init__()
        stages = int(math.log2(scale)) if scale >= 2 else 0
        if 2**stages != scale or blocks < 0 or width < 1:
            raise GanCliError(f"invalid SRResNet: scale={scale}, width={width}, blocks={blocks}; allowed are "
                              "scale 2, 4, 8 (a power of 2), width >= 1, blocks >= 0")
        self.channels, self.scale = channels, scale
        self.head = nn.Sequential(nn.Conv2d(channels, width, 9, padding=4), nn.PReLU(width))
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)],
                                    nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        upsample: list[nn.Module] = []
        for _ in range(stages):  # (B, w, h, w) -> (B, 4w, h, w) -> (B, w, 2h, 2w)
            upsample += [nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(width)]
        self.tail = nn.Sequential(*upsample, nn.Conv2d(width, channels, 9, padding=4), nn.Tanh())

    def forward(self, images: Tensor) -> Tensor:
        features = self.head(images)
        return self.tail(features + self.blocks(features))  # the long skip


class Discriminator(nn.Module):
    """The paper's VGG-style D: images (B, C, H, W) -> logits (B,), any H, W >= 2**stages."""

    def __init__(self, channels: int = 3, ndf: int = 64, stages: int = 4, pool: int = 6, dense: int = 1024):
        super().__init__()
        if stages < 1 or pool < 1 or ndf < 1 or dense < 1:
            raise GanCliError(f"invalid SRGAN discriminator: ndf={ndf}, stages={stages}, pool={pool}, dense={dense}; "
                              "allowed are integers >= 1")
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 3, padding=1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for index in range(stages):  # the paper's k3n64s2, k3n128s1, k3n128s2, ..., k3n512s2
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2, True)]
            if index + 1 < stages:  # widen (x2) at the new resolution
                layers += [nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width),
                           nn.LeakyReLU(0.2, True)]
                width *= 2
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pool), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(width * pool * pool, dense), nn.LeakyReLU(0.2, True), nn.Linear(dense, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images)).flatten()  # (B,)
