"""Projection: the latents whose images best match target images on masked pixels (gan-project).

Every target gets `starts` candidates (times every class tried, for a conditional G with no
`class=`), all optimized together with Adam, a batch of targets at a time; the candidate whose
image fits best is kept. Each candidate's loss depends on its own latent alone (G and the feature
classifier in eval mode, Adam per element), so a target's result never depends on the other
targets' pixels (the random draws do follow the order of the targets and batch_size).

  * z (any z -> image G): Adam on z, from normal draws, with a weak Gaussian prior on z;
  * w / w_plus (a StyleGenerator): stylegan2-ada-pytorch's projector.py, batched: the first start
    from w_avg (a conditional G: its class's mean w), the others from the w of random z; Gaussian
    noise added to w early on (5% of w's spread, fading out over the first 75% of the steps); the
    synthesis network's per-layer noise inputs optimized beside w under its noise regularizer
    (their autocorrelation at every scale, weight `noise_weight`), renormalized every step.
    The images written are drawn from w with the checkpoint's own noise, as projector.py's
    output is, so `gan-sample latents=` redraws them exactly.
Both use projector.py's learning-rate ramp: up over the first 5% of the steps, cosine down over the last 25%.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_cli.data.datasets import to_uint8
from gan_cli.models.abilities import StyleGenerator
from gan_cli.reporting.progress import TaskProgress
from gan_cli.sampling import latent_tools
from gan_cli.sampling.generate import draw_latents, z_dim
from gan_cli.sampling.latent_file import Latents, render
from gan_cli.sampling.project_terms import FitLoss

PRIOR_WEIGHT = 1e-3  # z: weight of mean(z^2), the Gaussian prior that keeps z where G was trained
W_STD_SAMPLES = 1000  # latents mapped to estimate w's spread (projector.py: 10000)
W_NOISE, W_NOISE_RAMP = 0.05, 0.75  # projector.py's initial_noise_factor, noise_ramp_length
LR_RAMPUP, LR_RAMPDOWN = 0.05, 0.25
GIF_TARGETS = 16  # the animation shows the first batch's targets, at most this many
PROGRESS_EVERY = 10  # steps between loss notes on the progress bar (a host sync)


@dataclass(frozen=True)
class Settings:
    space: str  # z | w | w_plus
    starts: int
    steps: int
    lr: float
    seed: int
    noise_weight: float
    batch_size: int  # targets optimized together (each with starts x classes candidates)
    classes: Sequence[int] | None  # None: unconditional; else the classes tried for every target
    frames: int = 0  # animation frames to record (0: none)


@dataclass
class Projection:
    latents: Latents  # the kept candidate of every target
    images: Tensor  # uint8 (N, C, H, W): render(latents)
    loss: Tensor  # (N,) the fit of the images written
    start_loss: Tensor  # (N,) the best start's fit before optimizing
    frames: Tensor | None  # uint8 (F, n, C, H, W): the kept candidates of the first n targets along the way


def learning_rate(base: float, progress: float) -> float:
    """projector.py's schedule at `progress` in [0, 1): linear warm-up, cosine ramp-down."""
    ramp = min(1.0, (1.0 - progress) / LR_RAMPDOWN)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return base * ramp * min(1.0, progress / LR_RAMPUP)


def noise_inputs(network: nn.Module) -> list[tuple[nn.Module, str]]:
    """The synthesis network's per-layer noise buffers (stylegan2_layers.StyledConv.noise_const)."""
    return [(module, name) for module in network.modules() for name, _ in module.named_buffers(recurse=False)
            if name == "noise_const"]


def noise_penalty(noise: Tensor) -> Tensor:
    """(B,) projector.py's regularizer: squared autocorrelation of each noise map at shifts of
    one pixel, down to 8 px by 2x average pooling (a map should look like white noise)."""
    penalty = noise.new_zeros(noise.shape[0])
    while True:
        penalty = penalty + (noise * noise.roll(1, dims=3)).mean((1, 2, 3)).square() \
            + (noise * noise.roll(1, dims=2)).mean((1, 2, 3)).square()
        if noise.shape[2] <= 8:
            return penalty
        noise = F.avg_pool2d(noise, 2)


