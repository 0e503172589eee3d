"""What gan-draw's panels compute, without the web page (apps/draw.py wires these to Gradio):

  * z -> image checkpoints (`Sketch`): the strokes of a canvas layer become a target and a mask
    (the drawn pixels), projected as gan-project projects (sampling/project.py), once per
    candidate, each candidate the best of its own starts; the candidates' latents walk between
    two of them (latent_file.walk); plain samples by seed, class and truncation;
  * image -> image checkpoints (the task's `Sampling.translate`): one input image -> its output.

The panel is chosen by what the checkpoint's task draws, as gan-eval does (sources.py): never by
a family's name. Images go in and out as uint8 (H, W, 3) arrays, as Gradio passes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import square_size
from gan_cli.sampling.latent_file import Latents
from gan_cli.sampling.project_terms import FitLoss, PerceptualFeatures
from gan_cli.tasks.base import Translator

COVERED = 0.25  # a generator pixel is drawn when strokes cover this much of it
NOISE_WEIGHT = 1e5  # StyleGAN in w: gan-project's noise regularization weight


@dataclass
class Sketch:
    """A z -> image generator and how sketches are projected into it (gan-draw's keys)."""

    generator: nn.Module
    channels: int
    size: int
    classes: int  # 0: unconditional
    style: bool  # a StyleGenerator: projected in w, truncation applies
    features: PerceptualFeatures | None  # the perceptual term's network (perceptual_weight > 0)
    cfg: DictConfig  # candidates, starts, steps, lr, seed, pixel_weight, perceptual_weight


@dataclass
class Candidates:
    images: Tensor  # uint8 (k, C, H, W), best fit first
    latents: Latents  # theirs, in the same order
    loss: Tensor  # (k,) their fit to the strokes


def load(cfg: DictConfig) -> Sketch | Translator:
    """The checkpoint through gan-sample's checked path (weights only, its config validated as
    data); the panel its task has: a Sketch for a z -> image task, else the task's translator."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from gan_cli.core.config import build, resolve_device
    from gan_cli.core.trusted import stored_config
    from gan_cli.loop.checkpoint import load_checkpoint
    from gan_cli.loop.resume import LEGACY_TASK
    from gan_cli.models.abilities import is_style_generator
    from gan_cli.sampling.generate import class_count
    from gan_cli.sampling.project_terms import perceptual_features
    from gan_cli.tasks import image_sampling
    from gan_cli.tasks.adversarial import sampling_network
    from gan_cli.tasks.base import sampling_of

    device = resolve_device(cfg.device)
    state = load_checkpoint(cfg.checkpoint)
    train_cfg = stored_config(state, cfg.checkpoint)  # only gan-cli's own classes, plain values (trusted.py)
    target = OmegaConf.select(train_cfg, "task._target_", default=LEGACY_TASK)
    sampling = sampling_of(get_class(target))
    if sampling.draw is not image_sampling.draw:
        if sampling.translate is None:
            raise GanCliError(f"checkpoint {cfg.checkpoint} is a {target.rsplit('.', 1)[-1]}: gan-draw has no panel "
                              "for its task (neither z -> image samples nor an image -> image translation)")
        return sampling.translate(train_cfg, state, cfg.checkpoint, device)
    size = square_size(train_cfg.dataset.image_size, "gan-draw")  # its canvas is square
    generator = sampling_network(build(train_cfg.model.generator), state, "generator", cfg.checkpoint, device)
    features = None
    if cfg.perceptual_weight > 0:
        features = perceptual_features(cfg, train_cfg, device)
    return Sketch(generator, train_cfg.dataset.channels, size, class_count(generator),
                  is_style_generator(generator), features, cfg)


def strokes(layer: np.ndarray, channels: int, size: int, background: float = 0.0) -> tuple[Tensor, Tensor]:
    """A canvas layer, uint8 RGBA (H, W, 4), transparent where nothing is drawn -> (target uint8
    (1, channels, size, size), mask float (1, 1, size, size)): each generator pixel's mean stroke
    colour (black where nothing is drawn: the canvas), and in the mask 1 where strokes cover at least
    COVERED of it, `background` elsewhere. FitLoss weighs each pixel's squared error by its mask
    value squared: with background 0 only the drawn pixels constrain, and G may paint everything
    else white; a small weight keeps the undrawn canvas mostly empty, as a sketch means it."""
    rgba = torch.from_numpy(np.ascontiguousarray(layer)).permute(2, 0, 1)[None].float() / 255  # (1, 4, H, W)
    alpha = rgba[:, 3:]
    coverage = F.interpolate(alpha, size=(size, size), mode="area")  # (1, 1, size, size)
    colour = F.interpolate(rgba[:, :3] * alpha, size=(size, size), mode="area") / coverage.clamp(min=1e-6)
    if channels == 1:  # ITU-R 601 luma, as fit_images
        colour = (colour * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    target = colour.mul(255).round().clamp(0, 255).to(torch.uint8)
    drawn = coverage >= COVERED
    return target * drawn, torch.where(drawn, 1.0, background)


def candidates(sketch: Sketch, target: Tensor, mask: Tensor) -> Candidates:
    """`cfg.candidates` images G draws that agree with the target on the mask, best first: the
    target projected as that many targets, each with its own `cfg.starts` random starts (every
    class tried for a conditional G), so each is the best fit of different starts."""
    from gan_cli.sampling import project as projection

    cfg, device = sketch.cfg, next(sketch.generator.parameters()).device
    count = cfg.candidates
    targets = target.expand(count, -1, -1, -1).to(device).float().div(127.5).sub(1.0)  # (k, C, H, W)
    fit = FitLoss(targets, mask.to(device), sketch.features, cfg.pixel_weight, cfg.perceptual_weight)
    tried = list(range(sketch.classes)) if sketch.classes else None
    settings = projection.Settings("w" if sketch.style else "z", cfg.starts, cfg.steps, cfg.lr, cfg.seed,
                                   NOISE_WEIGHT, count, tried)
    result = projection.project(sketch.generator, fit, count, settings, count)
    order = result.loss.argsort()
    labels = None if result.latents.labels is None else result.latents.labels[order]
    return Candidates(result.images[order], Latents(result.latents.space, result.latents.values[order], labels),
                      result.loss[order])


def walk(sketch: Sketch, latents: Latents, first: int, second: int, frames: int) -> Tensor:
    """uint8 (frames, C, H, W): from candidate `first` to `second` (linear in w, spherical in z)."""
    from gan_cli.sampling import latent_file

    pair = [first, second]
    chosen = Latents(latents.space, latents.values[pair], None if latents.labels is None else latents.labels[pair])
    return latent_file.walk(sketch.generator, chosen, frames, frames)


def samples(sketch: Sketch, seed: int, count: int, which: int | None, truncation: float) -> Tensor:
    """uint8 (count, C, H, W) as gan-sample seed=... draws them: `which` = the class (None: random)."""
    from gan_cli.sampling.generate import draw_latents, generate, z_dim

    z = draw_latents(count, z_dim(sketch.generator), seed)
    labels = None
    if sketch.classes:
        noise = torch.Generator().manual_seed(seed + 1)
        labels = torch.full((count,), which) if which is not None else torch.randint(sketch.classes, (count,),
                                                                                     generator=noise)
    return generate(sketch.generator, z, labels, count, truncation if sketch.style else 1.0).cpu()


def translated(translator: Translator, image: np.ndarray) -> np.ndarray:
    """One input image, uint8 (H, W), (H, W, 3) or (H, W, 4) -> the output, uint8 (H', W', 3):
    brought to the generator's channels (and size, when it was trained on one) as inputs are read."""
    from gan_cli.data.datasets import fit_images

    array = image[..., None] if image.ndim == 2 else image[..., :3]
    batch = fit_images(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None], translator.channels,
                       translator.size)  # (1, C, H, W)
    return pictures(translator.apply(batch))[0]


def pictures(images: Tensor, scale: int = 1) -> list[np.ndarray]:
    """uint8 (N, C, H, W) -> N arrays (H x scale, W x scale, 3) for the page (nearest enlargement)."""
    images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    if scale > 1:
        images = images.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    return list(images.permute(0, 2, 3, 1).contiguous().numpy())
