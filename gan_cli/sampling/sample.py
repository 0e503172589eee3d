"""gan-sample: rebuild a task's networks from the config stored in a checkpoint and let the task
draw (sample G, translate images, ...); this file only checks the destination and writes."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import cast

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torchvision.utils import save_image

from gan_cli.core.config import resolve_device, validate_sample
from gan_cli.core.errors import GanCliError
from gan_cli.core.schema import SampleSchema
from gan_cli.core.trusted import stored_config
from gan_cli.loop.checkpoint import load_checkpoint
from gan_cli.loop.resume import LEGACY_TASK
from gan_cli.reporting.outputs import check_disk, check_fits_in_memory, npz_bytes, staged, write_folder, write_npz
from gan_cli.sampling.latent_tools import write_animation
from gan_cli.tasks.base import Drawn, Task, sampling_of

log = logging.getLogger("gan_cli")

OUTPUTS = (".png -> one grid image, .npz -> arr_0 uint8 (N, H, W, C), no suffix -> a folder of PNGs, "
           ".gif / .mp4 -> an animation (with interpolate=N)")
ANIMATIONS = (".gif", ".mp4")
LAYOUTS = ("flat", "classes")  # layout=classes: out=DIR/<class>/<index>.png


ANIMATION_SIZE = 256  # px: the smallest side an animation is enlarged to by default (28 px frames are specks)


def display_scale(upscale: int | None, out: Path, height: int) -> int:
    """How many times .png grids and animations enlarge each image (nearest neighbour)."""
    if upscale is not None:
        return upscale
    return max(-(-ANIMATION_SIZE // height), 1) if out.suffix in ANIMATIONS else 1  # ceil


def enlarged(images: Tensor, factor: int) -> Tensor:
    return images if factor == 1 else images.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def write(drawn: Drawn, out: Path, spec: str, fps: int = 12, by_class: bool = False, upscale: int | None = None
          ) -> None:
    """Check that `drawn` fits (memory for what is made at once, disk for a .npz), then write it
    under a temporary name and rename it to `out` (outputs.py): no partial file, ever."""
    picture = {".png": " (one grid image)", ".gif": " (an animation)", ".mp4": " (an animation)"}.get(out.suffix)
    scale = display_scale(upscale, out, drawn.shape[-2]) if picture else 1
    if picture or drawn.in_memory:  # a picture holds every image, enlarged `scale` times each way
        shape = (*drawn.shape[:-2], drawn.shape[-2] * scale, drawn.shape[-1] * scale)
        check_fits_in_memory(drawn.count, shape, f"out={spec!r}{picture or ''}")
    if out.suffix == ".npz":
        check_disk(npz_bytes(drawn.count, drawn.shape, labeled=True), out.parent, spec, f"{drawn.count:,} images")
    with staged(out, spec) as temporary:
        if out.suffix == ".npz":
            write_npz(drawn.batches, drawn.count, drawn.shape, temporary)
        elif not out.suffix:
            write_folder(drawn.batches, drawn.count, drawn.names, temporary, spec, by_class)
        elif out.suffix in ANIMATIONS:
            write_animation(enlarged(drawn.picture(), scale), temporary, fps)
        else:
            grid = enlarged(drawn.picture(), scale)
            save_image(grid.float() / 255, temporary, nrow=drawn.nrow or max(int(len(grid) ** 0.5), 1))


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
    if out.suffix and out.is_dir():
        raise GanCliError(f"out={cfg.out!r} is a folder, not a file: choose another name, or out={out.with_suffix('')} "
                          "for a folder of PNGs")
    if not out.suffix and out.exists() and not out.is_dir():
        raise GanCliError(f"out={cfg.out!r} is a file: a name without a suffix writes a folder of PNGs; "
                          "choose another name")
    device = resolve_device(cfg.device)
    check_writable(out, cfg.out)
    state = load_checkpoint(cfg.checkpoint)
    train_cfg = stored_config(state, cfg.checkpoint)  # only gan-cli's own classes, plain values (trusted.py)
    # stored_config admits only a `task._target_` that conf/task/ registers: one of gan-cli's Task classes
    task = cast("type[Task]", get_class(OmegaConf.select(train_cfg, "task._target_", default=LEGACY_TASK)))
    check_applies(cfg, task)
    with torch.no_grad():
        drawn = sampling_of(task).draw(train_cfg, state, cfg, device)
        write(drawn, out, cfg.out, cfg.fps, by_class=cfg.layout == "classes", upscale=cfg.upscale)  # draws as it writes
    log.info("wrote %d images %s to %s", drawn.count, drawn.shape, out)
    return out


# Sample keys every task reads; the others only where a task's `sampling.options` lists them.
COMMON_OPTIONS = ("checkpoint", "out", "device", "batch_size", "nrow", "layout", "upscale")


def check_applies(cfg: DictConfig, task: type) -> None:
    """A key the user set (not at its default) that this checkpoint's task does not read would be
    silently ignored: one line saying so, and what the task does take."""
    defaults = {field.name: field.default for field in fields(SampleSchema)} | {"class": None}
    options, name = sampling_of(task).options, task.__module__.rsplit(".", 1)[-1]
    for key, default in defaults.items():
        if key in COMMON_OPTIONS or key in options or cfg.get(key) == default:
            continue
        takes = ", ".join(f"{option}=" for option in options)
        raise GanCliError(f"{key}={cfg.get(key)} does not apply to this checkpoint (task {name}): it takes {takes}")
