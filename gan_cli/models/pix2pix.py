"""pix2pix's networks (Isola, Zhu, Zhou & Efros 2017), as in the paper and the authors' code
(junyanz/pytorch-CycleGAN-and-pix2pix, `UnetGenerator` and `NLayerDiscriminator`).

U-Net generator: an encoder of stride-2 4x4 convs (LeakyReLU 0.2) halving the size down to 1x1,
a decoder of stride-2 4x4 transposed convs (ReLU) back up, and a skip connection from each encoder
level to its mirror decoder level (concatenated on channels): the low-level detail an
image-to-image translation keeps (edges, positions) bypasses the bottleneck. Widths ngf, 2ngf,
4ngf, 8ngf, then 8ngf (max_mult) to the bottom. No norm on the first encoder conv (the paper) nor
on the 1x1 bottleneck (the authors' code: BatchNorm of a 1x1 map of a batch of 1 is zero).

Noise: the paper gives G no z (G learned to ignore it) and uses dropout 0.5 in the first 3 decoder
blocks as the only noise, at training AND test time. `dropout_at_test=True` keeps it in eval mode
too (the paper: samples stay stochastic); False makes eval-mode translation deterministic.

Sizes: depth = log2 of the image size rounded up to a power of two. An image that is not one
(MNIST's 28 px) is padded (replicate: no dark frame) to it inside forward, 28 -> 32, and the
output cropped back, so the bottleneck is still 1x1 and every skip lines up.

PatchGAN discriminator (conditional): sees the input and the output concatenated on channels,
4x4 convs, `layers` of them with stride 2, one with stride 1, a 1-channel conv: a logit per
overlapping patch. Receptive field 70 px for layers=3 (the paper's 70x70 at 256 px), 34 px for 2,
16 px for 1. Like CycleGAN's D it returns the patch logits flattened to (B * patches,), so every
gan-cli loss (means over logits) works unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import ImageSize, square_size
from gan_cli.models.cyclegan import pix2pix_init

NORMS = ("batch", "instance")
DROPOUT_BLOCKS = 3  # decoder blocks with dropout, from the bottleneck up (the paper's CD512 x 3)


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":  # the paper's (batch size 1 there: in effect instance statistics)
        return nn.BatchNorm2d(channels)
    if kind == "instance":  # no affine, no running statistics, as the authors' code
        return nn.InstanceNorm2d(channels)
    raise GanCliError(f"invalid pix2pix norm={kind!r}: allowed are {', '.join(NORMS)}")


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) convs (the paper), BatchNorm scales N(1, 0.02) and zero shifts (the authors' code)."""
    pix2pix_init(module)
    if isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Dropout(nn.Module):
    """Dropout that can stay on in eval mode: the pix2pix generator's only noise source."""

    def __init__(self, p: float, at_test: bool):
        super().__init__()
        self.p, self.at_test = p, at_test

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, training=self.training or self.at_test)


