"""Building blocks shared by the model families: sizes, class conditioning, spectral norm."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import ImageSize, image_shape, setting_text

MAX_ASPECT = 4  # a non-square size's larger base at most 4x the smaller one: D's last kernel stays small


def stages_for(image_size: ImageSize, model: str = "dcgan") -> tuple[tuple[int, int], int]:
    """((base height, base width), number of 2x stages): each side == its base * 2**stages. The
    smaller side sets the stages as a square size does (halved while even and above 7, to a base
    in 3..7, at least once); the larger side must halve as often, to a whole base at most
    MAX_ASPECT times the smaller one. 28 -> ((7, 7), 2), 64 -> ((4, 4), 4), [48, 64] -> ((6, 8), 3)."""
    height, width = image_shape(image_size)
    base, stages = min(height, width), 0
    while base % 2 == 0 and base > 7:
        base, stages = base // 2, stages + 1
    larger = max(height, width)
    if not 3 <= base <= 7 or stages < 1 or larger % 2**stages or larger // 2**stages > MAX_ASPECT * base:
        raise GanCliError(
            f"model {model} cannot build dataset.image_size={setting_text(image_size)}: allowed are sizes b*2^k "
            f"with b in 3..7 and k >= 1, such as 28, 32, 48, 64, 128, or [height, width] whose smaller side is "
            f"such a size and whose larger side is a multiple of the same 2^k, up to {MAX_ASPECT}x the smaller "
            "side, such as [48,64], [28,56], [64,128]"
        )
    return (height // 2**stages, width // 2**stages), stages


def class_count(num_classes: int, conditional: bool) -> int:
    """Classes a model conditions on, 0 = unconditional. The config always passes
    dataset.num_classes and switches with model.conditional (checked in config.validate)."""
    return num_classes if conditional else 0


def require_labels(labels: Tensor | None, batch: int) -> Tensor:
    if labels is None or labels.shape != (batch,):
        got = "None" if labels is None else tuple(labels.shape)
        raise ValueError(f"a class-conditional model needs int64 labels of shape ({batch},), got {got}")
    return labels


def spectral_normalize(module: nn.Module) -> nn.Module:
    """Spectral norm (Miyato et al. 2018) on every conv, linear and embedding weight of `module`:
    each weight is divided by its largest singular value (one power iteration per training
    forward), which bounds the Lipschitz constant of each layer by 1."""
    layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    for layer in layers:
        spectral_norm(layer)
    return module


class ClassBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift are looked up per class (conditional BatchNorm, de Vries
    et al. 2017; as in the SNGAN / projection-discriminator generator). With num_classes=0 it is
    an ordinary affine BatchNorm2d and ignores the labels."""

    def __init__(self, features: int, num_classes: int = 0):
        super().__init__()
        self.bn = nn.BatchNorm2d(features, affine=num_classes == 0)
        self.embed: nn.Embedding | None = None
        if num_classes > 0:
            self.embed = nn.Embedding(num_classes, 2 * features)
            # Scale N(1, 0.02), shift 0 (as Mimicry): close to plain BN, yet classes differ from the start.
            nn.init.normal_(self.embed.weight[:, :features], 1.0, 0.02)
            nn.init.zeros_(self.embed.weight[:, features:])

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        x = self.bn(x)  # (B, C, H, W)
        if self.embed is None:
            return x
        scale, shift = self.embed(require_labels(labels, x.shape[0]))[:, :, None, None].chunk(2, dim=1)
        return x * scale + shift


class MinibatchStd(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018, as in StyleGAN2's D): appends one channel
    holding the feature-wise std across a group of `group_size` images, averaged over features
    and positions. A batch of near-identical fakes then looks different from a batch of real
    images, which lets D punish mode collapse (the failure the per-image D cannot see). It makes
    D's output depend on the whole group, so the batch size must be a multiple of `group_size`."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        group = min(self.group_size, batch)
        if batch % group:
            raise ValueError(f"MinibatchStd needs a batch size divisible by {group}, got {batch}")
        members = x.float().view(group, -1, channels, height, width)  # groups of images batch/group apart
        centered = members - members.mean(0)  # var(0) itself is ~10x slower on channels_last input (CPU)
        std = (centered.square().mean(0) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (batch / group,)
        extra = std.to(x.dtype).view(1, -1, 1, 1, 1).expand(group, -1, 1, height, width)
        return torch.cat([x, extra.reshape(batch, 1, height, width)], dim=1)  # (B, C + 1, H, W)
