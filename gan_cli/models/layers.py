"""Building blocks shared by the model families: class conditioning and spectral norm."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


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
