"""Paired images for pix2pix: input A and target B, index-aligned, as uint8 tensors like every dataset.

Pairs come from either
  * `dataset=aligned`: pix2pix's own layout (facades, maps, edges2shoes): root/train/*.jpg, each
    file A and B side by side (left half A, right half B); val/ and test/ optional;
  * `dataset=paired`: root/trainA and root/trainB holding files of the same names (testA, testB
    optional), for pairs kept as separate images; or
  * any dataset gan-cli reads (`pairs_from_dataset`, called by the task): B the image itself, A a
    transform of it computed on the device in batches (no per-image Python loop).
`direction=b2a` swaps A and B everywhere (learn right -> left, or image -> transformed).

Transforms (the task's `transform` names) map uint8 (N, C, H, W) -> uint8 (N, C', H, W):
  mask_bottom  rows H//2 .. H-1 set to each image's darkest value (MNIST: 0; rows 14-27 at 28 px):
               inpainting the lower half;
  edges        Sobel gradient magnitude of the luma, /4 so a full black-to-white step is 255, clipped
               (replicate padding: a constant image has no edges, not even at its border);
  blur         Gaussian, sigma = H / 20 px (1.4 px at 28, 12.8 px at 256), replicate padding;
  downsample   area-averaged down by 4, then nearest back up (blocky: every 4x4 block one colour);
  dilate, erode, invert, colorize  CycleGAN's (gan_cli/domains.py): colorize makes A 3-channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision import transforms

from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import ImageSize
from gan_cli.data.datasets import LOAD_ERRORS, ImageData, cover_and_crop
from gan_cli.data.domains import Transform, colorize, dilate, erode, image_files, invert, read_images

DIRECTIONS = ("a2b", "b2a")
DOWNSAMPLE_FACTOR = 4
BLUR_SIGMA_PER_PIXEL = 1 / 20  # sigma as a fraction of the image height
CHUNK = 4096  # images transformed at once: bounded float memory for 256-px datasets


@dataclass
class Pairs:
    """train_a[i] is the input paired with target train_b[i] (uint8 (N, C, H, W), CPU); likewise test."""

    trained_by: ClassVar[str] = "task=pix2pix"  # named when a paired dataset reaches another task

    train_a: Tensor
    train_b: Tensor
    test_a: Tensor
    test_b: Tensor
    train_labels: Tensor | None = None  # (N,) int64 when the source dataset had labels ("label kept" metrics)
    test_labels: Tensor | None = None
    num_classes: int = 0
    # A converted paired dataset (gan-data layout=paired): its training pairs as stored, A's channels
    # then B's (memory-mapped: train_a and train_b are views of it), served as they are by joined()
    # so they can stream; `swapped` when direction=b2a made the stored B this Pairs' A.
    stored: ImageData | None = None
    swapped: bool = False

    def __post_init__(self) -> None:
        for a, b in ((self.train_a, self.train_b), (self.test_a, self.test_b)):
            assert a.shape[0] == b.shape[0] and a.shape[2:] == b.shape[2:], "pairs are index-aligned, one size"

    def split(self, joined: Tensor) -> tuple[Tensor, Tensor]:
        """Images of joined("train") (N, C_a + C_b, ...) -> (A, B): the stored order, swapped for b2a."""
        if self.swapped:
            return joined[:, self.channels_b :], joined[:, : self.channels_b]
        return joined[:, : self.channels_a], joined[:, self.channels_a :]

    @property
    def channels_a(self) -> int:
        return self.train_a.shape[1]

    @property
    def channels_b(self) -> int:
        return self.train_b.shape[1]

    def joined(self, split: str = "train") -> ImageData:
        """A and B concatenated on channels (N, C_a + C_b, H, W): one DeviceSampler then serves
        aligned batches, and its hflip flips both halves of a pair alike. Split them back with
        images[:, :channels_a], images[:, channels_a:]."""
        if split not in ("train", "test"):
            raise ValueError(f"split is 'train' or 'test', got {split!r}")
        if split == "train" and self.stored is not None:
            return self.stored  # A | B as stored: split() knows its order
        a, b, labels = ((self.train_a, self.train_b, self.train_labels) if split == "train"
                        else (self.test_a, self.test_b, self.test_labels))
        labels = labels if labels is not None else torch.zeros(a.shape[0], dtype=torch.long)
        return ImageData(torch.cat([a, b], dim=1), labels, self.num_classes)


def check_direction(direction: str, key: str = "dataset.direction") -> None:
    """Called before any image is read or transformed: a typo costs no loading time."""
    if direction not in DIRECTIONS:
        raise GanCliError(f"invalid value {key}={direction!r}: allowed are {', '.join(DIRECTIONS)}")


def oriented(pairs: Pairs, direction: str) -> Pairs:
    """`pairs` as they are (a2b) or with A and B swapped (b2a)."""
    if direction == "a2b":
        return pairs
    return Pairs(pairs.train_b, pairs.train_a, pairs.test_b, pairs.test_a, pairs.train_labels, pairs.test_labels,
                 pairs.num_classes, pairs.stored, pairs.stored is not None and not pairs.swapped)


# ---------------------------------------------------------------- transforms (uint8 (N, C, H, W) in and out)

def mask_bottom(images: Tensor, noise: torch.Generator) -> Tensor:
    background = images.amin(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1): each image's darkest value
    rows = torch.arange(images.shape[2], device=images.device).view(1, 1, -1, 1)
    return torch.where(rows >= images.shape[2] // 2, background, images)


def edges(images: Tensor, noise: torch.Generator) -> Tensor:
    luma = images.float().mean(1, keepdim=True) / 255  # (N, 1, H, W) in [0, 1]
    sobel_x = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=images.device)
    kernels = torch.stack([sobel_x, sobel_x.T]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy
    gradients = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), kernels)  # (N, 2, H, W)
    magnitude = gradients.norm(dim=1, keepdim=True) / 4  # a 0 -> 1 step: |gx| = 1 + 2 + 1
    edge_map = (magnitude.clamp(0, 1) * 255).round().to(torch.uint8)
    return edge_map.expand(-1, images.shape[1], -1, -1).contiguous()  # (N, C, H, W), same map per channel


def blur(images: Tensor, noise: torch.Generator) -> Tensor:
    sigma = BLUR_SIGMA_PER_PIXEL * images.shape[2]
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    taps = taps / taps.sum()  # sums to 1: a constant image stays constant
    channels = images.shape[1]
    x = F.pad(images.float(), (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)  # rows
    x = F.conv2d(x, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)  # columns
    return x.round().clamp(0, 255).to(torch.uint8)


def downsample(images: Tensor, noise: torch.Generator) -> Tensor:
    height, width = images.shape[2:]
    small_size = (max(1, height // DOWNSAMPLE_FACTOR), max(1, width // DOWNSAMPLE_FACTOR))
    small = F.interpolate(images.float(), size=small_size, mode="area")  # mean of each block: no aliasing
    return F.interpolate(small, size=(height, width), mode="nearest").round().clamp(0, 255).to(torch.uint8)


PAIR_TRANSFORMS: dict[str, Transform] = {"mask_bottom": mask_bottom, "edges": edges, "blur": blur,
                                         "downsample": downsample, "dilate": dilate, "erode": erode,
                                         "invert": invert, "colorize": colorize}


def pair_transform_for(name: str, key: str = "task.transform") -> Transform:
    if name not in PAIR_TRANSFORMS:
        raise GanCliError(f"invalid value {key}={name!r}: allowed are {', '.join(PAIR_TRANSFORMS)}")
    return PAIR_TRANSFORMS[name]


def transformed(images: Tensor, transform: Transform, seed: int, device: torch.device | str) -> Tensor:
    """transform(images) computed on `device` in chunks of CHUNK images, returned on the CPU."""
    noise = torch.Generator().manual_seed(seed)
    chunks = [transform(chunk.to(device), noise).cpu() for chunk in images.split(CHUNK)]
    return torch.cat(chunks)


def pairs_from_dataset(train: ImageData, test: ImageData | None, transform: str, *, direction: str = "a2b",
                       seed: int = 0, device: torch.device | str = "cpu",
                       keys: tuple[str, str] = ("task.transform", "task.direction")) -> Pairs:
    """Pairs (A = transform(image), B = image) from any dataset gan-cli reads: `train` is
    build(cfg.dataset), `test` its test split (gan_cli.metrics.load_test_split; None: the training
    pairs serve as test pairs too). Labels are kept when the dataset has classes. `keys` name the
    config keys of `transform` and `direction` in the one-line errors."""
    function = pair_transform_for(transform, keys[0])
    check_direction(direction, keys[1])
    test_data = test if test is not None else train
    labelled = train.num_classes > 0
    pairs = Pairs(transformed(train.images, function, seed, device), train.images,
                  transformed(test_data.images, function, seed + 1, device), test_data.images,
                  train.labels if labelled else None, test_data.labels if labelled else None, train.num_classes)
    return oriented(pairs, direction)


# ---------------------------------------------------------------- folders

def halves(files: list[Path], channels: int, image_size: ImageSize) -> tuple[Tensor, Tensor]:
    """Each file's left and right halves (equal widths; an odd middle column is dropped), each
    scaled to cover image_size (the shorter side, for a square size) and center-cropped to it:
    uint8 (N, C, H, W) twice."""
    fit = transforms.Compose([cover_and_crop(image_size), transforms.PILToTensor()])
    lefts: list[Tensor] = []
    rights: list[Tensor] = []
    for path in files:
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB" if channels == 3 else "L")
            half = image.width // 2
            lefts.append(fit(image.crop((0, 0, half, image.height))))
            rights.append(fit(image.crop((image.width - half, 0, image.width, image.height))))
        except LOAD_ERRORS as err:
            raise GanCliError(f"unreadable image {path}: {err}") from None
    return torch.stack(lefts), torch.stack(rights)


def load_aligned_folder(*, root: str, image_size: ImageSize, channels: int, direction: str = "a2b",
                        **_unused: Any) -> Pairs:
    """root/train/ (required), root/test/ or, without it, root/val/ or, without both, the training
    pairs as test pairs: every image A | B side by side (pix2pix's datasets)."""
    check_direction(direction)
    base = Path(root).expanduser()
    if not (base / "train").is_dir():
        raise GanCliError(f"{base / 'train'} is not a folder: an aligned dataset needs root/train (and optional "
                          "test or val) holding images with A on the left half, B on the right")
    train_a, train_b = halves(image_files(base / "train"), channels, image_size)
    test_folder = next((base / name for name in ("test", "val") if (base / name).is_dir()), None)
    test_a, test_b = halves(image_files(test_folder), channels, image_size) if test_folder else (train_a, train_b)
    return oriented(Pairs(train_a, train_b, test_a, test_b), direction)


def matched_files(folder_a: Path, folder_b: Path) -> list[tuple[Path, Path]]:
    """(a, b) files of the same name in both folders; a file without its partner is an error."""
    names_a = {p.name: p for p in image_files(folder_a)}
    names_b = {p.name: p for p in image_files(folder_b)}
    for names, other, folder in ((names_a, names_b, folder_b), (names_b, names_a, folder_a)):
        missing = sorted(set(names) - set(other))
        if missing:
            source = names[missing[0]]
            raise GanCliError(f"{folder.name} has no {missing[0]!r} (the partner of {source.parent.name}/"
                              f"{missing[0]}): paired folders need the same file names in both")
    return [(names_a[name], names_b[name]) for name in sorted(names_a)]


def load_matched_folders(*, root: str, image_size: ImageSize, channels: int, direction: str = "a2b",
                         **_unused: Any) -> Pairs:
    """root/trainA and root/trainB with the same file names (A and B of a pair); testA and testB
    optional (without them the training pairs are the test pairs)."""
    check_direction(direction)
    base = Path(root).expanduser()
    splits: dict[str, tuple[Tensor, Tensor]] = {}
    for split in ("train", "test"):
        folder_a, folder_b = base / f"{split}A", base / f"{split}B"
        if split == "test" and not folder_a.exists() and not folder_b.exists():
            splits["test"] = splits["train"]
            continue
        for folder in (folder_a, folder_b):
            if not folder.is_dir():
                raise GanCliError(f"{folder} is not a folder: a paired dataset needs root/trainA and root/trainB "
                                  "(and optional testA and testB) holding images of the same names")
        files = matched_files(folder_a, folder_b)
        splits[split] = (read_images([a for a, _ in files], channels, image_size),
                         read_images([b for _, b in files], channels, image_size))
    return oriented(Pairs(*splits["train"], *splits["test"]), direction)

