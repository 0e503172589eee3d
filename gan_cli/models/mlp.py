"""The fully connected GAN of Goodfellow et al. (2014), as in the MNIST tutorials.

Class-conditional when built with num_classes > 0 (and conditional=True): G concatenates a
learned label embedding to z (Mirza & Osindero 2014); D is a projection discriminator (Miyato &
Koyama 2018), logit += <embed(y), features of the last hidden layer>.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gan_cli.core.sizes import ImageSize, image_shape
from gan_cli.models.layers import class_count, require_labels, spectral_normalize


class Generator(nn.Module):
    def __init__(
        self,
        z_dim: int = 64,
        channels: int = 1,
        image_size: ImageSize = 28,
        hidden: Sequence[int] = (256, 512, 1024),
        num_classes: int = 0,
        conditional: bool = True,
        batch_norm: bool = False,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.num_classes = class_count(num_classes, conditional)
        self.image_shape = (channels, *image_shape(image_size))  # (C, H, W)
        self.embed = nn.Embedding(self.num_classes, z_dim) if self.num_classes else None
        layers: list[nn.Module] = []
        width = 2 * z_dim if self.num_classes else z_dim  # z, then the label embedding
        for size in hidden:
            # BatchNorm before each ReLU (as in DCGAN's G and PyTorch-GAN's MLP G) keeps the hidden
            # units from saturating: without it G spends thousands of steps drawing speckle
            norm = [nn.BatchNorm1d(size)] if batch_norm else []
            layers += [nn.Linear(width, size, bias=not batch_norm), *norm, nn.ReLU(inplace=True)]
            width = size
        layers += [nn.Linear(width, math.prod(self.image_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(require_labels(labels, z.shape[0]))], dim=1)  # (B, 2 z_dim)
        return self.net(z).view(z.shape[0], *self.image_shape)  # (B, C, H, W)


class Discriminator(nn.Module):
    def __init__(
        self,
        channels: int = 1,
        image_size: ImageSize = 28,
        hidden: Sequence[int] = (1024, 512, 256),
        dropout: float = 0.0,
        spectral_norm: bool = False,
        num_classes: int = 0,
        conditional: bool = True,
    ):
        super().__init__()
        self.num_classes = class_count(num_classes, conditional)
        layers: list[nn.Module] = [nn.Flatten()]
        width = channels * math.prod(image_shape(image_size))
        for size in hidden:
            layers += [nn.Linear(width, size), nn.LeakyReLU(0.2, inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.embed = nn.Embedding(self.num_classes, width) if self.num_classes else None
        if self.embed is not None:
            nn.init.xavier_uniform_(self.embed.weight)
        if spectral_norm:
            spectral_normalize(self)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        features = self.net[:-1](images)  # (B, hidden[-1])
        logits = self.net[-1](features).squeeze(1)  # (B,)
        if self.embed is not None:
            logits = logits + (self.embed(require_labels(labels, images.shape[0])) * features).sum(1)
        return logits
