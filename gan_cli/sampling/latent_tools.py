"""gan-sample's latent tools for z -> image generators (stylegan2-ada-pytorch's conventions):
seeds (one image per seed, from that seed's own RNG), truncation, latent walks and style-mixing
grids. What a generator offers is read from what it has: every generator maps (z, labels) to
images; a StyleGAN-like one (models/abilities.py: StyleGenerator) also has `mapping_ws` (z, labels,
truncation -> ws (B, num_ws, w_dim)), `synthesis` (ws -> images), `w_avg` and
`synthesis.ws_resolutions`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig
from torch import Tensor, nn

from gan_cli.core.config import SEED_LIMIT
from gan_cli.core.errors import GanCliError
from gan_cli.data.datasets import to_uint8
from gan_cli.models.abilities import StyleGenerator, is_style_generator
from gan_cli.sampling.generate import generate

SEED_RANGE = re.compile(r"^(\d+)-(\d+)$")
LAYER_GROUPS = ("coarse", "middle", "fine")


def parse_seeds(spec: object) -> Sequence[int] | None:
    """`seeds=[1,2,3]`, `seeds=0-63` (inclusive: a range, however long, takes no memory) or a
    single `seeds=7`; None when unset."""
    if spec is None:
        return None
    if isinstance(spec, ListConfig):
        spec = list(spec)
    seeds: Sequence[int]
    if isinstance(spec, int) and not isinstance(spec, bool):
        seeds = [spec]
    elif isinstance(spec, str) and SEED_RANGE.match(spec):
        first, last = (int(part) for part in SEED_RANGE.match(spec).groups())  # type: ignore[union-attr]
        seeds = range(first, last + 1)
    elif isinstance(spec, (list, tuple)) and spec and all(isinstance(s, int) and not isinstance(s, bool) for s in spec):
        seeds = list(spec)
    else:
        seeds = []
    if not seeds or min(seeds) < 0 or max(seeds) >= SEED_LIMIT:
        raise GanCliError(f"seeds={spec}: allowed are a list of integers in 0..{SEED_LIMIT - 1} such as [1,2,3], "
                          "or a range such as 0-63")
    return seeds


def seed_inputs(seeds: Sequence[int], z_dim: int, classes: int) -> tuple[Tensor, Tensor | None]:
    """z (len(seeds), z_dim) and, for a conditional G, a class per seed, each from its own seed's
    RNG: image k depends on seeds[k] alone, never on the batch size or the other seeds."""
    latents, labels = [], []
    for seed in seeds:
        noise = torch.Generator().manual_seed(seed)
        latents.append(torch.randn(z_dim, generator=noise))
        if classes:
            labels.append(int(torch.randint(classes, (), generator=noise)))
    return torch.stack(latents), torch.tensor(labels) if classes else None


def require_w(generator: nn.Module, key: str) -> StyleGenerator:
    """`generator`, typed as what it is, or a one-line error: option `key` needs a StyleGenerator."""
    if not is_style_generator(generator):
        raise GanCliError(f"{key}: this generator ({type(generator).__module__.split('.')[-1]}) has no mapping "
                          "network and no w average; it works with StyleGAN checkpoints (model=stylegan2)")
    return generator


def check_options(cfg: DictConfig, generator: nn.Module) -> None:
    """One-line errors for sample options this generator or this combination cannot do (the
    output suffix against `interpolate` is checked in sample.py, before any loading)."""
    if cfg.truncation != 1.0:
        require_w(generator, f"truncation={cfg.truncation}")
    if cfg.mix:
        require_w(generator, f"mix={cfg.mix}")
        parse_mix(cfg.mix)
        if cfg.interpolate:
            raise GanCliError("mix= and interpolate= are separate outputs: set one of them")
        if parse_seeds(cfg.seeds) is None or parse_seeds(cfg.mix_seeds) is None:
            raise GanCliError(f"mix={cfg.mix} needs seeds= (the rows) and mix_seeds= (the columns whose "
                              f"{cfg.mix} styles replace the rows'), e.g. seeds=[1,2,3] mix_seeds=[10,11,12,13]")
    elif cfg.mix_seeds is not None:
        raise GanCliError(f"mix_seeds={cfg.mix_seeds} is for style-mixing grids: set mix=coarse|middle|fine too")
    if cfg.interpolate:
        seeds = parse_seeds(cfg.seeds)
        if seeds is None or len(seeds) < 2:
            raise GanCliError(f"interpolate={cfg.interpolate} walks between seeds: give two or more, e.g. "
                              "seeds=[1,2,3] or seeds=0-7")
        if len(seeds) > cfg.interpolate:  # frames could not visit every seed (and all seeds' latents are made at once)
            raise GanCliError(f"interpolate={cfg.interpolate} frames cannot visit {len(seeds):,} seeds: give at most "
                              f"{cfg.interpolate} seeds, or more frames")


def device_of(generator: nn.Module | StyleGenerator) -> torch.device:
    return next(generator.parameters()).device


@torch.no_grad()
def ws_of(generator: StyleGenerator, z: Tensor, labels: Tensor | None, truncation: float, batch_size: int) -> Tensor:
    """(N, num_ws, w_dim) on the CPU, in eval mode (no w_avg update, no mixing)."""
    generator.eval()
    device, parts = device_of(generator), []
    label_parts = labels.split(batch_size) if labels is not None else [None] * len(z.split(batch_size))
    for zs, ys in zip(z.split(batch_size), label_parts, strict=True):
        parts.append(generator.mapping_ws(zs.to(device), None if ys is None else ys.to(device), truncation).cpu())
    return torch.cat(parts)


@torch.no_grad()
def synthesize(generator: StyleGenerator, ws: Tensor, batch_size: int) -> Tensor:
    """uint8 images (N, C, H, W) on the CPU from ws, `batch_size` at a time, eval mode (fixed noise)."""
    generator.eval()
    device = device_of(generator)
    return torch.cat([to_uint8(generator.synthesis(part.to(device))).cpu() for part in ws.split(batch_size)])


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation between latents (a Gaussian z's norm stays typical along the way)."""
    cos = (a * b).sum(-1, keepdim=True) / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True))
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(omega.abs().max()) < 1e-6:
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def walk_positions(keyframes: int, frames: int) -> list[tuple[int, float]]:
    """(segment, t in [0, 1]) for `frames` evenly spaced points on a path through `keyframes` points."""
    positions = []
    for frame in range(frames):
        where = frame * (keyframes - 1) / (frames - 1)
        segment = min(int(where), keyframes - 2)
        positions.append((segment, where - segment))
    return positions


