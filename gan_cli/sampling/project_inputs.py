"""gan-project's inputs: the target images (one file, a folder, or an .npz as gan-sample writes)
brought to the generator's channels and size, and the mask that says which pixels constrain the
projection (a named half, an image, or none: every pixel)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gan_cli.core.errors import GanCliError
from gan_cli.data.datasets import fit_images
from gan_cli.data.domains import IMAGE_SUFFIXES, read_images

log = logging.getLogger("gan_cli")

MASK_NAMES = ("none", "top_half", "bottom_half", "left_half", "right_half")
MASKS_ALLOWED = f"{', '.join(MASK_NAMES)}, or an image file (white: the pixels that constrain)"


def target_files(spec: str, path: Path) -> list[Path]:
    """The image files `target=` names: one file, or every image of a flat folder (sorted)."""
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise GanCliError(f"target={spec}: {path.suffix or 'no suffix'} is not an image; allowed are an image "
                              f"({', '.join(IMAGE_SUFFIXES)}), a folder of them, or an .npz (arr_0 uint8 NHWC)")
        return [path]
    if not path.is_dir():
        raise GanCliError(f"target={spec} does not exist: give an image, a folder of images or an .npz")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GanCliError(f"target={spec}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def npz_images(spec: str, path: Path) -> Tensor:
    """arr_0 of an .npz, uint8 (N, H, W, C) -> (N, C, H, W); one line for anything else."""
    try:
        with np.load(path, allow_pickle=False) as arrays:  # data, never code
            array = arrays["arr_0"]
    except (OSError, KeyError, ValueError) as err:
        raise GanCliError(f"target={spec}: not an .npz with arr_0 uint8 (N, H, W, C): {err}") from None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] not in (1, 3) or not len(array):
        raise GanCliError(f"target={spec}: arr_0 is {array.dtype} {array.shape}; allowed is uint8 (N, H, W, C) "
                          "with C 1 or 3 and N >= 1")
    return torch.from_numpy(array).permute(0, 3, 1, 2)


def load_targets(spec: str, channels: int, size: int) -> Tensor:
    """uint8 (N, channels, size, size). Images of another size are resized (a file or folder: on
    the shorter side, then center-cropped, as training data is read), and the log says so."""
    path = Path(spec).expanduser()
    if path.suffix == ".npz":
        if not path.is_file():
            raise GanCliError(f"target={spec} does not exist")
        images = npz_images(spec, path)
        fitted = fit_images(images, channels, size)
    else:
        files = target_files(spec, path)
        try:
            images = read_images(files, channels, None)  # as they are, to tell whether they need resizing
        except GanCliError:  # images of several sizes: each fitted on its own
            images = None
        fitted = read_images(files, channels, size)
    if images is None or images.shape[-2:] != fitted.shape[-2:]:
        found = "several sizes" if images is None else f"{images.shape[-1]}x{images.shape[-2]} px"
        log.warning("target=%s: %d image(s) of %s resized to the generator's %dx%d px", spec, len(fitted), found,
                    size, size)
    return fitted


def load_mask(spec: str, size: int) -> Tensor:
    """(1, 1, size, size) float, 1 where the target constrains the projection."""
    mask = torch.ones(1, 1, size, size)
    half = size // 2
    if spec == "none":
        return mask
    named = {"top_half": (slice(None), slice(half, None)), "bottom_half": (slice(None), slice(None, half)),
             "left_half": (slice(None), slice(None), slice(half, None)),
             "right_half": (slice(None), slice(None), slice(None, half))}
    if spec in named:
        mask[0][named[spec]] = 0  # the other half is free
        return mask
    path = Path(spec).expanduser()
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise GanCliError(f"mask={spec}: allowed are {MASKS_ALLOWED}")
    if not path.is_file():
        raise GanCliError(f"mask={spec} does not exist: allowed are {MASKS_ALLOWED}")
    image = read_images([path], 1, None)  # (1, 1, H, W) grey
    if image.shape[-2:] != (size, size):
        raise GanCliError(f"mask={spec} is {image.shape[-1]}x{image.shape[-2]} px; the generator draws "
                          f"{size}x{size} px images: give a mask of that size")
    mask = (image >= 128).float()
    if not mask.any():
        raise GanCliError(f"mask={spec} is all black: no pixel would constrain the projection (white ones do)")
    return mask
