"""What gan-eval judges, as uint8 images with optional labels: samples of a checkpoint's EMA
generator (drawn through gan-sample's own path: load_checkpoint + stored_config, then the task's
`draw`), or images from a file or folder. `run=` and `sweep=` list checkpoints. Checkpoints of
image -> image tasks (whose `draw` is not image_sampling's) draw no samples of z: own_metrics.py
scores them with the task's own evaluation.

A checkpoint is data: its config is read through gan_cli.core.trusted.stored_config, which admits
only gan-cli's own classes, and nothing is built from it here but through the task's `draw`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from gan_cli.core.errors import GanCliError
from gan_cli.core.schema import SampleSchema
from gan_cli.core.sizes import ImageSize
from gan_cli.data.datasets import fit_images, load_image_folder
from gan_cli.data.domains import image_files, read_images
from gan_cli.loop.checkpoint import load_checkpoint
from gan_cli.loop.resume import LEGACY_TASK
from gan_cli.reporting.progress import TaskProgress
from gan_cli.tasks import image_sampling
from gan_cli.tasks.base import sampling_of


@dataclass
class Judged:
    """Images to judge: uint8 (N, C, H, W) and, when known, the class each was asked to be."""

    name: str
    images: Tensor
    labels: Tensor | None = None
    step: int | None = None


@dataclass
class Checkpoint:
    path: Path
    state: dict[str, Any]
    config: DictConfig  # the training config stored in it, checked
    draws_samples: bool  # a z -> image task (image_sampling's draw); else an image -> image one

    @property
    def task_name(self) -> str:
        return str(OmegaConf.select(self.config, "task._target_", default=LEGACY_TASK)).rsplit(".", 1)[-1]

    @property
    def step(self) -> int:
        return int(self.state.get("step", 0))


def open_checkpoint(path: str | Path) -> Checkpoint:
    from gan_cli.core.trusted import stored_config

    state = load_checkpoint(path)
    config = stored_config(state, path)  # only gan-cli's own classes, plain values (trusted.py)
    target = OmegaConf.select(config, "task._target_", default=LEGACY_TASK)
    draws_samples = sampling_of(get_class(target)).draw is image_sampling.draw  # z -> image samples
    return Checkpoint(Path(path), state, config, draws_samples)


def draw_samples(checkpoint: Checkpoint, num_samples: int, seed: int, batch_size: int,
                 device: torch.device) -> Judged:
    """`num_samples` images of the EMA generator from `seed`; a conditional G draws equal runs of
    every class (gan-sample's class=all), so the class shares can be read against what was asked."""
    conditional = bool(OmegaConf.select(checkpoint.config, "model.conditional", default=False))
    sample_cfg = OmegaConf.create(OmegaConf.to_container(OmegaConf.structured(SampleSchema)))
    assert isinstance(sample_cfg, DictConfig)  # open: `class` is no dataclass field (a Python keyword)
    sample_cfg.merge_with({"checkpoint": str(checkpoint.path), "num_samples": num_samples, "seed": seed,
                           "batch_size": batch_size, "class": "all" if conditional else None})
    with torch.no_grad():
        drawn = image_sampling.draw(checkpoint.config, checkpoint.state, sample_cfg, device)
        batches = []  # drawn a batch at a time; judged all at once
        with TaskProgress(f"drawing samples of step {checkpoint.step}", drawn.count) as progress:
            for batch in drawn.batches:
                batches.append(batch)
                progress.advance(len(batch[0]))
    labels = [labels for _, labels in batches if labels is not None]  # none from an unconditional G
    return Judged(str(checkpoint.path), torch.cat([images for images, _ in batches]),
                  torch.cat(labels) if labels else None, checkpoint.step)


def load_images(spec: str, channels: int, image_size: ImageSize) -> Judged:
    """`images=`: an .npz (arr_0 uint8 (N, H, W, C), optional arr_1 labels), a folder with one
    subfolder per class (labels from the sorted folder names, as torchvision's ImageFolder), or a
    flat folder of images (no labels)."""
    path = Path(spec).expanduser()
    if path.suffix == ".npz":
        try:
            arrays = np.load(path)
            array = arrays["arr_0"]
            labels = torch.from_numpy(arrays["arr_1"]).long() if "arr_1" in arrays.files else None
        except (OSError, KeyError, ValueError) as err:
            raise GanCliError(f"images={spec}: not an .npz with arr_0 uint8 (N, H, W, C): {err}") from None
        if array.dtype != np.uint8 or array.ndim != 4:
            raise GanCliError(f"images={spec}: arr_0 is {array.dtype} {array.shape}; allowed is uint8 (N, H, W, C)")
        images = fit_images(torch.from_numpy(array).permute(0, 3, 1, 2), channels, image_size)
        return Judged(spec, images, labels)
    if not path.is_dir():
        raise GanCliError(f"images={spec}: neither an .npz nor a folder")
    if any(child.is_dir() for child in path.iterdir()):
        data = load_image_folder(root=str(path), channels=channels, image_size=image_size)
        return Judged(spec, data.images, data.labels)
    return Judged(spec, read_images(image_files(path), channels, image_size))


def run_checkpoints(run_dir: str | Path) -> list[Path]:
    """Every kept checkpoint of a run, oldest first (last.pt only when there is no step_N.pt)."""
    folder = Path(run_dir).expanduser() / "checkpoints"
    found = sorted(folder.glob("step_*.pt")) or sorted(folder.glob("last.pt"))
    if not found:
        raise GanCliError(f"run={run_dir}: no checkpoints in {folder}")
    return found


def sweep_runs(sweep_dir: str | Path) -> list[tuple[str, Path]]:
    """(job name, its last.pt) for every job folder of a multirun, in job order."""
    folder = Path(sweep_dir).expanduser()
    jobs = [child for child in folder.iterdir() if (child / "checkpoints" / "last.pt").is_file()] \
        if folder.is_dir() else []
    if not jobs:
        raise GanCliError(f"sweep={sweep_dir}: no job folders with checkpoints/last.pt")
    jobs.sort(key=lambda job: (not job.name.isdigit(), int(job.name) if job.name.isdigit() else 0, job.name))
    return [(job.name, job / "checkpoints" / "last.pt") for job in jobs]


def job_overrides(job_dir: Path) -> str:
    """The overrides a sweep job ran with (.hydra/overrides.yaml), as one string."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return ""
    overrides = OmegaConf.load(path)
    return " ".join(str(o) for o in overrides) if isinstance(overrides, list) or hasattr(overrides, "__iter__") else ""