def walk(generator: nn.Module, z: Tensor, labels: Tensor | None, frames: int, truncation: float,
         batch_size: int) -> Tensor:
    """`frames` uint8 images along the path through the seeds' latents: linear in w for a
    StyleGAN (w space is what the mapping network made smooth), spherical in z otherwise (a
    conditional z-model takes the label of the nearer seed)."""
    if is_style_generator(generator):
        return walk_ws(generator, ws_of(generator, z, labels, truncation, batch_size), frames, batch_size)
    positions = walk_positions(len(z), frames)
    path_z = torch.stack([slerp(z[s], z[s + 1], t) for s, t in positions])
    path_labels = None if labels is None else torch.stack([labels[s + (t >= 0.5)] for s, t in positions])
    return generate(generator, path_z, path_labels, batch_size).cpu()


def walk_ws(generator: StyleGenerator, ws: Tensor, frames: int, batch_size: int) -> Tensor:
    """`frames` uint8 images along the straight path through `ws` (K, num_ws, w_dim)."""
    path = torch.stack([torch.lerp(ws[s], ws[s + 1], t) for s, t in walk_positions(len(ws), frames)])
    return synthesize(generator, path, batch_size)


def layer_groups(resolutions: list[int]) -> dict[str, list[int]]:
    """w indices per group: the resolutions split in thirds, coarse taking the extra ones (28 px:
    7 / 14 / 28; 32 px: 4-8 / 16 / 32; 64 px: 4-8 / 16-32 / 64), as the paper's coarse 4-8,
    middle 16-32, fine 64+ at 1024 px."""
    levels = sorted(set(resolutions))
    coarse = math.ceil(len(levels) / 3)
    middle = math.ceil((len(levels) - coarse) / 2)
    bounds = {"coarse": levels[:coarse], "middle": levels[coarse:coarse + middle], "fine": levels[coarse + middle:]}
    return {name: [i for i, r in enumerate(resolutions) if r in chosen] for name, chosen in bounds.items()}


