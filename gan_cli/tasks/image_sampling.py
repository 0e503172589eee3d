"""gan-sample for z -> image checkpoints (task image_gan): plain samples from `seed` or one per
seed of `seeds`, drawn a chunk at a time as they are written, and the latent tools' mixing grids
and walks (latent_tools.py), which are made at once."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from gan_cli.core.config import build
from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import image_shape
from gan_cli.sampling import latent_file, latent_tools
from gan_cli.sampling.generate import class_count, generate, z_dim
from gan_cli.tasks.adversarial import sampling_network
from gan_cli.tasks.base import Drawn, drawn_at_once

# the sample keys a z -> image checkpoint reads (gan-sample's common keys aside)
OPTIONS = ("num_samples", "seed", "seeds", "truncation", "class", "interpolate", "fps", "mix", "mix_seeds", "latents")


def build_networks(cfg: DictConfig) -> dict[str, nn.Module]:
    """The networks a checkpoint of image_gan holds, by name (gan-sample rebuilds G alone)."""
    return {"generator": build(cfg.model.generator), "discriminator": build(cfg.model.discriminator)}


def check_class(classes: int, which: int | str | None) -> None:
    """`class=`: None -> classes drawn uniformly, N -> all of class N, all -> equal runs of each class."""
    if not classes and which is not None:
        raise GanCliError(f"class={which}: this generator is unconditional; leave class unset")
    if classes and which not in (None, "all") and not (isinstance(which, int) and 0 <= which < classes):
        raise GanCliError(f"class={which!r}: allowed are 0..{classes - 1}, all, or unset (random classes)")


def chosen_labels(classes: int, which: int | str, start: int, stop: int, count: int) -> Tensor:
    """Images start..stop of `count` with `class=` set: all of one class, or equal sorted runs
    of each class (one grid row per class)."""
    if which == "all":
        return torch.arange(start, stop) * classes // count
    return torch.full((stop - start,), int(which))


def draw(train_cfg: DictConfig, state: Mapping[str, Any], cfg: DictConfig, device: torch.device) -> Drawn:
    """gan-sample for a z -> image checkpoint, from the EMA generator: `num_samples` images from
    `seed`, or one per seed of `seeds`, drawn a batch at a time as they are written; with `mix` a
    style-mixing grid, with `interpolate` the frames of a walk through the seeds (latent_tools.py)."""
    generator = sampling_network(build(train_cfg.model.generator), state, "generator", cfg.checkpoint, device)
    shape = (train_cfg.dataset.channels, *image_shape(train_cfg.dataset.image_size))  # (C, H, W)
    if cfg.latents is not None:
        return from_latents(generator, cfg, shape)
    latent_tools.check_options(cfg, generator)
    classes, seeds, which = class_count(generator), latent_tools.parse_seeds(cfg.seeds), cfg["class"]
    z_size = z_dim(generator)
    check_class(classes, which)
    if cfg.mix:
        assert seeds is not None  # check_options
        rows, columns = seeds, latent_tools.parse_seeds(cfg.mix_seeds) or []
        return drawn_at_once(len(rows) * len(columns), shape, lambda: latent_tools.mixing_grid(
            generator, seeded(rows, z_size, classes, which), seeded(columns, z_size, classes, which),
            latent_tools.parse_mix(cfg.mix), cfg.truncation, cfg.batch_size), len(columns) + 1)
    if cfg.interpolate:
        assert seeds is not None  # check_options

        def walk() -> tuple[Tensor, Tensor]:
            frames = latent_tools.walk(generator, *seeded(seeds, z_size, classes, which), cfg.interpolate,
                                       cfg.truncation, cfg.batch_size)
            return frames, frames

        return drawn_at_once(cfg.interpolate, shape, walk, 0)
    count = cfg.num_samples if seeds is None else len(seeds)
    rows_of_classes = classes if which == "all" else 0
    return Drawn(count, shape, sampled(generator, cfg, seeds, classes, count),
                 nrow=cfg.nrow or (-(-count // rows_of_classes) if rows_of_classes else 0))


def chunks(count: int, batch_size: int, z_dim: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of the latents drawn at a time: a multiple of batch_size (G sees the same
    batches as if all were drawn at once) and of 16 values (torch's CPU randn fills 16 at a time,
    so a generator cut into such chunks gives the same numbers as one call); a last piece under
    16 values joins the chunk before it, as one call recomputes the last 16."""
    rows = math.lcm(batch_size, 16)
    start = 0
    while start < count:
        stop = min(start + rows, count)
        if 0 < (count - stop) * z_dim < 16:
            stop = count
        yield start, stop
        start = stop


