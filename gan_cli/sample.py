"""gan-sample: rebuild G from the config stored in a checkpoint and draw images."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torchvision.utils import save_image

from gan_cli.checkpoint import load_checkpoint, load_weights
from gan_cli.config import build, resolve_device, validate_sample
from gan_cli.errors import GanCliError
from gan_cli.trusted import stored_model_config

log = logging.getLogger("gan_cli")

OUTPUTS = ".png -> one grid image, .npz -> arr_0 uint8 (N, H, W, C), no suffix -> a folder of PNGs"


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] float (N, C, H, W) -> uint8 (N, C, H, W)."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def load_generator(path: str, device: torch.device) -> nn.Module:
    """G rebuilt from the checkpoint's own config, with the EMA weights when it has them. The
    config is data: only a trusted node (a gan_cli.models class, plain values) is built."""
    state = load_checkpoint(path)
    generator = build(stored_model_config(state, path).generator)
    load_weights(generator, state.get("generator_ema", state["generator"]), path, "generator")
    return generator.to(device).eval()


def sample_labels(generator: nn.Module, num_samples: int, which: int | str | None, seed: int) -> Tensor | None:
    """`class=`: None -> classes drawn uniformly, N -> all of class N, all -> equal runs of each class."""
    classes = getattr(generator, "num_classes", 0)
    if not classes:
        if which is not None:
            raise GanCliError(f"class={which}: this generator is unconditional; leave class unset")
        return None
    if which is None:
        return torch.randint(classes, (num_samples,), generator=torch.Generator().manual_seed(seed + 1))
    if which == "all":
        return torch.arange(num_samples) * classes // num_samples  # sorted: one grid row per class
    if isinstance(which, int) and 0 <= which < classes:
        return torch.full((num_samples,), which)
    raise GanCliError(f"class={which!r}: allowed are 0..{classes - 1}, all, or unset (random classes)")


@torch.no_grad()
def generate(generator: nn.Module, num_samples: int, batch_size: int, seed: int, device: torch.device,
             labels: Tensor | None = None) -> Tensor:
    """uint8 (N, C, H, W) on the CPU; the latents depend only on the seed, not the batch size."""
    noise = torch.Generator().manual_seed(seed)
    z = torch.randn(num_samples, generator.z_dim, generator=noise)
    parts = labels.split(batch_size) if labels is not None else [None] * len(z.split(batch_size))
    chunks = [to_uint8(generator(zs.to(device), None if ys is None else ys.to(device))).cpu()
              for zs, ys in zip(z.split(batch_size), parts, strict=True)]
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


def check_writable(out: Path, spec: str) -> None:
    """Before generating anything: the output's folder (or, for a folder output not there yet,
    its nearest existing parent) must take a new file. A real write, as root's os.access says
    yes even to /proc."""
    folder = out.parent if out.suffix else out
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".gan-sample-", suffix=".probe")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise GanCliError(f"out={spec!r} cannot be written: creating a file in {folder} fails "
                          f"({err.strerror or err})") from None


def sample(cfg: DictConfig) -> Path:
    cfg = validate_sample(cfg)
    out = Path(cfg.out).expanduser()
    if out.suffix not in ("", ".png", ".npz"):
        raise GanCliError(f"out={cfg.out!r} has an unknown extension {out.suffix!r}: allowed are {OUTPUTS}")
    if out.suffix and not out.parent.is_dir():
        raise GanCliError(f"out={cfg.out!r}: folder {out.parent} does not exist")
    check_writable(out, cfg.out)
    device = resolve_device(cfg.device)
    generator = load_generator(cfg.checkpoint, device)
    labels = sample_labels(generator, cfg.num_samples, cfg["class"], cfg.seed)
    images = generate(generator, cfg.num_samples, cfg.batch_size, cfg.seed, device, labels)
    rows = generator.num_classes if cfg["class"] == "all" else 0
    write(images, out, cfg.nrow or (-(-cfg.num_samples // rows) if rows else 0))
    log.info("wrote %d samples %s to %s", len(images), tuple(images.shape[1:]), out)
    return out
