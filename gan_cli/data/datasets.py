"""Datasets as one uint8 tensor on the training device.

Every dataset option's `_target_` is a loader that reads the real on-disk format through
torchvision once and returns `ImageData` (uint8, (N, C, H, W), on the CPU). `DeviceSampler`
moves it to the device and serves batches by indexing with a per-epoch permutation: no
DataLoader, no per-sample Python in the hot loop. MNIST is 47 MB, CIFAR-10 150 MB.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import get_class
from PIL import Image
from torch import Tensor

from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import ImageSize, image_shape

# Errors torchvision and PIL raise on missing, truncated or mis-headed files.
LOAD_ERRORS = (RuntimeError, OSError, ValueError, AssertionError, EOFError, pickle.UnpicklingError)


@dataclass
class ImageData:
    images: Tensor  # (N, C, H, W) uint8
    labels: Tensor  # (N,) int64
    num_classes: int


def fit_images(images: Tensor, channels: int, image_size: ImageSize | None) -> Tensor:
    """Convert uint8 (N, C, H, W) to the configured channels and size (None: keep it), once, at load
    time. Both sides are resized, as the size's own: a non-square size changes the aspect."""
    if images.shape[1] != channels:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:  # ITU-R 601 luma, as PIL's convert("L")
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    if image_size is not None and tuple(images.shape[-2:]) != image_shape(image_size):
        resized = F.interpolate(images.float(), size=image_shape(image_size), mode="bilinear", antialias=True)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images.contiguous()


def _where(dataset_cls: type, root: Path) -> Path:
    # CIFAR keeps its batches in root/<base_folder>; the MNIST family in root/<ClassName>/raw.
    base_folder = getattr(dataset_cls, "base_folder", None)
    return root / base_folder if base_folder else root / dataset_cls.__name__ / "raw"


def download_failure(err: BaseException) -> str | None:
    """Why a torchvision download failed, or None when `err` is not a failed download. MNIST wraps
    each mirror's URLError in one RuntimeError whose first line has no reason in it."""
    if isinstance(err, URLError):
        reason = str(err.reason)
    elif str(err).startswith("Error downloading"):
        lines = str(err).splitlines()
        reason = next((after for line, after in zip(lines[:-1], lines[1:], strict=True) if line.endswith("got:")), "")
    else:
        return None
    network = isinstance(getattr(err, "reason", None), OSError) or "urlopen error" in reason
    return f"no network ({reason})" if network else f"the download failed ({reason or 'no reason given'})"


