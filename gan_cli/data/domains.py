"""Two image domains for unpaired translation (CycleGAN), as uint8 tensors like every dataset.

A domain pair comes from either
  * `dataset=unpaired`: a folder in the layout CycleGAN users have (root/trainA, trainB, testA,
    testB, e.g. horse2zebra), read once with PIL and resized / center-cropped; or
  * any dataset gan-cli reads: its training split cut into two disjoint random halves (so no pair
    is ever seen), each half, and the test split, passed once through a transform on the device.

Transforms (the `task.domain_a` / `task.domain_b` names) work on uint8 (N, C, H, W):
  none, invert, dilate (thicker strokes: 3x3 max filter), erode (thinner: 3x3 min filter),
  colorize (random foreground and background colours, 3 channels; gray domains become RGB).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision import transforms

from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import ImageSize, image_shape
from gan_cli.data.datasets import LOAD_ERRORS, ImageData, covering, fit_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
Transform = Callable[[Tensor, torch.Generator], Tensor]  # uint8 (N, C, H, W) -> uint8 (N, C', H, W)


@dataclass
class Domains:
    trained_by: ClassVar[str] = "task=cyclegan"  # named when a dataset of two domains reaches another task
    train_a: ImageData
    train_b: ImageData
    test_a: ImageData
    test_b: ImageData
    # What evaluation trains each domain's feature classifier on, and its cache name suffix: the
    # whole training split in that domain's style (an evaluation tool may see every image), so
    # an untransformed domain shares the classifier and FD scale of image_gan runs on the dataset.
    classifier_a: ImageData | None = None
    classifier_b: ImageData | None = None
    cache_suffixes: tuple[str, str] = ("_a", "_b")


def dilate(images: Tensor, noise: torch.Generator) -> Tensor:
    return F.max_pool2d(images.float(), 3, stride=1, padding=1).to(torch.uint8)


def erode(images: Tensor, noise: torch.Generator) -> Tensor:
    return (-F.max_pool2d(-images.float(), 3, stride=1, padding=1)).to(torch.uint8)


def invert(images: Tensor, noise: torch.Generator) -> Tensor:
    return 255 - images


def colorize(images: Tensor, noise: torch.Generator) -> Tensor:
    """Ink (bright pixels) in one random colour on a background of another, per image."""
    ink = images.float().mean(1, keepdim=True) / 255  # (N, 1, H, W) in [0, 1]
    foreground, background = torch.rand(2, images.shape[0], 3, 1, 1, generator=noise).to(images.device) * 255
    return (background + (foreground - background) * ink).round().clamp(0, 255).to(torch.uint8)  # (N, 3, H, W)


TRANSFORMS: dict[str, Transform] = {"none": lambda images, noise: images, "invert": invert, "dilate": dilate,
                                    "erode": erode, "colorize": colorize}


def transform_for(name: str, key: str) -> Transform:
    if name not in TRANSFORMS:
        raise GanCliError(f"invalid value {key}={name!r}: allowed are {', '.join(TRANSFORMS)}")
    return TRANSFORMS[name]


def apply(data: ImageData, transform: Transform, seed: int, channels: int) -> ImageData:
    images = transform(data.images, torch.Generator().manual_seed(seed))
    if images.shape[1] < channels:  # a gray domain beside a colour one: RGB, so both G's map 3 -> 3
        images = images.expand(-1, channels, -1, -1).contiguous()
    return ImageData(images, data.labels, data.num_classes)


def split(data: ImageData, seed: int) -> tuple[ImageData, ImageData]:
    """Two disjoint random halves of `data`."""
    order = torch.randperm(data.images.shape[0], generator=torch.Generator().manual_seed(seed))
    halves = order[: len(order) // 2], order[len(order) // 2 :]
    return tuple(ImageData(data.images[rows], data.labels[rows], data.num_classes) for rows in halves)  # type: ignore[return-value]


def from_dataset(train: ImageData, test: ImageData | None, domain_a: str, domain_b: str, seed: int) -> Domains:
    """Domains built from one dataset: disjoint training halves; the whole test split (or, for
    datasets without one, the halves themselves) as each domain's test images."""
    transform_a, transform_b = transform_for(domain_a, "task.domain_a"), transform_for(domain_b, "task.domain_b")
    channels = 3 if "colorize" in (domain_a, domain_b) else train.images.shape[1]
    half_a, half_b = split(train, seed)
    test_a, test_b = (test, test) if test is not None else (half_a, half_b)
    suffix = lambda name: "" if name == "none" and channels == train.images.shape[1] else f"_{name}"  # noqa: E731
    return Domains(apply(half_a, transform_a, seed + 1, channels), apply(half_b, transform_b, seed + 2, channels),
                   apply(test_a, transform_a, seed + 3, channels), apply(test_b, transform_b, seed + 4, channels),
                   apply(train, transform_a, seed + 5, channels), apply(train, transform_b, seed + 6, channels),
                   (suffix(domain_a), suffix(domain_b)))


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise GanCliError(f"{folder} is not a folder: an unpaired dataset needs root/trainA, root/trainB "
                          "(and testA, testB) holding images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GanCliError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_images(files: list[Path], channels: int, image_size: ImageSize | None, resize: bool = True) -> Tensor:
    """uint8 (N, C, H, W) of image_size: each image scaled to cover it (the shorter side, for a
    square size) and center-cropped, once. resize=False keeps the pixels' scale (super-resolution
    data): only an image smaller than the size is scaled. image_size None: each image as it is;
    all must then have one size."""
    mode = "RGB" if channels == 3 else "L"
    steps: list[Callable[[Any], Any]] = []
    if image_size is not None:
        fit, (height, width) = covering(image_size), image_shape(image_size)
        steps += [fit if resize else lambda image: image if image.height >= height and image.width >= width
                  else fit(image), transforms.CenterCrop((height, width))]
    to_tensor = transforms.Compose([*steps, transforms.PILToTensor()])
    loaded: list[Tensor] = []
    for path in files:
        try:
            with Image.open(path) as image:
                loaded.append(to_tensor(image.convert(mode)))
        except LOAD_ERRORS as err:
            raise GanCliError(f"unreadable image {path}: {err}") from None
        if loaded[-1].shape != loaded[0].shape:
            raise GanCliError(f"{path} is {loaded[-1].shape[2]}x{loaded[-1].shape[1]} px but {files[0]} is "
                              f"{loaded[0].shape[2]}x{loaded[0].shape[1]}: one call reads images of one size")
    return torch.stack(loaded)


def load_image_dir(*, root: str, channels: int, image_size: ImageSize, resize: bool = False,
                   **_unused: Any) -> ImageData:
    """A flat folder of images of any size (DIV2K_train_HR/*.png), unlabelled: each center-cropped
    to image_size (resized on its shorter side first only with resize=true, or when smaller)."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise GanCliError(f"dataset.root={root!r} is not a folder of images")
    images = read_images(image_files(folder), channels, image_size, resize)
    return ImageData(images, torch.zeros(images.shape[0], dtype=torch.long), 0)


def load_unpaired_folder(*, root: str, channels: int, image_size: ImageSize, **_unused: Any) -> Domains:
    """root/trainA, trainB, testA, testB (test folders optional: then the training images)."""
    base = Path(root).expanduser()
    splits = {}
    for name in ("trainA", "trainB", "testA", "testB"):
        folder = base / name
        if name.startswith("test") and not folder.exists():
            folder = base / name.replace("test", "train")
        images = read_images(image_files(folder), channels, image_size)
        splits[name] = ImageData(images, torch.zeros(images.shape[0], dtype=torch.long), 0)
    return Domains(splits["trainA"], splits["trainB"], splits["testA"], splits["testB"])


def load_images(path: Path, channels: int, image_size: ImageSize | None) -> tuple[Tensor, list[str]]:
    """gan-sample's `input=`: a folder of images or an .npz (arr_0 uint8 (N, H, W, C)), as
    uint8 (N, channels, *image_size) (None: as they are), with a file name per image."""
    if path.suffix == ".npz":
        import numpy as np

        try:
            array = np.load(path)["arr_0"]
        except (OSError, KeyError, ValueError) as err:
            raise GanCliError(f"input={path}: not an .npz with arr_0 uint8 (N, H, W, C): {err}") from None
        if array.dtype != np.uint8 or array.ndim != 4:
            raise GanCliError(f"input={path}: arr_0 is {array.dtype} {array.shape}; allowed is uint8 (N, H, W, C)")
        images = fit_images(torch.from_numpy(array).permute(0, 3, 1, 2), channels, image_size)
        return images, [f"{index:06d}.png" for index in range(images.shape[0])]
    files = image_files(path)
    return read_images(files, channels, image_size), [f"{p.stem}.png" for p in files]
