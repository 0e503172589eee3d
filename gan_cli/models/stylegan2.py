"""StyleGAN2 (Karras et al. 2020), compact: mapping network z -> w, synthesis from a learned
constant with modulated/demodulated convs, noise inputs and skip toRGB outputs; a residual D with
minibatch std. Layers in stylegan2_layers.py.

Sizes follow the dataset like DCGAN's (layers.stages_for): 28 px starts at 7x7 (7 -> 14 -> 28),
32 and 64 px at 4x4, a non-square [48, 64] at 6x8. Padding 28 px MNIST to 32 would cost ~30% more
pixels per layer for borders that are always blank, and would need a crop before D and the
metrics. Widths per resolution r are min(channel_base // r, channel_max), as stylegan2-ada-pytorch's
cbase/cmax (r: the smaller side of a non-square resolution).

The generator keeps image_gan's contract, G(z, labels) -> image, and exposes its parts for the
StyleGAN tools: `mapping_ws(z, labels, truncation)` -> ws (B, num_ws, w_dim), one w per modulated
layer, and `synthesis(ws)` -> image. In training mode, forward() also
  - tracks w_avg, the moving average of w (beta `w_avg_beta`, 0.995 as stylegan2-ada), the centre
    that truncation pulls towards: w' = w_avg + psi (w - w_avg) (a conditional G pulls towards
    each class's own mean w instead: `truncation_center`);
  - mixes styles with probability `style_mixing_prob`: the ws from one layer on come from a second
    latent, so neighbouring layers cannot assume they share a style (the paper's mixing
    regularization, per batch with a random crossover layer as stylegan2-ada does).
`pl_mean` is the path-length regularizer's running mean (diversity=path_length): a buffer, so the
checkpoint and a resume carry it.

The condition is a class label by default; `condition=` (a builder: width -> module) embeds
another one in its place, as models/text_stylegan2.py does with a caption embedding (the
mapping network's input and D's projection, stylegan2-ada's c).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import ImageSize, image_shape
from gan_cli.models.layers import MinibatchStd, class_count, stages_for
from gan_cli.models.stylegan2_layers import DiscriminatorBlock, EqualConv2d, EqualLinear, StyledConv, ToRGB, upsample

# width -> a module embedding the condition to that many numbers (ClassEmbedding's place)
ConditionEmbedding = Callable[[int], nn.Module]
CENTER_LATENTS = 1024  # latents averaged into a class's truncation centre: a fixed set, so sampling is reproducible


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def widths(channel_base: int, channel_max: int) -> Callable[[int], int]:
    """Feature maps at a resolution: min(channel_base // resolution, channel_max)."""
    return lambda resolution: max(min(channel_base // resolution, channel_max), 1)


class ClassEmbedding(nn.Embedding):
    """(B,) int64 class labels -> (B, dim) learned vectors (a plain nn.Embedding's weights)."""

    def forward(self, labels: Tensor | None) -> Tensor:
        if labels is None or labels.dim() != 1:
            got = "None" if labels is None else tuple(labels.shape)
            raise ValueError(f"a class-conditional model needs int64 labels of shape (B,), got {got}")
        return super().forward(labels)


def condition_embedding(condition: ConditionEmbedding | None, num_classes: int, width: int) -> nn.Module | None:
    """`condition`'s embedding to `width` numbers; else a class embedding, or None (unconditional)."""
    if condition is not None:
        return condition(width)
    return ClassEmbedding(num_classes, width) if num_classes else None


class MappingNetwork(nn.Module):
    """z (and the condition's embedding `embed`, when conditional) -> w through `layers` fully
    connected layers whose weights learn `lr_multiplier` times slower (0.01: the paper's). As
    stylegan2-ada: z and the embedding are each normalized, then concatenated."""

    def __init__(self, z_dim: int, w_dim: int, embed: nn.Module | None, layers: int, lr_multiplier: float = 0.01):
        super().__init__()
        self.embed = embed  # -> (B, w_dim)
        in_features = z_dim + (w_dim if embed is not None else 0)
        self.net = nn.Sequential(*[EqualLinear(in_features if i == 0 else w_dim, w_dim, lr_multiplier=lr_multiplier,
                                               activate=True) for i in range(layers)])

    def forward(self, z: Tensor, labels: Tensor | None) -> Tensor:
        x = normalize_2nd_moment(z)  # (B, z_dim)
        if self.embed is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed(labels))], dim=1)
        return self.net(x)  # (B, w_dim)


