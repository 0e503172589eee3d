"""DiffAugment (Zhao, Liu, Lin, Zhu & Han 2020): differentiable augmentation for data-efficient GANs.

D sees every image, real and fake, through the same kind of random transform; because the
transforms are differentiable, G's gradient passes through them to the fakes. Augmenting only
the reals would teach G to draw the augmentations; augmenting both keeps D from memorizing the
training set without changing what G learns. Operations follow the authors' reference code
(mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py) on images in [-1, 1], batched on the
device with one random draw per image. The contract of an `augment` option is contracts.Augmentation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gan_cli.core.errors import GanCliError


def brightness(images: Tensor) -> Tensor:
    shift = torch.rand(images.shape[0], 1, 1, 1, device=images.device, dtype=images.dtype) - 0.5
    return images + shift  # U(-0.5, 0.5) added to every pixel


def saturation(images: Tensor) -> Tensor:
    gray = images.mean(dim=1, keepdim=True)  # (B, 1, H, W); a no-op on 1-channel images
    scale = torch.rand(images.shape[0], 1, 1, 1, device=images.device, dtype=images.dtype) * 2
    return (images - gray) * scale + gray  # U(0, 2) times the distance to gray


def contrast(images: Tensor) -> Tensor:
    mean = images.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    scale = torch.rand(images.shape[0], 1, 1, 1, device=images.device, dtype=images.dtype) + 0.5
    return (images - mean) * scale + mean  # U(0.5, 1.5) times the distance to the image mean


def translation(images: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to ratio * size pixels in each direction; zeros fill the gap."""
    batch, _, height, width = images.shape
    max_dy, max_dx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (batch, 1), device=images.device)
    dx = torch.randint(-max_dx, max_dx + 1, (batch, 1), device=images.device)
    # Index into a 1-pixel zero border: every source index outside the image lands on it.
    rows = (torch.arange(height, device=images.device) + dy + 1).clamp(0, height + 1)  # (B, H)
    cols = (torch.arange(width, device=images.device) + dx + 1).clamp(0, width + 1)  # (B, W)
    padded = F.pad(images, [1, 1, 1, 1])  # (B, C, H + 2, W + 2)
    index = torch.arange(batch, device=images.device)[:, None, None]
    shifted = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return shifted.permute(0, 3, 1, 2)


def cutout(images: Tensor, ratio: float = 0.5) -> Tensor:
    """Zero one square of ratio * size per image, centred anywhere (it may hang over the edge)."""
    batch, _, height, width = images.shape
    cut_h, cut_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    centre_y = torch.randint(0, height + (1 - cut_h % 2), (batch, 1, 1), device=images.device)
    centre_x = torch.randint(0, width + (1 - cut_w % 2), (batch, 1, 1), device=images.device)
    rows = torch.arange(height, device=images.device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(width, device=images.device)[None, None, :]  # (1, 1, W)
    top, left = centre_y - cut_h // 2, centre_x - cut_w // 2
    inside = (rows >= top) & (rows < top + cut_h) & (cols >= left) & (cols < left + cut_w)  # (B, H, W)
    return images * (~inside).unsqueeze(1).to(images.dtype)


class DiffAugment:
    """`DiffAugment("color,translation,cutout")(images)`: (B, C, H, W) -> (B, C, H, W), same device.

    The policy names groups of operations, applied in the order given: color = brightness,
    saturation, contrast; translation; cutout. An empty policy returns the images unchanged.
    Color may leave [-1, 1] (as in the reference code: clamping would cut the gradient).
    """

    def __init__(self, policy: str = "", translation_ratio: float = 0.125, cutout_ratio: float = 0.5):
        groups: dict[str, list[Callable[[Tensor], Tensor]]] = {
            "color": [brightness, saturation, contrast],
            "translation": [lambda images: translation(images, translation_ratio)],
            "cutout": [lambda images: cutout(images, cutout_ratio)],
        }
        names = [name.strip() for name in policy.split(",") if name.strip()]
        unknown = [name for name in names if name not in groups]
        if unknown:
            raise GanCliError(
                f"invalid value augment.policy={policy!r}: unknown {', '.join(unknown)}; allowed is a "
                f"comma-separated list of {', '.join(groups)}, or '' for none"
            )
        self.policy = ",".join(names)
        self.operations = [operation for name in names for operation in groups[name]]

    def __call__(self, images: Tensor) -> Tensor:
        for operation in self.operations:
            images = operation(images)
        return images

    def __repr__(self) -> str:
        return f"DiffAugment(policy={self.policy!r})"