class Candidates:
    """One batch's latents under optimization: `images()` draws them (with grad), `penalty()`
    is what besides the fit is minimized, `after_step()` keeps the noise maps normalized,
    `latents()` is what is written."""

    def __init__(self, generator: nn.Module, start: Tensor, labels: Tensor | None, settings: Settings,
                 w_std: float, noise: torch.Generator):
        self.generator, self.settings, self.labels, self.w_std, self.noise = generator, settings, labels, w_std, noise
        self.latent = start.clone().requires_grad_(True)
        self.params, self.maps = [self.latent], []
        self.progress = 0.0
        if settings.space != "z":
            self.style: StyleGenerator = latent_tools.require_w(copy.deepcopy(generator).requires_grad_(False),
                                                                f"space={settings.space}")
            for module, name in noise_inputs(self.style.synthesis):  # type: ignore[arg-type]
                shape = getattr(module, name).shape[-2:]  # (height, width) of the layer's output
                values = torch.randn(len(start), 1, *shape, generator=noise).to(start.device).requires_grad_(True)
                setattr(module, name, values)  # (B, 1, h, w): a noise map per candidate
                self.maps.append(values)
            self.params += self.maps

    def images(self) -> Tensor:
        if self.settings.space == "z":
            return self.generator(self.latent, self.labels)
        scale = self.w_std * W_NOISE * max(0.0, 1.0 - self.progress / W_NOISE_RAMP) ** 2
        jitter = torch.randn(self.latent.shape, generator=self.noise).to(self.latent.device) * scale
        ws = self.latent + jitter
        num_ws = len(self.style.synthesis.ws_resolutions)
        return self.style.synthesis(ws[:, None].expand(-1, num_ws, -1) if ws.ndim == 2 else ws)

    def penalty(self) -> Tensor:
        if self.settings.space == "z":
            return PRIOR_WEIGHT * self.latent.square().mean(1)
        return self.settings.noise_weight * sum((noise_penalty(m) for m in self.maps),
                                                self.latent.new_zeros(len(self.latent)))

    @torch.no_grad()
    def after_step(self) -> None:
        for noise in self.maps:
            noise -= noise.mean((1, 2, 3), keepdim=True)
            noise *= noise.square().mean((1, 2, 3), keepdim=True).rsqrt()

    def latents(self) -> Latents:
        return Latents(self.settings.space, self.latent.detach().float().cpu(),
                       None if self.labels is None else self.labels.cpu())


def class_labels(settings: Settings, targets: int) -> Tensor | None:
    """(targets x classes x starts,) the label of every candidate, target-major."""
    if settings.classes is None:
        return None
    return torch.tensor(list(settings.classes)).repeat_interleave(settings.starts).repeat(targets)


@torch.no_grad()
def w_spread(style: StyleGenerator, classes: Sequence[int] | None, z_size: int, seed: int) -> float:
    """projector.py's w_std: the RMS distance of mapped random latents from w_avg."""
    device = latent_tools.device_of(style)
    z = draw_latents(W_STD_SAMPLES, z_size, seed).to(device)
    labels = None if classes is None else torch.tensor(list(classes)).repeat(W_STD_SAMPLES)[:W_STD_SAMPLES]
    w = style.mapping_ws(z, None if labels is None else labels.to(device))[:, 0]
    return float((w - style.w_avg).square().sum(1).mean().sqrt())


@torch.no_grad()
def starts(generator: nn.Module, z: Tensor, labels: Tensor | None, settings: Settings) -> Tensor:
    """The candidates' first latents: z itself, or (w, w_plus) the first start of every (target,
    class) at the centre w (w_avg or the class's mean), the others at the w of their z."""
    if settings.space == "z":
        return z
    style = latent_tools.require_w(generator, f"space={settings.space}")
    w = style.mapping_ws(z, labels)[:, 0]  # (B, w_dim)
    center = style.mapping_ws(z, labels, truncation=0.0)[:, 0]  # psi 0: the centre itself
    first = torch.arange(len(z), device=z.device) % settings.starts == 0
    w = torch.where(first[:, None], center, w)
    return w[:, None].expand(-1, len(style.synthesis.ws_resolutions), -1).clone() if settings.space == "w_plus" else w


def fitness(generator: nn.Module, latents: Latents, fit: FitLoss, rows: Tensor, batch_size: int) -> Tensor:
    """(B,) the fit of the latents' images as gan-sample draws them (uint8, `render`)."""
    images = render(generator, latents, batch_size).to(rows.device)
    return torch.cat([fit(part.float().div(127.5).sub(1.0), part_rows)
                      for part, part_rows in zip(images.split(batch_size), rows.split(batch_size), strict=True)])


