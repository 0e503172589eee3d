"""The fully connected GAN of Goodfellow et al. (2014), as in the MNIST tutorials."""

from __future__ import annotations

from collections.abc import Sequence


from torch import Tensor, nn


class Generator(nn.Module):
    def __init__(
        self, z_dim: int = 64, channels: int = 1, image_size: int = 28, hidden: Sequence[int] = (256, 512, 1024)
    ):
        super().__init__()
        self.z_dim = z_dim
        self.image_shape = (channels, image_size, image_size)
        layers: list[nn.Module] = []
        width = z_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            width = size
        layers += [nn.Linear(width, channels * image_size * image_size), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.image_shape)  # (B, C, H, W)


class Discriminator(nn.Module):
    def __init__(
        self,
        channels: int = 1,
        image_size: int = 28,
        hidden: Sequence[int] = (1024, 512, 256),
        dropout: float = 0.0,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = channels * image_size * image_size
        for size in hidden:
            layers += [nn.Linear(width, size), nn.LeakyReLU(0.2, inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).squeeze(1)  # (B,) logits



