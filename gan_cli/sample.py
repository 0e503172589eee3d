"""gan-sample: rebuild G from the config stored in a checkpoint and draw images."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchvision.utils import save_image

from gan_cli.checkpoint import load_checkpoint, load_weights
from gan_cli.config import build, resolve_device, validate_sample
from gan_cli.errors import GanCliError

log = logging.getLogger("gan_cli")

OUTPUTS = ".png -> one grid image, .npz -> arr_0 uint8 (N, H, W, C), no suffix -> a folder of PNGs"


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] float (N, C, H, W) -> uint8 (N, C, H, W)."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def load_generator(path: str, device: torch.device) -> nn.Module:
    state = load_checkpoint(path)
    train_cfg = OmegaConf.create(state["config"])
    generator = build(train_cfg.model.generator)
    load_weights(generator, state["generator"], path, "generator")
    return generator.to(device).eval()


@torch.no_grad()
def generate(generator: nn.Module, num_samples: int, batch_size: int, seed: int, device: torch.device) -> Tensor:
    """uint8 (N, C, H, W) on the CPU; the latents depend only on the seed, not the batch size."""
    noise = torch.Generator().manual_seed(seed)
    z = torch.randn(num_samples, generator.z_dim, generator=noise)
    chunks = [to_uint8(generator(part.to(device))).cpu() for part in z.split(batch_size)]
    return torch.cat(chunks)


def write(images: Tensor, out: Path, nrow: int) -> None:
    if out.suffix == ".png":
        nrow = nrow or max(int(len(images) ** 0.5), 1)
        save_image(images.float() / 255, out, nrow=nrow)
    elif out.suffix == ".npz":
        np.savez(out, arr_0=images.permute(0, 2, 3, 1).numpy())  # (N, H, W, C) uint8
    else:
        out.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(images):
            save_image(image.float() / 255, out / f"{index:06d}.png")


def sample(cfg: DictConfig) -> Path:
    cfg = validate_sample(cfg)
    out = Path(cfg.out).expanduser()
    if out.suffix not in ("", ".png", ".npz"):
        raise GanCliError(f"out={cfg.out!r} has an unknown extension {out.suffix!r}: allowed are {OUTPUTS}")
    if out.suffix and not out.parent.is_dir():
        raise GanCliError(f"out={cfg.out!r}: folder {out.parent} does not exist")
    device = resolve_device(cfg.device)
    generator = load_generator(cfg.checkpoint, device)
    images = generate(generator, cfg.num_samples, cfg.batch_size, cfg.seed, device)
    write(images, out, cfg.nrow)
    log.info("wrote %d samples %s to %s", len(images), tuple(images.shape[1:]), out)
    return out