class UNetGenerator(nn.Module):
    """images (B, channels_in, H, W) in [-1, 1] -> (B, channels_out, H, W) in [-1, 1], H, W <= the
    power of two at or above image_size."""

    def __init__(self, channels_in: int = 3, channels_out: int = 3, ngf: int = 64, image_size: ImageSize = 256,
                 max_mult: int = 8, dropout: float = 0.5, norm: str = "batch", dropout_at_test: bool = True):
        super().__init__()
        image_size = square_size(image_size, "model=pix2pix")  # it pads to a square power of two
        if image_size < 2 or ngf < 1 or max_mult < 1 or not 0 <= dropout < 1:
            raise GanCliError(f"invalid pix2pix generator: image_size={image_size}, ngf={ngf}, max_mult={max_mult}, "
                              f"dropout={dropout}; allowed are image_size >= 2, ngf, max_mult >= 1, 0 <= dropout < 1")
        self.channels_in, self.channels_out = channels_in, channels_out
        self.depth = (image_size - 1).bit_length()  # 28 -> 5 (32 px), 32 -> 5, 256 -> 8
        self.size = 2**self.depth
        use_bias = norm == "instance"  # BatchNorm's shift makes a conv bias redundant
        widths = [ngf * min(2**level, max_mult) for level in range(self.depth)]  # encoder level -> channels

        # Encoder: level i maps (B, widths[i-1], s, s) -> (B, widths[i], s/2, s/2), down to 1x1.
        self.encoder = nn.ModuleList([nn.Conv2d(channels_in, widths[0], 4, stride=2, padding=1)])
        for level in range(1, self.depth):
            innermost = level == self.depth - 1
            block: list[nn.Module] = [nn.LeakyReLU(0.2), nn.Conv2d(widths[level - 1], widths[level], 4, stride=2,
                                                                   padding=1, bias=use_bias or innermost)]
            if not innermost:
                block.append(norm_layer(norm, widths[level]))
            self.encoder.append(nn.Sequential(*block))

        # Decoder: block j goes from level depth-1-j up to level depth-2-j and its output is then
        # concatenated with that encoder level's features (hence the 2x input widths after block 0).
        self.decoder = nn.ModuleList()
        for j in range(self.depth - 1):
            level = self.depth - 2 - j
            width_in = widths[level + 1] * (1 if j == 0 else 2)
            block = [nn.ReLU(), nn.ConvTranspose2d(width_in, widths[level], 4, stride=2, padding=1, bias=use_bias),
                     norm_layer(norm, widths[level])]
            if j < DROPOUT_BLOCKS and dropout > 0:
                block.append(Dropout(dropout, dropout_at_test))
            self.decoder.append(nn.Sequential(*block))
        width_in = widths[0] * (1 if self.depth == 1 else 2)
        self.output = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(width_in, channels_out, 4, stride=2, padding=1),
                                    nn.Tanh())
        self.apply(init_weights)

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        if height > self.size or width > self.size:
            raise GanCliError(f"image size {height}x{width} is larger than the U-Net built for {self.size} px: "
                              "set model.generator.image_size to the images' size")
        top, left = (self.size - height) // 2, (self.size - width) // 2
        x = F.pad(images, (left, self.size - width - left, top, self.size - height - top), mode="replicate")
        skips = []
        for down in self.encoder:  # (B, C, S, S) -> ... -> (B, widths[-1], 1, 1)
            x = down(x)
            skips.append(x)
        x = skips.pop()
        for up in self.decoder:  # (B, w, s, s) -> (B, 2w', 2s, 2s) with the mirror level's skip
            x = torch.cat([up(x), skips.pop()], dim=1)
        x = self.output(x)  # (B, channels_out, S, S)
        return x[..., top : top + height, left : left + width]


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: (inputs (B, channels_in, H, W), outputs (B, channels_out, H, W)) ->
    patch logits flattened to (B * patches,)."""

    def __init__(self, channels_in: int = 3, channels_out: int = 3, ndf: int = 64, layers: int = 3,
                 norm: str = "batch"):
        super().__init__()
        if layers < 1:
            raise GanCliError(f"invalid value model.discriminator.layers={layers}: allowed is an integer >= 1")
        use_bias = norm == "instance"
        stack: list[nn.Module] = [nn.Conv2d(channels_in + channels_out, ndf, 4, stride=2, padding=1),
                                  nn.LeakyReLU(0.2)]
        width = ndf
        for index in range(1, layers + 1):  # the last one keeps the size (stride 1), as the paper's
            wider = ndf * min(2**index, 8)
            stack += [nn.Conv2d(width, wider, 4, stride=2 if index < layers else 1, padding=1, bias=use_bias),
                      norm_layer(norm, wider), nn.LeakyReLU(0.2)]
            width = wider
        stack.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))  # (B, 1, h, w): a logit per patch
        self.net = nn.Sequential(*stack)
        self.apply(init_weights)

    def forward(self, inputs: Tensor, outputs: Tensor) -> Tensor:
        return self.net(torch.cat([inputs, outputs], dim=1)).flatten()  # (B * h * w,)
