"""DCGAN (Radford, Metz & Chintala 2015) with depth that follows the image size.

The spatial size is halved while it is even and above 7: 28 -> 14 -> 7 (2 stages from a 7x7
start), 32 -> 4 (3 stages), 64 -> 4 (4 stages). A non-square [height, width] halves both sides as
often as its smaller side (layers.stages_for): [48, 64] starts from 6x8. G doubles its width
towards z, D towards the logit, as in the paper's 64x64 architecture.

Class-conditional when built with num_classes > 0 (and conditional=True): G concatenates a
learned label embedding to z; D is a projection discriminator (Miyato & Koyama 2018), logit +=
<embed(y), flattened features before the last conv>. With spectral_norm=True, D's BatchNorms
are dropped (SNGAN's "standard CNN" D has none: spectral norm already controls the layer scale,
and per-sample penalties such as WGAN-GP and R1 are ill-defined when BatchNorm mixes samples).
With minibatch_std=G > 0, the last conv also sees the feature std over groups of G images (see
layers.MinibatchStd): a cure for the mode collapse that D cannot see one image at a time.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gan_cli.core.sizes import ImageSize
from gan_cli.models.layers import MinibatchStd, class_count, require_labels, spectral_normalize, stages_for


def dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) weights as in the paper; BatchNorm scale N(1, 0.02), biases zero."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    def __init__(
        self,
        z_dim: int = 100,
        channels: int = 1,
        image_size: ImageSize = 28,
        ngf: int = 64,
        num_classes: int = 0,
        conditional: bool = True,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.num_classes = class_count(num_classes, conditional)
        self.embed = nn.Embedding(self.num_classes, z_dim) if self.num_classes else None
        base, stages = stages_for(image_size)  # base: (height, width)
        width = ngf * 2 ** (stages - 1)
        in_width = 2 * z_dim if self.num_classes else z_dim  # z, then the label embedding
        layers: list[nn.Module] = [  # (B, in_width, 1, 1) -> (B, width, base_h, base_w)
            nn.ConvTranspose2d(in_width, width, base, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(stages - 1):  # each stage doubles H and W, halves the width
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(require_labels(labels, z.shape[0]))], dim=1)  # (B, 2 z_dim)
        return self.net(z.view(z.shape[0], -1, 1, 1))  # (B, C, H, W)


class Discriminator(nn.Module):
    def __init__(
        self,
        channels: int = 1,
        image_size: ImageSize = 28,
        ndf: int = 64,
        spectral_norm: bool = False,
        num_classes: int = 0,
        conditional: bool = True,
        minibatch_std: int = 0,
    ):
        super().__init__()
        self.num_classes = class_count(num_classes, conditional)
        base, stages = stages_for(image_size)
        # No BatchNorm on the first layer: the paper found it destabilizes training.
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for _ in range(stages - 1):
            # Identity in place of BatchNorm keeps the layer indices (state_dict keys) the same.
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=spectral_norm),
                nn.Identity() if spectral_norm else nn.BatchNorm2d(width * 2),
                nn.LeakyReLU(0.2, True),
            ]
            width *= 2
        # An extra input channel: the group's feature std, when minibatch_std (group size) > 0.
        layers.append(nn.Conv2d(width + (minibatch_std > 0), 1, base, 1, 0))  # (B, width, *base) -> (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)
        self.minibatch_std = MinibatchStd(minibatch_std) if minibatch_std > 0 else nn.Identity()
        self.embed = nn.Embedding(self.num_classes, width * base[0] * base[1]) if self.num_classes else None
        self.apply(dcgan_init)
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)  # like the last conv it stands beside
        if spectral_norm:
            spectral_normalize(self)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        features = self.net[:-1](images)  # (B, width, base_h, base_w)
        logits = self.net[-1](self.minibatch_std(features)).view(-1)  # (B,)
        if self.embed is not None:
            projection = self.embed(require_labels(labels, images.shape[0])) * features.flatten(1)
            logits = logits + projection.sum(1)
        return logits
