"""DCGAN conditioned on a caption embedding (Reed et al. 2016, "Generative Adversarial Text to
Image Synthesis"), built from gan_cli/models/dcgan.py's networks.

G: the embedding goes through a linear layer + leaky ReLU to `condition_dim` numbers and is
concatenated to z, in place of the class embedding of the conditional DCGAN; the rest is DCGAN's G.
D: DCGAN's D up to its last conv; the compressed embedding is replicated over the final
(base x base) feature map and concatenated to it, then a 1x1 conv mixes image and text features
before the last conv gives one logit: a matching-aware D can tell an image that fits its caption
from one that does not. Beside the paper's concatenation, D adds a projection term (Miyato &
Koyama 2018, as the class-conditional DCGAN here): <W c, features summed over positions>. On
MNIST it binds the digit asked to the image much sooner than concatenation alone (mnist_text:
the classifier read 33% of the samples as the digit asked after 2,100 steps without it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import ImageSize
from gan_cli.models import dcgan
from gan_cli.models.layers import spectral_normalize, stages_for


def caption_width(text_dim: int | None, model: str) -> int:
    """task=text2image passes `text_dim` (task.text_dim) to its networks; another task does not."""
    if text_dim is None:
        raise GanCliError(f"model={model} draws from captions: use it with task=text2image (other tasks give its "
                          "networks no caption embedding)")
    return text_dim


def compressor(text_dim: int, condition_dim: int) -> nn.Module:
    """The paper's projection of the caption embedding (to 128 numbers, leaky ReLU)."""
    return nn.Sequential(nn.Linear(text_dim, condition_dim), nn.LeakyReLU(0.2, True))


class TextGenerator(nn.Module):
    """(z (B, z_dim), caption embedding (B, text_dim)) -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, z_dim: int = 100, text_dim: int | None = None, condition_dim: int = 128, channels: int = 1,
                 image_size: ImageSize = 28, ngf: int = 64):
        super().__init__()
        self.z_dim = z_dim
        self.compress = compressor(caption_width(text_dim, "text_dcgan"), condition_dim)
        self.body = dcgan.Generator(z_dim + condition_dim, channels, image_size, ngf, num_classes=0)

    def forward(self, z: Tensor, text: Tensor) -> Tensor:
        return self.body(torch.cat([z, self.compress(text)], dim=1))


class MatchingDiscriminator(nn.Module):
    """(images (B, C, H, W), caption embeddings (B, text_dim)) -> logits (B,): real and matching."""

    def __init__(self, channels: int = 1, image_size: ImageSize = 28, ndf: int = 64, text_dim: int | None = None,
                 condition_dim: int = 128, spectral_norm: bool = False):
        super().__init__()
        text_dim = caption_width(text_dim, "text_dcgan")
        body = dcgan.Discriminator(channels, image_size, ndf, spectral_norm=spectral_norm, num_classes=0)
        self.features = body.net[:-1]  # (B, width, base_h, base_w)
        base, stages = stages_for(image_size)
        width = ndf * 2 ** (stages - 1)
        self.compress = compressor(text_dim, condition_dim)
        self.joint = nn.Sequential(nn.Conv2d(width + condition_dim, width, 1), nn.LeakyReLU(0.2, True))
        self.logit = nn.Conv2d(width, 1, base)  # (B, width, base_h, base_w) -> (B, 1, 1, 1)
        self.project = nn.Linear(condition_dim, width, bias=False)  # the projection term's W
        # the body is initialized (and spectrally normalized) already: the text-reading heads here
        for head in (self.compress, self.joint, self.logit, self.project):
            head.apply(dcgan.dcgan_init)
            if spectral_norm:
                spectral_normalize(head)

    def forward(self, images: Tensor, text: Tensor) -> Tensor:
        features = self.features(images)  # (B, width, base_h, base_w)
        compressed = self.compress(text)  # (B, condition_dim)
        condition = compressed[:, :, None, None].expand(-1, -1, *features.shape[2:])
        logits = self.logit(self.joint(torch.cat([features, condition], dim=1))).view(-1)  # (B,)
        return logits + (self.project(compressed) * features.sum(dim=(2, 3))).sum(1)