class SynthesisBlock(nn.Module):
    """One resolution doubling: up + conv, conv, toRGB added to the upsampled image (skip G)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: tuple[int, int], channels: int):
        super().__init__()
        self.conv0 = StyledConv(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = StyledConv(out_channels, out_channels, w_dim, resolution)
        self.to_rgb = ToRGB(out_channels, channels, w_dim)

    def forward(self, x: Tensor, image: Tensor, ws: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv1(self.conv0(x, ws[:, 0]), ws[:, 1])  # (B, out, 2H, 2W)
        return x, upsample(image) + self.to_rgb(x, ws[:, 2])


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> image. w index order: the input conv and its toRGB at the base
    resolution, then (conv0, conv1, toRGB) per block; `ws_resolutions[i]` is the resolution w i
    styles (the style-mixing grid's coarse / middle / fine split reads it)."""

    def __init__(self, w_dim: int, image_size: ImageSize, channels: int, channel_base: int, channel_max: int):
        super().__init__()
        (base_h, base_w), stages = stages_for(image_size, "stylegan2")
        width = widths(channel_base, channel_max)
        # (height, width) per resolution; a resolution's number (widths, ws_resolutions) is its smaller
        # side, as a square model of that size: [48, 64] has a 48 model's widths
        shapes = [(base_h * 2**i, base_w * 2**i) for i in range(stages + 1)]
        sizes = [min(shape) for shape in shapes]
        base = sizes[0]
        self.const = nn.Parameter(torch.randn(width(base), base_h, base_w))  # the learned input
        self.input_conv = StyledConv(width(base), width(base), w_dim, shapes[0])
        self.input_rgb = ToRGB(width(base), channels, w_dim)
        self.blocks = nn.ModuleList(SynthesisBlock(width(r // 2), width(r), w_dim, shape, channels)
                                    for r, shape in zip(sizes[1:], shapes[1:], strict=True))
        self.ws_resolutions = [base, base] + [r for r in sizes[1:] for _ in range(3)]
        self.num_ws = len(self.ws_resolutions)

    def forward(self, ws: Tensor) -> Tensor:
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)  # (B, C, base_h, base_w)
        x = self.input_conv(x, ws[:, 0])
        image = self.input_rgb(x, ws[:, 1])
        for index, block in enumerate(self.blocks):
            x, image = block(x, image, ws[:, 2 + 3 * index: 5 + 3 * index])
        return image  # (B, channels, H, W), roughly [-1, 1] (no tanh, as in the paper)


class Generator(nn.Module):
    """A StyleGenerator (models/abilities.py): the StyleGAN tools (truncation, walks in w, mixing
    grids, path length) work with it."""

    w_avg: Tensor  # buffers: (w_dim,) and 0-dim
    pl_mean: Tensor

    def __init__(
        self,
        z_dim: int = 512,
        w_dim: int = 512,
        channels: int = 1,
        image_size: ImageSize = 28,
        channel_base: int = 32768,
        channel_max: int = 512,
        mapping_layers: int = 8,
        num_classes: int = 0,
        conditional: bool = True,
        style_mixing_prob: float = 0.9,
        w_avg_beta: float = 0.995,
        condition: ConditionEmbedding | None = None,
    ):
        super().__init__()
        if not 0.0 <= style_mixing_prob <= 1.0:
            raise GanCliError(f"invalid value model.style_mixing_prob={style_mixing_prob}: "
                              "allowed is a number in [0, 1]")
        if mapping_layers < 1:
            raise GanCliError(f"invalid value model.mapping_layers={mapping_layers}: allowed is an integer >= 1")
        self.z_dim, self.w_dim = z_dim, w_dim
        self.num_classes = class_count(num_classes, conditional)
        self.style_mixing_prob, self.w_avg_beta = style_mixing_prob, w_avg_beta
        self.mapping = MappingNetwork(z_dim, w_dim, condition_embedding(condition, self.num_classes, w_dim),
                                      mapping_layers)
        self.synthesis = SynthesisNetwork(w_dim, image_size, channels, channel_base, channel_max)
        self.num_ws = self.synthesis.num_ws
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.register_buffer("pl_mean", torch.zeros([]))

    def mapping_ws(self, z: Tensor, labels: Tensor | None = None, truncation: float = 1.0,
                   track_w_avg: bool = False) -> Tensor:
        """(B, num_ws, w_dim): w broadcast to every layer, pulled towards w_avg by `truncation` (psi)."""
        w = self.mapping(z, labels)  # (B, w_dim)
        if track_w_avg:
            self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if truncation != 1.0:
            w = self.truncation_center(labels).to(w.dtype).lerp(w, truncation)
        return w[:, None].expand(-1, self.num_ws, -1)

    @torch.no_grad()
    def truncation_center(self, labels: Tensor | None) -> Tensor:
        """What truncation pulls w towards: w_avg for an unconditional G; for a conditional one,
        each condition's own mean w, (B, w_dim), over CENTER_LATENTS fixed latents. The single
        w_avg of stylegan2-ada averages over every class, so psi -> 0 turned every class into one
        class-less blob; a per-class centre keeps the class (as StyleGAN-XL's conditional
        truncation). Computed on demand, not tracked: sampling only, and the mapping is cheap.
        `labels`: (B,) classes or (B, dim) rows of another condition (each distinct row once)."""
        if labels is None or self.mapping.embed is None:
            return self.w_avg
        z = torch.randn(CENTER_LATENTS, self.z_dim, generator=torch.Generator().manual_seed(0)).to(self.w_avg.device)
        conditions, which = labels.unique(dim=0, return_inverse=True)
        means = torch.stack([self.mapping(z, c.expand(CENTER_LATENTS, *c.shape)).mean(0) for c in conditions])
        return means[which]  # (B, w_dim)

    def mix(self, ws: Tensor, z: Tensor, labels: Tensor | None) -> Tensor:
        """With probability style_mixing_prob: layers from a random crossover on take the ws of new latents."""
        if self.style_mixing_prob <= 0 or torch.rand([]).item() >= self.style_mixing_prob:
            return ws
        cutoff = int(torch.randint(1, self.num_ws, []).item())
        other = self.mapping_ws(torch.randn_like(z), labels)
        return torch.cat([ws[:, :cutoff], other[:, cutoff:]], dim=1)

    def forward(self, z: Tensor, labels: Tensor | None = None, truncation: float = 1.0) -> Tensor:
        ws = self.mapping_ws(z, labels, truncation, track_w_avg=self.training)
        if self.training:
            ws = self.mix(ws, z, labels)
        return self.synthesis(ws)  # (B, C, H, W)


class Discriminator(nn.Module):
    """fromRGB, residual blocks down to the base resolution, then minibatch std, a 3x3 conv and two
    linear layers. Conditional: a projection head (Miyato & Koyama 2018, as dcgan's D and
    stylegan2-ada's cmap): logit += <embed(y), h> / sqrt(dim) on the last hidden features h."""

    def __init__(
        self,
        channels: int = 1,
        image_size: ImageSize = 28,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_classes: int = 0,
        conditional: bool = True,
        minibatch_std: int = 4,
        residual: bool = True,
        condition: ConditionEmbedding | None = None,
    ):
        super().__init__()
        self.num_classes = class_count(num_classes, conditional)
        (base_h, base_w), stages = stages_for(image_size, "stylegan2")
        width = widths(channel_base, channel_max)
        sizes = [min(image_shape(image_size)) // 2**i for i in range(stages + 1)]  # e.g. 28, 14, 7 (smaller side)
        base = sizes[-1]
        self.from_rgb = EqualConv2d(channels, width(sizes[0]), 1)
        self.blocks = nn.Sequential(*[DiscriminatorBlock(width(r), width(r // 2), residual) for r in sizes[:-1]])
        top = width(base)
        self.minibatch_std = MinibatchStd(minibatch_std) if minibatch_std > 0 else nn.Identity()
        self.conv = EqualConv2d(top + (minibatch_std > 0), top, 3)
        self.fc = EqualLinear(top * base_h * base_w, top, activate=True)
        self.out = EqualLinear(top, 1)
        self.embed = condition_embedding(condition, self.num_classes, top)
        self.projection_gain = 1.0 / math.sqrt(top)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        x = self.blocks(self.from_rgb(images))  # (B, top, base_h, base_w)
        features = self.fc(self.conv(self.minibatch_std(x)).flatten(1))  # (B, top)
        logits = self.out(features).view(-1)  # (B,)
        if self.embed is not None:
            projection = self.embed(labels) * features
            logits = logits + projection.sum(1) * self.projection_gain
        return logits
