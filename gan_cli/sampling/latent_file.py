"""Saved latents: what gan-project writes beside its images and `gan-sample latents=FILE.npz`
reads back. An .npz holds `arr_0` (uint8 (N, H, W, C), the images), `latents` float32 in the
space named by `space`: z (N, z_dim), w (N, w_dim: one w for every layer) or w_plus (N, num_ws,
w_dim), and `labels` (N,) int64 for a conditional generator. `render` is the one way from saved
latents to images: both commands draw through it, so the images are the same, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from gan_cli.core.errors import GanCliError
from gan_cli.sampling import latent_tools
from gan_cli.sampling.generate import class_count, generate, z_dim

SPACES = ("z", "w", "w_plus")


@dataclass
class Latents:
    space: str  # z | w | w_plus
    values: Tensor  # (N, z_dim) | (N, w_dim) | (N, num_ws, w_dim), float32 on the CPU
    labels: Tensor | None  # (N,) int64 for a conditional G

    def __len__(self) -> int:
        return len(self.values)


def ws(generator: nn.Module, latents: Latents) -> Tensor:
    """(N, num_ws, w_dim) of w or w_plus latents: one w given to every layer, or one per layer."""
    style = latent_tools.require_w(generator, f"latents in space {latents.space}")
    if latents.space == "w":
        return latents.values[:, None].expand(-1, len(style.synthesis.ws_resolutions), -1)
    return latents.values


def render(generator: nn.Module, latents: Latents, batch_size: int) -> Tensor:
    """uint8 (N, C, H, W) on the CPU: G(z, labels) for z, the synthesis network for w and w_plus;
    eval mode (the checkpoint's own noise buffers)."""
    if latents.space == "z":
        return generate(generator, latents.values, latents.labels, batch_size).cpu()
    return latent_tools.synthesize(latent_tools.require_w(generator, "w latents"), ws(generator, latents), batch_size)


def walk(generator: nn.Module, latents: Latents, frames: int, batch_size: int) -> Tensor:
    """`frames` uint8 images on the path through the saved latents (latent_tools.walk's path:
    linear in w, spherical in z)."""
    if latents.space == "z":
        return latent_tools.walk(generator, latents.values, latents.labels, frames, 1.0, batch_size)
    return latent_tools.walk_ws(latent_tools.require_w(generator, "w latents"), ws(generator, latents), frames,
                                batch_size)


def arrays(latents: Latents) -> dict[str, np.ndarray]:
    """The .npz members that hold `latents` (beside arr_0, the images)."""
    saved = {"latents": latents.values.float().numpy(), "space": np.array(latents.space)}
    return saved | ({"labels": latents.labels.to(torch.int64).numpy()} if latents.labels is not None else {})


def read(spec: str, generator: nn.Module) -> Latents:
    """`latents=FILE.npz` checked against `generator`: the space it can draw from, the shapes, the
    labels a conditional G needs; one line for anything wrong."""
    path = Path(spec).expanduser()
    try:
        with np.load(path, allow_pickle=False) as saved:  # data, never code
            members = {name: saved[name] for name in saved.files}
    except (OSError, ValueError) as err:
        raise GanCliError(f"latents={spec}: not a readable .npz ({err})") from None
    if "latents" not in members:
        raise GanCliError(f"latents={spec} holds no `latents` array (gan-project out=FILE.npz writes one)")
    space = str(members["space"]) if "space" in members else "z"
    values = members["latents"]
    if space not in SPACES or values.dtype.kind != "f":
        raise GanCliError(f"latents={spec}: space {space!r}, latents {values.dtype}; allowed are float latents in "
                          f"space {', '.join(SPACES)}")
    latents = Latents(space, torch.from_numpy(values.astype(np.float32)), labels_of(spec, members, len(values)))
    check_shape(spec, latents, generator)
    return latents


def labels_of(spec: str, members: dict[str, np.ndarray], count: int) -> Tensor | None:
    labels = members.get("labels")
    if labels is None:
        return None
    if labels.dtype.kind not in "iu" or labels.shape != (count,):
        raise GanCliError(f"latents={spec}: labels are {labels.dtype} {labels.shape}; allowed are integers ({count},)")
    return torch.from_numpy(labels.astype(np.int64))


def check_shape(spec: str, latents: Latents, generator: nn.Module) -> None:
    """The latents' shape is the one `generator` takes; its labels are there when it needs them."""
    if latents.space == "z":
        expected: tuple[int, ...] = (z_dim(generator),)
    else:
        style = latent_tools.require_w(generator, f"latents={spec} (space {latents.space})")
        w_dim = int(style.w_avg.shape[0])
        expected = (w_dim,) if latents.space == "w" else (len(style.synthesis.ws_resolutions), w_dim)
    if latents.values.ndim != 1 + len(expected) or tuple(latents.values.shape[1:]) != expected \
            or not len(latents.values):
        raise GanCliError(f"latents={spec}: shape {tuple(latents.values.shape)}; this generator takes "
                          f"(N, {', '.join(map(str, expected))}) in space {latents.space}")
    classes = class_count(generator)
    labels = latents.labels
    if classes and latents.space == "z" and labels is None:
        raise GanCliError(f"latents={spec} has no labels; this generator is conditional (classes 0..{classes - 1})")
    if labels is not None and classes and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise GanCliError(f"latents={spec}: labels outside 0..{classes - 1}")
    if labels is not None and not classes:
        latents.labels = None  # an unconditional G: the labels only say where the latents came from

