"""An image size setting (`dataset.image_size`, gan-data's `image_size`): an integer n for n x n
images, or [height, width], height first as in torch's (C, H, W). No torch import: the config
checks use it before anything is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gan_cli.core.errors import GanCliError

# What a size parameter takes (a model's, a loader's): the schema check (schema_check.fits) reads it
# as "an integer or a list of integers"; a config passes lists, code may pass a tuple.
ImageSize = int | Sequence[int]


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_size(value: Any, minimum: int) -> bool:
    """An integer >= minimum, or a [height, width] of two such integers."""
    if _is_count(value):
        return bool(value >= minimum)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):  # a ListConfig is a Sequence
        return False
    sides = list(value)
    return len(sides) == 2 and all(_is_count(side) and side >= minimum for side in sides)


def size_allowed(minimum: int) -> str:
    return f"an integer >= {minimum} or [height, width] of integers >= {minimum}"


def image_shape(size: ImageSize) -> tuple[int, int]:
    """(height, width) of a size setting: n -> (n, n), [h, w] -> (h, w). Anything else (a stored
    config's value that no config check saw): one line."""
    if _is_count(size):
        assert isinstance(size, int)
        return size, size
    if not is_size(size, 1):
        raise GanCliError(f"invalid image size {size!r}: allowed is {size_allowed(1)}")
    assert not isinstance(size, int)
    height, width = size
    return int(height), int(width)


def as_setting(height: int, width: int) -> int | list[int]:
    """The setting that names (height, width): n when square (what every square dataset.json and
    config has said), else [height, width]."""
    return height if height == width else [height, width]


def setting_text(size: ImageSize) -> str:
    """How a user types the size on the command line: `64`, `[48,64]` (no space: one shell word)."""
    height, width = image_shape(size)
    return str(height) if height == width else f"[{height},{width}]"


def shape_text(size: ImageSize) -> str:
    """`64x64`, `48x64`: height x width, as in messages about images."""
    height, width = image_shape(size)
    return f"{height}x{width}"


# What takes [height, width] sizes; the rest (square_size) says so in one line.
NON_SQUARE_SUPPORT = ("task=image_gan (model=dcgan, mlp, resnet, stylegan2), task=text2image, gan-data, gan-sample "
                      "and gan-eval")


def square_size(size: ImageSize, who: str) -> int:
    """The n of an n x n size. A [height, width] one: GanCliError naming `who` (a task, a tool) as
    square-only and what does take it."""
    height, width = image_shape(size)
    if height != width:
        raise GanCliError(f"dataset.image_size={setting_text(size)}: {who} supports square sizes only (an integer); "
                          f"[height, width] sizes are supported by {NON_SQUARE_SUPPORT}")
    return height