def project(generator: nn.Module, fit: FitLoss, count: int, settings: Settings, render_batch: int) -> Projection:
    """Project `count` targets (the rows of `fit`): see the module's docstring. The images are
    drawn from the kept latents `render_batch` at a time, as gan-sample latents= draws them."""
    device = latent_tools.device_of(generator)
    generator.requires_grad_(False).eval()
    per_target = len(settings.classes or [None]) * settings.starts
    z_size = z_dim(generator)
    all_z = draw_latents(count * per_target, z_size, settings.seed)  # the same starts at any batch_size
    w_std = 0.0
    if settings.space != "z":
        w_std = w_spread(latent_tools.require_w(generator, f"space={settings.space}"), settings.classes, z_size,
                         settings.seed)
    noise = torch.Generator().manual_seed(settings.seed + 1)
    kept: list[tuple[Latents, Tensor, Tensor]] = []
    frames: list[Tensor] = []
    batches = range(0, count, settings.batch_size)
    with TaskProgress(f"projecting {count} target(s) x {per_target} candidates", len(batches) * settings.steps) \
            as progress:
        for first in batches:
            targets = min(settings.batch_size, count - first)
            rows = torch.arange(first, first + targets, device=device).repeat_interleave(per_target)
            labels = class_labels(settings, targets)
            labels = None if labels is None else labels.to(device)
            z = all_z[first * per_target:(first + targets) * per_target].to(device)
            candidates = Candidates(generator, starts(generator, z, labels, settings), labels, settings, w_std, noise)
            start_loss = fitness(generator, candidates.latents(), fit, rows, len(rows))
            record = frames.append if first == 0 and settings.frames else None
            optimize(candidates, fit, rows, settings, progress, record, min(targets, GIF_TARGETS) * per_target)
            loss = fitness(generator, candidates.latents(), fit, rows, len(rows))
            kept.append((candidates.latents(), loss, start_loss))
    latents, start_loss, chosen_first = best_of(kept, per_target)
    images = render(generator, latents, render_batch)
    rows = torch.arange(count, device=device)
    loss = torch.cat([fit(part.to(device).float().div(127.5).sub(1.0), part_rows).cpu()
                      for part, part_rows in zip(images.split(render_batch), rows.split(render_batch), strict=True)])
    animation = None
    if frames:  # the kept candidates of the first targets, step by step, then as written
        shown = chosen_first[:len(frames[0]) // per_target]
        animation = torch.stack([*(frame[shown] for frame in frames), images[:len(shown)]])
    return Projection(latents, images, loss, start_loss, animation)


def optimize(candidates: Candidates, fit: FitLoss, rows: Tensor, settings: Settings, progress: TaskProgress,
             record: Callable[[Tensor], None] | None, recorded: int) -> None:
    """Adam on the candidates' latents (and noise maps) for `settings.steps` steps; every
    steps/frames steps, `record` gets the first `recorded` candidates' images (uint8, CPU)."""
    optimizer = torch.optim.Adam(candidates.params, lr=settings.lr, betas=(0.9, 0.999))
    every = -(-settings.steps // max(settings.frames, 1))  # ceil: at most `frames` frames
    note = ""
    for step in range(settings.steps):
        candidates.progress = step / settings.steps
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(settings.lr, candidates.progress)
        images = candidates.images()  # (B, C, H, W)
        loss = fit(images, rows)  # (B,)
        total = (loss + candidates.penalty()).sum()  # a sum: each candidate's gradient is its own
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        candidates.after_step()
        if record is not None and step % every == 0:
            record(to_uint8(images[:recorded].detach()).cpu())
        if (step + 1) % PROGRESS_EVERY == 0:
            note = f"loss {loss.mean().item():.4f}"
        progress.advance(1, note)


def best_of(kept: list[tuple[Latents, Tensor, Tensor]], per_target: int) -> tuple[Latents, Tensor, Tensor]:
    """Per target, the candidate whose written image fits best: (its latents, the best start's
    fit before optimizing (N,), the chosen candidates' indices in the first batch)."""
    values, labels, start_losses, chosen_first = [], [], [], None
    for latents, loss, start_loss in kept:
        best = loss.view(-1, per_target).argmin(1).cpu()  # (targets,)
        chosen = torch.arange(len(best)) * per_target + best
        chosen_first = chosen if chosen_first is None else chosen_first
        values.append(latents.values[chosen])
        labels.append(None if latents.labels is None else latents.labels[chosen])
        start_losses.append(start_loss.view(-1, per_target).min(1).values.cpu())
    label_tensor = None if labels[0] is None else torch.cat([t for t in labels if t is not None])
    assert chosen_first is not None
    return Latents(kept[0][0].space, torch.cat(values), label_tensor), torch.cat(start_losses), chosen_first
