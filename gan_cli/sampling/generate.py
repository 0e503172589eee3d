"""Sampling a z -> image generator, in one place (mimicry's `generate_images`): its latents from a
seed alone, its labels, eval mode and uint8 output. The training preview, the evaluation,
gan-sample and gan-eval all draw through these."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gan_cli.data.datasets import to_uint8
from gan_cli.tasks.base import in_eval_mode


def class_count(generator: nn.Module) -> int:
    """The classes G is conditioned on (0 = unconditional): the one place that asks."""
    return int(getattr(generator, "num_classes", 0) or 0)


def z_dim(generator: nn.Module) -> int:
    """The length of G's latent vector (every z -> image generator declares `z_dim`, a plain int
    attribute: nn.Module keeps those in the instance dict, beside its parameters and submodules)."""
    value = vars(generator).get("z_dim")
    if not isinstance(value, int):
        raise TypeError(f"{type(generator).__name__} declares no integer z_dim: it is no z -> image generator")
    return value


def draw_latents(count: int, z_size: int, seed: int, chunk: int | None = None) -> Tensor:
    """(count, z_size) normal latents on the CPU from `seed` alone, drawn `chunk` rows at a time
    (None: all at once, so they do not depend on any batch size). Evaluation draws in chunks of
    eval.batch_size, as it always has, so its numbers stay comparable across versions."""
    noise = torch.Generator().manual_seed(seed)
    chunk = chunk or count
    return torch.cat([torch.randn(min(chunk, count - start), z_size, generator=noise)
                      for start in range(0, count, chunk)])


@torch.no_grad()
def generate(generator: nn.Module, z: Tensor, labels: Tensor | None, batch_size: int,
             truncation: float = 1.0) -> Tensor:
    """uint8 images (N, C, H, W) on G's device: G in eval mode, `batch_size` latents at a time;
    `truncation` (psi) reaches G only when set, as only a StyleGAN takes it."""
    device = next(generator.parameters()).device
    label_parts = labels.split(batch_size) if labels is not None else [None] * len(z.split(batch_size))
    psi = () if truncation == 1.0 else (truncation,)
    return torch.cat([to_uint8(in_eval_mode(generator, zs.to(device), None if ys is None else ys.to(device), *psi))
                      for zs, ys in zip(z.split(batch_size), label_parts, strict=True)])


def preview_latents(generator: nn.Module, count: int, seed: int) -> tuple[Tensor, Tensor | None, int]:
    """The sample grid's latents (and labels: one row per class when conditional) and its row width."""
    classes = class_count(generator)
    if not classes:
        return draw_latents(count, z_dim(generator), seed), None, max(int(count**0.5), 1)
    per_class = max(count // classes, 1)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return draw_latents(len(labels), z_dim(generator), seed), labels, per_class
