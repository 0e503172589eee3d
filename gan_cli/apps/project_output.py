"""What gan-project writes and says: the summary line, the .png of target and projection rows
(the pixels outside the mask greyed in the targets), the .npz (latent_file.py's members beside
arr_0), a folder of PNGs, and the optional animation of the optimization."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from torchvision.utils import make_grid, save_image

from gan_cli.reporting.outputs import check_fits_in_memory, staged, write_folder
from gan_cli.sampling import latent_file
from gan_cli.sampling.latent_tools import write_animation
from gan_cli.sampling.project import Projection
from gan_cli.sampling.sample import display_scale, enlarged

log = logging.getLogger("gan_cli")

GIF_FRAMES = 40  # frames of the optimization recorded for gif= (plus the result)
GIF_CELL = 64  # px: the smallest side each image of the animation is enlarged to, unless upscale= says


def masked_psnr(images: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """(N,) PSNR in dB of uint8 images against their targets on the masked pixels."""
    mask = mask.expand(len(targets), images.shape[1], -1, -1)
    error = (images.float() - targets.float()).square() * mask
    mse = error.sum((1, 2, 3)) / mask.sum((1, 2, 3)).clamp(min=1)
    return 10 * torch.log10(255.0**2 / mse.clamp(min=1e-10))


def report(result: Projection, targets: Tensor, mask: Tensor, space: str, tried: Sequence[int] | None,
           classes: int) -> None:
    psnr = masked_psnr(result.images, targets, mask.cpu())
    log.info("projected %d target(s) in %s: fit %.4f at the best start -> %.4f (mean); PSNR on the masked pixels "
             "%.2f dB (mean)", len(targets), space, result.start_loss.mean(), result.loss.mean(), psnr.mean())
    if classes and tried is not None and len(tried) > 1 and result.latents.labels is not None:
        counts = torch.bincount(result.latents.labels, minlength=classes).tolist()
        log.info("class: not given, so every class 0..%d was tried per target and the best fit kept (targets per "
                 "class: %s); class=N fixes one", classes - 1, counts)
    elif classes and tried is not None:
        log.info("class: %d, as given", tried[0])


def shown_targets(targets: Tensor, mask: Tensor) -> Tensor:
    """The targets as the picture shows them: the pixels outside the mask (which did not count)
    faded to grey."""
    faded = (targets.float() * 0.3 + 0.7 * 128).round().to(torch.uint8)
    return torch.where(mask.cpu().bool().expand_as(targets), targets, faded)


def picture(targets: Tensor, projections: Tensor, mask: Tensor) -> tuple[Tensor, int]:
    """Cells for a grid of `width` columns: a row of targets, then a row of their projections."""
    width = max(math.ceil(math.sqrt(len(targets))), 1)
    blank = torch.zeros_like(targets[:1])
    cells = []
    shown = shown_targets(targets, mask)
    for first in range(0, len(targets), width):
        pad = [blank] * (width - len(targets[first:first + width]))
        cells += [shown[first:first + width], *pad, projections[first:first + width], *pad]
    return torch.cat(cells), width


def write(result: Projection, targets: Tensor, mask: Tensor, out: Path, cfg: DictConfig) -> None:
    """cfg.out (.png, .npz or a folder) and cfg.gif, each under a temporary name until complete."""
    if out.suffix == ".png":
        cells, width = picture(targets, result.images, mask)
        scale = display_scale(cfg.upscale, out, cells.shape[-2])
        check_fits_in_memory(len(cells), (*cells.shape[1:-2], cells.shape[-2] * scale, cells.shape[-1] * scale),
                             f"out={cfg.out!r} (one grid image)")
        with staged(out, cfg.out) as temporary:
            save_image(enlarged(cells, scale).float() / 255, temporary, nrow=width)
    elif out.suffix == ".npz":
        members: dict[str, Any] = {"arr_0": result.images.permute(0, 2, 3, 1).numpy(), "loss": result.loss.numpy(),
                                   **latent_file.arrays(result.latents)}
        with staged(out, cfg.out) as temporary, temporary.open("wb") as file:
            np.savez(file, **members)
    else:
        with staged(out, cfg.out) as temporary:
            write_folder([(result.images, result.latents.labels)], len(result.images), None, temporary, cfg.out)
    log.info("wrote %d projection(s) to %s", len(result.images), out)
    if cfg.gif and result.frames is not None:
        gif = Path(cfg.gif).expanduser()
        scale = cfg.upscale or max(-(-GIF_CELL // result.frames.shape[-2]), 1)  # ceil
        shown = len(result.frames[0])
        frames = torch.stack([make_grid(enlarged(cells, scale), nrow=width, padding=2 * scale)
                              for cells, width in (picture(targets[:shown], frame, mask) for frame in result.frames)])
        with staged(gif, cfg.gif) as temporary:
            write_animation(frames, temporary, cfg.fps)
        log.info("wrote the optimization of the first %d target(s), %d frames, to %s", shown, len(frames), gif)