def sampled(generator: nn.Module, cfg: DictConfig, seeds: Sequence[int] | None, classes: int,
            count: int) -> Iterator[tuple[Tensor, Tensor | None]]:
    """`count` images and their labels, a chunk at a time (uint8 on the CPU): the same images as
    drawing every latent first (`draw_latents(count, z_dim, seed)`), in bounded memory."""
    which = cfg["class"]
    latent_noise = torch.Generator().manual_seed(cfg.seed)
    label_noise = torch.Generator().manual_seed(cfg.seed + 1)
    for start, stop in chunks(count, cfg.batch_size, z_dim(generator)):
        if seeds is None:
            z = torch.randn(stop - start, z_dim(generator), generator=latent_noise)
            labels = torch.randint(classes, (stop - start,), generator=label_noise) if classes else None
        else:
            z, labels = latent_tools.seed_inputs(seeds[start:stop], z_dim(generator), classes)
        if classes and which is not None:
            labels = chosen_labels(classes, which, start, stop, count)
        yield generate(generator, z, labels, cfg.batch_size, cfg.truncation).cpu(), labels


def seeded(seeds: Sequence[int], z_dim: int, classes: int, which: int | str | None) -> tuple[Tensor, Tensor | None]:
    """One latent per seed; the class from the seed too, unless `class=` picks it."""
    z, labels = latent_tools.seed_inputs(seeds, z_dim, classes)
    return z, labels if which is None or not classes else chosen_labels(classes, which, 0, len(seeds), len(seeds))


def from_latents(generator: nn.Module, cfg: DictConfig, shape: tuple[int, ...]) -> Drawn:
    """`latents=FILE.npz`: the images of saved latents (gan-project's), drawn as gan-project drew
    them (latent_file.render), or with `interpolate` a walk through them."""
    conflicting = {"seeds": cfg.seeds, "mix": cfg.mix, "mix_seeds": cfg.mix_seeds, "class": cfg["class"]}
    for key, value in conflicting.items():
        if value is not None:
            raise GanCliError(f"{key}={value} does not go with latents={cfg.latents}: the latents (and their "
                              "labels) come from the file")
    if cfg.truncation != 1.0:
        raise GanCliError(f"truncation={cfg.truncation} does not go with latents={cfg.latents}: saved latents are "
                          "redrawn as they are")
    latents = latent_file.read(cfg.latents, generator)
    if cfg.interpolate:
        if not 2 <= len(latents) <= cfg.interpolate:
            raise GanCliError(f"interpolate={cfg.interpolate} walks through the {len(latents)} latents of "
                              f"{cfg.latents}: it needs 2 or more, and at least as many frames as latents")

        def walk() -> tuple[Tensor, Tensor]:
            frames = latent_file.walk(generator, latents, cfg.interpolate, cfg.batch_size)
            return frames, frames

        return drawn_at_once(cfg.interpolate, shape, walk, 0)

    def batches() -> Iterator[tuple[Tensor, Tensor | None]]:
        for start in range(0, len(latents), cfg.batch_size):
            part = latent_file.Latents(latents.space, latents.values[start:start + cfg.batch_size],
                                       None if latents.labels is None else latents.labels[start:start + cfg.batch_size])
            yield latent_file.render(generator, part, cfg.batch_size), part.labels

    return Drawn(len(latents), shape, batches(), nrow=cfg.nrow)
