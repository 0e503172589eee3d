"""Low-resolution inputs for super-resolution (task=srgan), made on the device from each batch of
high-resolution images: whole-batch tensor ops, no per-image Python.

    downsample(hr, scale)       antialiased bicubic (the LR image, as in the paper: a bicubic kernel
                                with downsampling factor r), rounded to uint8 levels as a stored LR
                                image would be
    bicubic(lr, scale)          plain bicubic upsampling: the baseline every SR number is compared to
    nearest(lr, scale)          pixel replication, to show the LR input at the output size in grids
    random_crops(images, size)  one random size x size window per image (SRGAN's 96 px HR crops)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gan_cli.data.datasets import to_float, to_uint8


def downsample(hr: Tensor, scale: int) -> Tensor:
    """[-1, 1] images (B, C, H, W), H and W multiples of `scale` -> (B, C, H/scale, W/scale).
    antialias=True widens the bicubic kernel by `scale`, so every HR pixel contributes (a low-pass
    filter); without it, bicubic at x4 reads 4 of each 16 pixels and aliases thin strokes."""
    lr = F.interpolate(hr.float(), scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    return to_float(to_uint8(lr))  # clamped and quantized: what an 8-bit LR image holds


def bicubic(lr: Tensor, scale: int) -> Tensor:
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)


def nearest(lr: Tensor, scale: int) -> Tensor:
    return F.interpolate(lr, scale_factor=scale, mode="nearest")


def random_crops(images: Tensor, size: int, noise: torch.Generator | None = None) -> Tensor:
    """(B, C, H, W) -> (B, C, size, size), each image's own window, by one gather. `noise`: a private
    generator on the images' device (default: the global RNG, which checkpoints restore)."""
    batch, channels, height, width = images.shape
    if (height, width) == (size, size):
        return images
    device = images.device
    top = torch.randint(height - size + 1, (batch, 1), device=device, generator=noise)
    left = torch.randint(width - size + 1, (batch, 1), device=device, generator=noise)
    offsets = torch.arange(size, device=device)
    rows, cols = top + offsets, left + offsets  # (B, size) each
    return images[torch.arange(batch, device=device).view(-1, 1, 1, 1), torch.arange(channels, device=device).view(
        1, -1, 1, 1), rows.view(batch, 1, size, 1), cols.view(batch, 1, 1, size)]


def center_crop(images: Tensor, size: int) -> Tensor:
    top, left = (images.shape[-2] - size) // 2, (images.shape[-1] - size) // 2
    return images[..., top : top + size, left : left + size]