def parse_mix(spec: object) -> list[str]:
    """`mix=coarse` or `mix=[coarse,middle]` -> the layer groups the columns' styles replace."""
    groups = [str(part) for part in spec] if isinstance(spec, (list, tuple, ListConfig)) else [str(spec)]
    if not groups or any(group not in LAYER_GROUPS for group in groups):
        raise GanCliError(f"mix={spec}: allowed are coarse, middle, fine or a list such as [coarse,middle]")
    return groups


def mixing_grid(generator: nn.Module, rows: tuple[Tensor, Tensor | None], columns: tuple[Tensor, Tensor | None],
                groups: list[str], truncation: float, batch_size: int) -> tuple[Tensor, Tensor]:
    """Row seeds give every layer's style but the chosen groups', which come from the column seeds.
    Returns the mixed images (rows x columns, row-major) and the paper's grid: a blank corner, the
    column images on top, the row images on the left, the mixes inside."""
    style = require_w(generator, f"mix={','.join(groups)}")
    row_ws = ws_of(style, *rows, truncation, batch_size)  # (R, num_ws, w_dim)
    column_ws = ws_of(style, *columns, truncation, batch_size)  # (K, num_ws, w_dim)
    chosen = [i for name, indices in layer_groups(style.synthesis.ws_resolutions).items() if name in groups
              for i in indices]
    mixed = row_ws[:, None].repeat(1, len(column_ws), 1, 1)  # (R, K, num_ws, w_dim)
    mixed[:, :, chosen] = column_ws[None, :, chosen]
    cells = synthesize(style, mixed.flatten(0, 1), batch_size)
    row_images, column_images = synthesize(style, row_ws, batch_size), synthesize(style, column_ws, batch_size)
    blank = torch.zeros_like(row_images[:1])  # the empty corner: black, not a white square beside dark images
    lines = [torch.cat([blank, column_images])]
    lines += [torch.cat([row_images[r:r + 1], cells[r * len(column_ws):(r + 1) * len(column_ws)]])
              for r in range(len(row_ws))]
    return cells, torch.cat(lines)


def write_animation(frames: Tensor, out: Path, fps: int) -> None:
    """uint8 (N, C, H, W) frames -> an animated GIF (Pillow) or an .mp4 (torchvision + PyAV)."""
    if out.suffix == ".mp4":
        try:
            import av  # noqa: F401  torchvision's video writer needs PyAV
            from torchvision.io import write_video
        except ImportError:
            raise GanCliError(f"out={out}: writing .mp4 needs PyAV (the `av` package), which is not installed; "
                              "use out=walk.gif") from None
        video = frames.permute(0, 2, 3, 1)  # (N, H, W, C)
        write_video(str(out), video.expand(-1, -1, -1, 3) if video.shape[-1] == 1 else video, fps=fps)
        return
    from PIL import Image

    images = [Image.fromarray(frame.permute(1, 2, 0).squeeze(-1).numpy()) for frame in frames]  # L or RGB
    images[0].save(out, save_all=True, append_images=images[1:], duration=max(1000 // fps, 20), loop=0)
