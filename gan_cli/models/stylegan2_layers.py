"""StyleGAN2's building blocks (Karras et al. 2020, "Analyzing and Improving the Image Quality of
StyleGAN"), written for clarity over speed: no custom CUDA ops, bilinear resampling instead of the
paper's FIR filters.

Equalized learning rate (Karras et al. 2018): weights are stored as N(0, 1) / lr_multiplier and
scaled by lr_multiplier / sqrt(fan_in) at every forward, so Adam's per-parameter step moves every
layer's output by the same relative amount whatever its fan-in. The mapping network uses
lr_multiplier 0.01 (its weights learn 100x slower, as in the paper).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU_GAIN = math.sqrt(2.0)  # keeps the activation variance of leaky ReLU(0.2) near 1


class EqualLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_multiplier: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)  # (B, out)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activate else x


class EqualConv2d(nn.Module):
    """A plain (unmodulated) conv with equalized lr: D's layers. `down=True` halves H and W
    before the conv (2x2 average pooling, a box filter in place of the paper's FIR blur before its
    stride-2 conv): the conv then runs at the low resolution, 4x cheaper."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activate: bool = True, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.activate, self.down, self.padding = activate, down, kernel_size // 2

    def forward(self, x: Tensor) -> Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2)  # (B, in, H/2, W/2)
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)  # (B, out, H', W')
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activate else x


def upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # (B, C, 2H, 2W)


BLUR = torch.tensor([1.0, 2.0, 1.0])
# gain 4: a stride-2 transposed conv spreads each input over 4x the pixels
BLUR_KERNEL = (BLUR[:, None] * BLUR[None, :]) / 16 * 4


def blur(x: Tensor) -> Tensor:
    """[1 2 1] x [1 2 1] low-pass after a stride-2 transposed conv (the paper's FIR step, smaller):
    removes the checkerboard that uneven tap counts leave."""
    channels = x.shape[1]
    kernel = BLUR_KERNEL.to(x.device, x.dtype)[None, None].expand(channels, 1, 3, 3)
    return F.conv2d(x, kernel, padding=1, groups=channels)


class ModulatedConv2d(nn.Module):
    """A conv whose input channels are scaled per sample by a style s = affine(w) (modulation),
    and whose output channels are then divided by the norm of the resulting per-sample weights
    (demodulation): for unit-variance inputs, outputs have unit variance again, which replaces
    StyleGAN1's AdaIN without its droplet artifacts.

    Computed as scale input -> one shared conv -> scale output (stylegan2-ada's non-fused path):
    the same math as the per-sample weight w'_ijk = s_j w_ijk / sqrt(sum_jk (s_j w_ijk)^2 + eps),
    but one ordinary conv instead of a grouped conv over B weight copies (faster on CPUs).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, demodulate: bool = True,
                 up: bool = False):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1: the plain conv
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.demodulate, self.padding, self.up = demodulate, kernel_size // 2, up

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w)  # (B, in)
        weight = self.weight * self.weight_gain  # (out, in, k, k)
        x = x * styles[:, :, None, None].to(x.dtype)
        if self.up:  # as the paper: a stride-2 transposed conv (cost of a conv at the low resolution), then blur
            x = blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=self.padding,
                                        output_padding=1))  # (B, out, 2H, 2W)
        else:
            x = F.conv2d(x, weight, padding=self.padding)  # (B, out, H, W)
        if not self.demodulate:
            return x
        # sum over in, k, k of (s_j w_ijk)^2 = styles^2 @ (sum over k, k of w^2)^T: (B, out)
        norms = styles.square() @ weight.square().sum(dim=(2, 3)).t()
        return x * (norms + 1e-8).rsqrt()[:, :, None, None].to(x.dtype)


class StyledConv(nn.Module):
    """Modulated 3x3 conv (2x upsampling when `up`), per-pixel noise with a learned
    strength (starts at 0), bias, leaky ReLU. Noise is fresh in training mode and a fixed buffer
    in eval mode, so a sample depends on its latent alone (seeds, truncation strips, walks)."""

    noise_const: Tensor  # a buffer (1, 1, height, width) of the output

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: tuple[int, int],
                 up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise_const", torch.randn(1, 1, *resolution))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        x = self.conv(x, w)  # (B, out, H, W)
        if self.training:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const.to(x.dtype)
        x = x + noise * self.noise_strength + self.bias[None, :, None, None]
        return F.leaky_relu(x, 0.2) * LRELU_GAIN


class ToRGB(nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation (its output is the image)."""

    def __init__(self, in_channels: int, channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]  # (B, channels, H, W)


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convs, the second halving H and W; with `residual`, plus a 1x1 skip of the
    downsampled input, the sum scaled by sqrt(1/2) to keep its variance (StyleGAN2's resnet D)."""

    def __init__(self, in_channels: int, out_channels: int, residual: bool = True):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, down=True)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, activate=False) if residual else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(self.conv0(x))  # (B, out, H/2, W/2)
        if self.skip is None:
            return y
        return (y + self.skip(F.avg_pool2d(x, 2))) * math.sqrt(0.5)
