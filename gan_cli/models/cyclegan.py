"""CycleGAN's networks (Zhu, Park, Isola & Efros 2017), as in the authors' code
(junyanz/pytorch-CycleGAN-and-pix2pix, `ResnetGenerator` and `NLayerDiscriminator`).

Generator (Johnson et al. 2016): c7s1-ngf, `downsamplings` stride-2 3x3 convs doubling the width,
`blocks` residual blocks, as many stride-2 transposed convs back, c7s1-out, tanh. InstanceNorm
(per-image statistics: a translation must not depend on the rest of the batch) and reflection
padding (no dark borders). The paper: 2 downsamplings and 9 blocks at 256 px, 6 at 128 px; a
28-32 px image has room for 2 (28 -> 14 -> 7).

PatchGAN discriminator: 4x4 convs, `layers` of them with stride 2, then one with stride 1 and a
1-channel conv: a logit per overlapping patch. The receptive field is 70 px for layers=3 (the
paper's 70x70 PatchGAN at 256 px), 34 px for 2, 16 px for 1. D returns the patch logits
flattened to (B * patches,), so every loss of gan-cli (means over logits) works unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn

from gan_cli.core.errors import GanCliError


def norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels)  # no affine, no running statistics: the paper's choice


def pix2pix_init(module: nn.Module) -> None:
    """N(0, 0.02) conv weights, zero biases (the authors' `init_type=normal`)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), norm(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """images (B, in_channels, H, W) in [-1, 1] -> (B, out_channels, H, W) in [-1, 1]; H and W
    multiples of 2**downsamplings."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, blocks: int = 9,
                 downsamplings: int = 2):
        super().__init__()
        if blocks < 0 or downsamplings < 0:
            raise GanCliError(f"invalid CycleGAN generator: blocks={blocks}, downsamplings={downsamplings}; "
                              "allowed are integers >= 0")
        self.in_channels, self.out_channels, self.downsamplings = in_channels, out_channels, downsamplings
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), norm(ngf), nn.ReLU(True)]
        width = ngf
        for _ in range(downsamplings):  # (B, w, H, W) -> (B, 2w, H/2, W/2)
            layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), norm(2 * width), nn.ReLU(True)]
            width *= 2
        layers += [ResidualBlock(width) for _ in range(blocks)]
        for _ in range(downsamplings):  # (B, w, H, W) -> (B, w/2, 2H, 2W)
            layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                       norm(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(pix2pix_init)

    def forward(self, images: Tensor) -> Tensor:
        multiple = 2**self.downsamplings
        if images.shape[-1] % multiple or images.shape[-2] % multiple:
            raise GanCliError(f"image size {tuple(images.shape[-2:])} is not a multiple of {multiple} "
                              f"(2^downsamplings): resize the images or use fewer downsamplings")
        return self.net(images)


class Discriminator(nn.Module):
    """PatchGAN: images (B, C, H, W) -> patch logits flattened to (B * patches,)."""

    def __init__(self, channels: int = 3, ndf: int = 64, layers: int = 3):
        super().__init__()
        if layers < 1:
            raise GanCliError(f"invalid value model.discriminator.layers={layers}: allowed is an integer >= 1")
        stack: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for index in range(1, layers + 1):  # the last one keeps the size (stride 1), as the paper's
            wider = ndf * min(2**index, 8)
            stack += [nn.Conv2d(width, wider, 4, stride=2 if index < layers else 1, padding=1), norm(wider),
                      nn.LeakyReLU(0.2, True)]
            width = wider
        stack.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))  # (B, 1, h, w): a logit per patch
        self.net = nn.Sequential(*stack)
        self.apply(pix2pix_init)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).flatten()
