"""gan-sample: rebuild a task's networks from the config stored in a checkpoint and let the task
draw (sample G, translate images, ...); this file only checks the destination and writes."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from gan_cli.checkpoint import load_checkpoint
from gan_cli.config import resolve_device, validate_sample
from gan_cli.errors import GanCliError
from gan_cli.latent_tools import write_animation
from gan_cli.resume import LEGACY_TASK
from gan_cli.tasks.base import Drawn
from gan_cli.trusted import stored_config

log = logging.getLogger("gan_cli")

OUTPUTS = (".png -> one grid image, .npz -> arr_0 uint8 (N, H, W, C), no suffix -> a folder of PNGs, "
           ".gif / .mp4 -> an animation (with interpolate=N)")
ANIMATIONS = (".gif", ".mp4")
LAYOUTS = ("flat", "classes")  # layout=classes: out=DIR/<class>/<index>.png


def write(drawn: Drawn, out: Path, fps: int = 12) -> None:
    if out.suffix in ANIMATIONS:
        write_animation(drawn.images, out, fps)
    elif out.suffix == ".png":
        save_image(drawn.grid.float() / 255, out, nrow=drawn.nrow or max(int(len(drawn.grid) ** 0.5), 1))
    elif out.suffix == ".npz":
        arrays = {"arr_0": drawn.images.permute(0, 2, 3, 1).numpy()}  # (N, H, W, C) uint8
        if drawn.labels is not None:
            arrays["arr_1"] = drawn.labels.numpy()  # (N,) int64: the class of each conditional sample
        np.savez(out, **arrays)
    else:
        out.mkdir(parents=True, exist_ok=True)
        names = drawn.names or [f"{index:06d}.png" for index in range(len(drawn.images))]
        for name, image in zip(names, drawn.images, strict=True):
            save_image(image.float() / 255, out / name)


def write_classes(drawn: Drawn, out: Path) -> None:
    """`layout=classes`: out/<class>/<index>.png, an ImageFolder tree any training pipeline reads
    (gan-eval images=DIR and dataset=folder too); the class is the one a conditional G was asked for."""
    if drawn.labels is None:
        raise GanCliError("layout=classes needs a conditional generator (its samples have classes); "
                          "this one is unconditional: use the default layout=flat")
    for index, (image, label) in enumerate(zip(drawn.images, drawn.labels.tolist(), strict=True)):
        (out / str(label)).mkdir(parents=True, exist_ok=True)
        save_image(image.float() / 255, out / str(label) / f"{index:06d}.png")


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
    if out.suffix not in ("", ".png", ".npz", *ANIMATIONS):
        raise GanCliError(f"out={cfg.out!r} has an unknown extension {out.suffix!r}: allowed are {OUTPUTS}")
    if (out.suffix in ANIMATIONS) != bool(cfg.interpolate):
        raise GanCliError(f"interpolate={cfg.interpolate} writes an animation: set out=walk.gif (or .mp4)"
                          if cfg.interpolate else f"out={cfg.out!r} is an animation: set interpolate=N (frames) "
                          "and seeds=[a,b,...] to walk between")
    if cfg.layout not in LAYOUTS or (cfg.layout == "classes" and out.suffix):
        raise GanCliError(f"layout={cfg.layout} out={cfg.out}: allowed are layout=flat (any out) or layout=classes "
                          "with a folder out=DIR (one subfolder per class)")
    if out.suffix and not out.parent.is_dir():
        raise GanCliError(f"out={cfg.out!r}: folder {out.parent} does not exist")
    device = resolve_device(cfg.device)
    check_writable(out, cfg.out)
    state = load_checkpoint(cfg.checkpoint)
    train_cfg = stored_config(state, cfg.checkpoint)  # only gan-cli's own classes, plain values (trusted.py)
    target = OmegaConf.select(train_cfg, "task._target_", default=LEGACY_TASK)
    with torch.no_grad():
        drawn = get_class(target).draw(train_cfg, state, cfg, device)
    if cfg.layout == "classes":
        write_classes(drawn, out)
    else:
        write(drawn, out, cfg.fps)
    log.info("wrote %d images %s to %s", len(drawn.images), tuple(drawn.images.shape[1:]), out)
    return out
