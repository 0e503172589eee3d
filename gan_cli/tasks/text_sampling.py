"""gan-sample for task=text2image: a grid row per prompt (`text=` or `text_file=`), the columns
sharing their latents, or with `interpolate=N` a walk from prompt to prompt (GAN-INT's idea: G
was trained on embeddings between captions too, so the path between two prompts is G's ground)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from gan_cli.core.config import build
from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import image_shape
from gan_cli.models.text import TextEncoder, tokenize, words_from
from gan_cli.sampling.generate import draw_latents, generate, z_dim
from gan_cli.sampling.latent_tools import parse_seeds, seed_inputs, walk_positions
from gan_cli.tasks.adversarial import sampling_network
from gan_cli.tasks.base import Drawn, drawn_at_once

OPTIONS = ("text", "text_file", "num_samples", "seed", "seeds", "interpolate", "fps")
PADDING = 2  # px between a walk frame's images, as in gan-sample's .png grids (torchvision's)


def read_prompts(cfg: DictConfig) -> list[str]:
    """gan-sample's `text=` (one prompt) or `text_file=` (one prompt per line, one grid row each)."""
    if (cfg.text is None) == (cfg.text_file is None):
        raise GanCliError("this checkpoint draws from captions (task text2image): give text=\"a thick seven\" or "
                          "text_file=prompts.txt (one prompt per line), not both")
    if cfg.text is not None:
        return [str(cfg.text)]
    path = Path(cfg.text_file).expanduser()
    try:
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as err:
        raise GanCliError(f"text_file={cfg.text_file}: cannot be read ({err.strerror or err})") from None
    if not prompts:
        raise GanCliError(f"text_file={cfg.text_file} holds no prompt: one prompt per line")
    return prompts


def check_walk(cfg: DictConfig, prompts: list[str]) -> None:
    """`interpolate=N` walks through the prompts of `text_file=` in order: two or more, and no
    more than the frames (each prompt is a frame of the walk)."""
    if len(prompts) < 2:
        given = f"text_file={cfg.text_file} holds one" if cfg.text_file is not None else "text= gives one"
        raise GanCliError(f"interpolate={cfg.interpolate} walks from prompt to prompt and {given}: give "
                          "text_file= with two or more prompts, one per line, in the order to walk through")
    if len(prompts) > cfg.interpolate:
        raise GanCliError(f"interpolate={cfg.interpolate} frames cannot visit the {len(prompts)} prompts of "
                          f"text_file={cfg.text_file}: give at most {cfg.interpolate} prompts, or more frames")


def draw(train_cfg: DictConfig, state: Mapping[str, Any], cfg: DictConfig, device: torch.device) -> Drawn:
    """gan-sample: `num_samples` images (or one per seed of `seeds`) per prompt, a grid row each;
    the columns share their latents, so rows differ by their prompt alone. With `interpolate`,
    the frames of a walk through the prompts, each frame those columns."""
    prompts, task = read_prompts(cfg), train_cfg.task
    if cfg.interpolate:
        check_walk(cfg, prompts)
    vocabulary = words_from(state["networks"]["text_encoder"]["vocabulary_bytes"])
    tokens = tokenize(prompts, vocabulary, task.max_words)  # unknown words: one line, before any work
    encoder = sampling_network(TextEncoder(vocabulary, task.text_width, task.text_dim), state, "text_encoder",
                               cfg.checkpoint, device)
    generator = sampling_network(build(train_cfg.model.generator, text_dim=task.text_dim), state, "generator",
                                 cfg.checkpoint, device)
    seeds = parse_seeds(cfg.seeds)
    z_size = z_dim(generator)
    z = draw_latents(cfg.num_samples, z_size, cfg.seed) if seeds is None else seed_inputs(seeds, z_size, 0)[0]
    text = encoder(tokens.to(device)).cpu()  # (prompts, text_dim)
    columns = z.shape[0]
    shape = (train_cfg.dataset.channels, *image_shape(train_cfg.dataset.image_size))  # (C, H, W)
    if cfg.interpolate:
        return prompt_walk(generator, z, text, cfg, shape)

    def rows() -> Iterator[tuple[Tensor, Tensor | None]]:
        for embedding in text:
            yield generate(generator, z, embedding.expand(columns, -1), cfg.batch_size).cpu(), None

    return Drawn(columns * len(prompts), shape, rows(), nrow=cfg.nrow or (columns if cfg.text_file is not None else 0))


def prompt_walk(generator: nn.Module, z: Tensor, text: Tensor, cfg: DictConfig, shape: tuple[int, ...]) -> Drawn:
    """`cfg.interpolate` frames along the straight path through the prompts' embeddings `text`
    (K, text_dim): linear, as GAN-INT mixed them in training (beta t1 + (1 - beta) t2), so frame 0
    is the first prompt's embedding exactly and the last frame the last one's. Every frame draws
    the same latents `z` (the columns), one forward of them as `text=` does, so a frame at a prompt
    is that prompt's `text=` images, byte for byte; the frame tiles them `nrow` per row."""
    columns = len(z)
    per_row = min(cfg.nrow or max(int(columns**0.5), 1), columns)  # .png grids' square-ish default
    rows = -(-columns // per_row)
    frame_shape = shape if columns == 1 else (shape[0], rows * (shape[1] + PADDING) + PADDING,
                                              per_row * (shape[2] + PADDING) + PADDING)  # what tiled() makes

    def frames() -> tuple[Tensor, Tensor]:
        path = [torch.lerp(text[segment], text[segment + 1], t)
                for segment, t in walk_positions(len(text), cfg.interpolate)]
        made = torch.stack([tiled(generate(generator, z, embedding.expand(columns, -1), cfg.batch_size).cpu(), per_row)
                            for embedding in path])
        return made, made

    return drawn_at_once(cfg.interpolate, frame_shape, frames, 0)


def tiled(images: Tensor, per_row: int) -> Tensor:
    """uint8 (K, C, H, W) -> one (C, H', W') picture, `per_row` images per row, black PADDING px
    around each: torchvision's grid layout, kept at C channels (make_grid makes a gray image RGB,
    which a GIF stores through a lossy palette). A single image is itself."""
    count, channels, height, width = images.shape
    if count == 1:
        return images[0]
    rows = -(-count // per_row)
    picture = images.new_zeros(channels, rows * (height + PADDING) + PADDING, per_row * (width + PADDING) + PADDING)
    for index, image in enumerate(images):
        row, column = divmod(index, per_row)
        top, left = PADDING + row * (height + PADDING), PADDING + column * (width + PADDING)
        picture[:, top:top + height, left:left + width] = image
    return picture