def missing_folders(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist yet, deepest first."""
    return [folder for folder in (path, *path.parents) if not folder.exists()]


def remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; a folder with anything in it stays
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def load_torchvision(
    *,
    dataset_class: str,
    root: str,
    download: bool,
    channels: int,
    image_size: ImageSize,
    num_classes: int,
    train: bool = True,
    **_unused: Any,  # keys every dataset option carries (name, hflip) that loading does not need
) -> ImageData:
    """A torchvision dataset whose `.data` holds all images of a split (MNIST family, CIFAR):
    the training split, or the test split with train=False (metrics' reference statistics)."""
    dataset_cls = get_class(dataset_class)
    root_path = Path(root).expanduser().resolve()
    where, name = _where(dataset_cls, root_path), dataset_cls.__name__
    local = f"{_where(dataset_cls, Path('<root>')).relative_to('<root>')}/"
    created = missing_folders(where)
    try:
        dataset = dataset_cls(str(root_path), train=train, download=download)
    except LOAD_ERRORS as err:
        remove_empty(created)  # a failed download leaves no empty data/MNIST/raw behind
        offline = download_failure(err) if download else None
        if offline is not None:
            raise GanCliError(
                f"could not download {name} into {where}: {offline}. Without network, copy the original files "
                f"into <root>/{local} and point dataset.root=<root> at them (or set GAN_CLI_DATA_ROOT=<root> "
                "for every run), with dataset.download=false"
            ) from None
        hint = "" if download else " (dataset.download=false)"
        advice = "" if download else ", or allow dataset.download=true on a machine with network access"
        # torchvision's own advice ("You can use download=True to download it") names its Python
        # argument, not gan-cli's setting: gan-cli's advice below replaces it.
        reason = (str(err).splitlines()[0] if str(err) else type(err).__name__).split(" You can use download=True")[0]
        raise GanCliError(
            f"could not load {name} from {where}{hint}: {reason.rstrip('. ')}. Point dataset.root (or "
            f"GAN_CLI_DATA_ROOT) at a folder holding {local} with the original files{advice}"
        ) from None
    images = torch.as_tensor(np.asarray(dataset.data))
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # -> (N, C, H, W)
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.long)
    return ImageData(fit_images(images, channels, image_size), labels, num_classes)


def covering(image_size: ImageSize) -> Callable[[Image.Image], Image.Image]:
    """A PIL image -> the image scaled (keeping its aspect) to the smallest size that covers
    image_size: for a square size, torchvision's Resize(n) (the shorter side to n); for
    [height, width], whichever side needs the larger scale reaches its target exactly."""
    from torchvision import transforms

    height, width = image_shape(image_size)
    if height == width:
        return transforms.Resize(height)  # the shorter side to n: square sizes read the pixels they always did

    def cover(image: Image.Image) -> Image.Image:
        scale = max(height / image.height, width / image.width)
        scaled = (max(height, round(image.height * scale)), max(width, round(image.width * scale)))
        return transforms.functional.resize(image, list(scaled))

    return cover


def cover_and_crop(image_size: ImageSize) -> Callable[[Image.Image], Image.Image]:
    """Scale to cover image_size, then keep its middle (every folder loader's policy, gan-data's
    crop=center)."""
    from torchvision import transforms

    return transforms.Compose([covering(image_size), transforms.CenterCrop(image_shape(image_size))])


def load_image_folder(
    *, root: str, channels: int, image_size: ImageSize, **_unused: Any
) -> ImageData:
    """root/<class>/<image>: scaled to cover the size (the shorter side, for a square size) and
    center-cropped, once."""
    from torchvision import datasets, transforms

    mode = "RGB" if channels == 3 else "L"
    to_tensor = transforms.Compose([cover_and_crop(image_size), transforms.PILToTensor()])
    try:
        folder = datasets.ImageFolder(str(Path(root).expanduser()))
    except LOAD_ERRORS as err:
        raise GanCliError(f"dataset.root={root!r} is not an image folder: {err}") from None
    images = torch.empty(len(folder), channels, *image_shape(image_size), dtype=torch.uint8)
    for index, (path, _) in enumerate(folder.samples):
        try:
            images[index] = to_tensor(folder.loader(path).convert(mode))
        except LOAD_ERRORS as err:
            raise GanCliError(f"unreadable image {path}: {err}") from None
    labels = torch.tensor(folder.targets, dtype=torch.long)
    return ImageData(images, labels, len(folder.classes))


def load_fake(
    *, num_samples: int, channels: int, image_size: ImageSize, num_classes: int, seed: int = 1234, **_unused: Any
) -> ImageData:
    """Deterministic images: a smooth per-class pattern plus noise, so a GAN has something to learn."""
    generator = torch.Generator().manual_seed(seed)
    classes = max(num_classes, 1)
    labels = torch.randint(classes, (num_samples,), generator=generator)
    patterns = torch.rand(classes, channels, 4, 4, generator=generator)
    coarse = 0.7 * patterns[labels] + 0.3 * torch.rand(num_samples, channels, 4, 4, generator=generator)
    images = F.interpolate(coarse, size=image_shape(image_size), mode="bilinear", align_corners=False)
    return ImageData((images * 255).round().to(torch.uint8), labels, num_classes)


def epoch_draws(seed: int, epoch: int, count: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The permutation of `count` rows and their flips for `epoch`, drawn on `device`: every
    sampler's (the streaming one draws on the CPU), so batch k is the same whichever serves it."""
    generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)
    permutation = torch.randperm(count, device=device, generator=generator)
    flips = torch.rand(count, device=device, generator=generator) < 0.5
    return permutation, flips


class DeviceSampler:
    """Serves batch number `index` of the run: a pure function of (seed, index).

    Epoch e uses the permutation drawn from a generator seeded with (seed, e), so resuming at
    step k needs no sampler state, and the same run always sees the same batches.
    """

    def __init__(self, data: ImageData, device: torch.device, batch_size: int, seed: int, hflip: bool,
                 rank: int = 0, world_size: int = 1):
        if world_size > 1:  # data-parallel: this rank's equal-sized shard, the rest never leaves the CPU
            shard = data.images.shape[0] // world_size
            data = ImageData(data.images[rank::world_size][:shard], data.labels[rank::world_size][:shard],
                             data.num_classes)
        count = data.images.shape[0]
        if count < batch_size:
            raise GanCliError(
                f"trainer.batch_size={batch_size} is larger than the dataset ({count} images): "
                f"allowed is 1..{count}"
            )
        self.images = data.images.to(device)  # (N, C, H, W) uint8, resident for the whole run
        self.labels = data.labels.to(device)
        self.device, self.batch_size, self.seed, self.hflip = device, batch_size, seed, hflip
        self.batches_per_epoch = count // batch_size  # drop the ragged tail: fixed shapes
        self._epoch = -1
        self._perm = self._flip = torch.empty(0)

    def _start_epoch(self, epoch: int) -> None:
        self._perm, self._flip = epoch_draws(self.seed, epoch, self.images.shape[0], self.device)
        self._epoch = epoch

    def batch(self, index: int) -> tuple[Tensor, Tensor]:
        """Images scaled to [-1, 1] (B, C, H, W) and their labels (B,), for global batch `index`."""
        epoch, position = divmod(index, self.batches_per_epoch)
        if epoch != self._epoch:
            self._start_epoch(epoch)
        rows = self._perm[position * self.batch_size : (position + 1) * self.batch_size]
        images = to_float(self.images[rows])
        if self.hflip:
            images = torch.where(self._flip[rows].view(-1, 1, 1, 1), images.flip(3), images)
        return images, self.labels[rows]


def to_uint8(images: Tensor) -> Tensor:
    """A network's [-1, 1] float images (N, C, H, W) -> uint8, the inverse of `DeviceSampler`'s
    scaling: the same quantization the real images went through. The one place it happens."""
    return images.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def to_float(images: Tensor) -> Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1], as networks see images."""
    return images.float().div(127.5).sub(1.0)
