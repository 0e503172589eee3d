"""`task=srgan`: single-image super-resolution (Ledig et al. 2017): SRResNet G, VGG-style D.

Each step draws a batch of high-resolution (HR) images (random `task.hr_size` crops for image
folders), makes their low-resolution (LR) inputs on the device (antialiased bicubic, gan_cli/data/
lowres.py) and runs two phases, as the paper (and image_gan) do: D on HR vs G(LR), then G with

    content_weight x content(G(LR), HR)          pixel MSE or L1 (`task.content`)
  + perceptual_weight x MSE(phi(G(LR)), phi(HR))  phi: a frozen network (`task.perceptual`, perceptual.py)
  + adversarial_weight x loss.g_loss(D(G(LR)))    the paper's 1e-3 with BCE

For the first `task.pretrain_steps` steps G trains on the content loss alone (SRResNet, the paper's
initialisation for SRGAN) and D's phase returns a constant zero loss without running D: its
optimizer sees no gradients and leaves D as it is. With `task.pretrain_steps` >= the run's steps the
same command trains the content-only SRResNet baseline. Networks: gan_cli/models/srgan.py;
evaluation: sr_eval.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from gan_cli.components.perceptual import build_perceptual
from gan_cli.core.config import build, run_length
from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import square_size
from gan_cli.data.datasets import ImageData, to_float, to_uint8
from gan_cli.data.domains import load_images
from gan_cli.data.lowres import bicubic, center_crop, downsample, nearest, random_crops
from gan_cli.data.streaming import make_sampler
from gan_cli.evaluate.metrics import load_test_split
from gan_cli.loop.distributed import SINGLE_PROCESS, Ranks
from gan_cli.tasks.adversarial import Adversary, mapped, sampling_network, setup_networks
from gan_cli.tasks.base import Drawn, Phase, Preview, Sampling, Stats, Translator, drawn_at_once, frozen, in_eval_mode
from gan_cli.tasks.sr_eval import SrEvaluation

log = logging.getLogger("gan_cli")

CONTENT_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


@dataclass(frozen=True)
class SrSettings:
    """task=srgan's options (conf/task/srgan.yaml explains each), checked against each other and
    the data in one place."""

    scale: int = 4
    hr_size: int | None = None
    pretrain_steps: int = 0
    content: str = "mse"
    content_weight: float = 1.0
    perceptual: str = "classifier"
    perceptual_weight: float = 1.0
    adversarial_weight: float = 1e-3
    vgg19_weights: str | None = None
    vgg19_layers: int = 36

    def check(self, image_size: int) -> int:
        """One line for the first option that does not fit; returns the HR crop size."""
        hr_size = self.hr_size or image_size
        problems = [
            (self.scale not in (2, 4), f"task.scale={self.scale}: allowed are 2 and 4"),
            (self.content not in CONTENT_LOSSES,
             f"task.content={self.content!r}: allowed are {', '.join(CONTENT_LOSSES)}"),
            (hr_size % self.scale or hr_size > image_size,
             f"task.hr_size={hr_size}: allowed is a multiple of task.scale={self.scale} up to "
             f"dataset.image_size={image_size}"),
            (image_size % self.scale,
             f"dataset.image_size={image_size}: allowed is a multiple of task.scale={self.scale}"),
            (min(self.content_weight, self.perceptual_weight, self.adversarial_weight) < 0,
             "task.content_weight / task.perceptual_weight / task.adversarial_weight: allowed are numbers >= 0"),
            (self.pretrain_steps < 0, f"task.pretrain_steps={self.pretrain_steps}: allowed is an integer >= 0"),
        ]
        for bad, message in problems:
            if bad:
                raise GanCliError(f"invalid value {message}")
        return hr_size


def settings_of(task_node: DictConfig) -> SrSettings:
    """The SrSettings of a stored or composed `task` node (its other keys are SrGan's own)."""
    known = {key: task_node[key] for key in SrSettings.__dataclass_fields__ if key in task_node}
    return SrSettings(**known)


def load_test(cfg: DictConfig, train: ImageData | None) -> ImageData:
    """HR test images: the dataset's test split, else `dataset.test_root` (a folder dataset's
    validation images, e.g. DIV2K_valid_HR), else the training images."""
    test = load_test_split(cfg.dataset)
    if test is None and cfg.dataset.get("test_root"):
        test = build(cfg.dataset, root=cfg.dataset.test_root)
    return test if test is not None else (train if train is not None else build(cfg.dataset))


def build_networks(cfg: DictConfig, scale: int) -> dict[str, nn.Module]:
    channels = cfg.dataset.channels
    return {"generator": build(cfg.model.generator, channels=channels, scale=scale),
            "discriminator": build(cfg.model.discriminator, channels=channels)}


def draw(train_cfg: DictConfig, state: Mapping[str, Any], cfg: DictConfig, device: torch.device) -> Drawn:
    """gan-sample: upscale `input` (LR images: a folder or an .npz, any size) or, with input=test,
    the LR versions of the first `num_samples` test images (grid rows LR | bicubic | SR | HR)."""
    if cfg.input is None:
        raise GanCliError("this checkpoint upscales images (task srgan): give input=DIR or input=FILE.npz "
                          "(low-resolution images), or input=test")
    scale = settings_of(train_cfg.task).scale
    generator = sampling_network(build_networks(train_cfg, scale)["generator"], state, "generator", cfg.checkpoint,
                                 device)
    upscale = lambda images: mapped(partial(in_eval_mode, generator), images, cfg.batch_size, device)  # noqa: E731
    if cfg.input == "test":
        hr = to_float(load_test(train_cfg, None).images[: cfg.num_samples])
        lr = torch.cat([downsample(chunk, scale) for chunk in hr.split(cfg.batch_size)])
        outputs = to_uint8(upscale(lr))
        rows = [to_uint8(nearest(lr, scale)), to_uint8(bicubic(lr, scale)), outputs, to_uint8(hr)]
        return drawn_at_once(len(outputs), tuple(outputs.shape[1:]), lambda: (outputs, torch.cat(rows)),
                             cfg.nrow or hr.shape[0])
    inputs, names = load_images(Path(cfg.input).expanduser(), train_cfg.dataset.channels, None)
    outputs = to_uint8(upscale(to_float(inputs)))
    shown = to_uint8(nearest(to_float(inputs), scale))
    pairs = torch.stack([shown, outputs], 1).flatten(0, 1)  # input (nearest-upsampled), output, ...
    return drawn_at_once(len(outputs), tuple(outputs.shape[1:]), lambda: (outputs, pairs), cfg.nrow or 8, names=names)


def translate(train_cfg: DictConfig, state: Mapping[str, Any], checkpoint: str, device: torch.device) -> Translator:
    """gan-draw: G upscaling low-resolution images of any size, as one call on uint8 batches."""
    scale = settings_of(train_cfg.task).scale
    generator = sampling_network(build_networks(train_cfg, scale)["generator"], state, "generator", checkpoint, device)
    return Translator(train_cfg.dataset.channels, None,
                      lambda images: to_uint8(in_eval_mode(generator, to_float(images.to(device)))).cpu())


@dataclass(frozen=True)
class Pending:
    """What D's phase hands to G's: HR and LR batches and G's output on them (None in the warm-up,
    where D's phase runs no G)."""

    hr: Tensor
    lr: Tensor
    sr: Tensor | None


class SrGan:
    stat_names = ("loss/d", "loss/g", "loss/content", "loss/perceptual", "prob/real", "prob/fake")
    sampling: ClassVar[Sampling] = Sampling(("input", "num_samples"), draw, translate)  # num_samples: with input=test

    def __init__(self, cfg: DictConfig, device: torch.device, ranks: Ranks = SINGLE_PROCESS, *,
                 scale: int = SrSettings.scale, hr_size: int | None = SrSettings.hr_size,
                 pretrain_steps: int = SrSettings.pretrain_steps, content: str = SrSettings.content,
                 content_weight: float = SrSettings.content_weight, perceptual: str = SrSettings.perceptual,
                 perceptual_weight: float = SrSettings.perceptual_weight,
                 adversarial_weight: float = SrSettings.adversarial_weight,
                 vgg19_weights: str | None = SrSettings.vgg19_weights, vgg19_layers: int = SrSettings.vgg19_layers,
                 preview_images: int = 8):
        sr = SrSettings(scale, hr_size, pretrain_steps, content, content_weight, perceptual, perceptual_weight,
                        adversarial_weight, vgg19_weights, vgg19_layers)
        self.hr_size = sr.check(square_size(cfg.dataset.image_size, "task=srgan"))  # square training crops
        self.cfg, self.device, self.scale, self.pretrain_steps = cfg, device, sr.scale, sr.pretrain_steps
        self.weights = (sr.content_weight, sr.perceptual_weight, sr.adversarial_weight)
        self.content_loss = CONTENT_LOSSES[sr.content]
        self.data = build(cfg.dataset, expect=ImageData)
        self.test = load_test(cfg, self.data)
        # HR batches in memory or streamed from a converted dataset (make_sampler decides); the LR
        # side is made on the device from each streamed HR batch, so nothing LR is ever stored.
        self.sampler = make_sampler(self.data, device, cfg.trainer.batch_size, cfg.trainer.seed + ranks.rank,
                                    cfg.dataset.hflip, ranks.rank, ranks.world_size)
        trained = setup_networks(cfg, build_networks(cfg, sr.scale), device, {"generator": self.lr_inputs})
        self.networks, self.averages, self.optimizers = trained.networks, trained.averages, trained.optimizers
        self.generator, self.discriminator = self.networks["generator"], self.networks["discriminator"]
        self.ema = self.averages["generator"]
        self.adversary = Adversary(cfg)
        labelled = self.test if self.test.num_classes else None
        self.perceptual = build_perceptual(sr.perceptual, (sr.vgg19_weights, sr.vgg19_layers), cfg, self.data,
                                           labelled, device) if sr.perceptual_weight > 0 else None
        self.phases = (Phase("d", "d", self.d_loss, after_update=self.after_d_update), Phase("g", "g", self.g_loss))
        self.batches_per_epoch, self.batches_per_step = self.sampler.batches_per_epoch, 1
        self.images_per_step = cfg.trainer.batch_size
        count = min(preview_images, self.test.images.shape[0])
        self.preview_hr = center_crop(to_float(self.test.images[:count]), self.hr_size).to(device)
        if self.pretrain_steps:
            self.say_warm_up(run_length(cfg.trainer, self.batches_per_epoch, self.batches_per_step)[0])

    def say_warm_up(self, steps: int) -> None:
        """The warm-up's progress lines read d_loss, g_loss and D's outputs 0 and its steps are
        cheap (no D): said before the first, with what that does to the run-time estimate."""
        warm_up = (f"task.pretrain_steps={self.pretrain_steps}: steps 1..{min(self.pretrain_steps, steps)} train G "
                   "on the content loss alone (SRResNet warm-up: watch `content`; d_loss, g_loss and D's outputs "
                   "read 0 there)")
        if steps <= self.pretrain_steps:
            log.info("%s; this run of %d steps ends inside it: no adversarial step (it would begin at step %d), "
                     "the content-only SRResNet baseline",
                     warm_up, steps, self.pretrain_steps + 1)
        else:
            log.info("%s; the adversarial phase begins at step %d. Warm-up steps run no D: the first run-time "
                     "estimate is theirs, revised once adversarial steps are timed if they cost 1.5x more",
                     warm_up, self.pretrain_steps + 1)

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """HR (B, C, S, S) and LR (B, C, S/scale, S/scale) in [-1, 1] for this step."""
        hr = random_crops(self.sampler.batch(step)[0], self.hr_size)
        return hr, downsample(hr, self.scale)

    def lr_inputs(self, count: int, noise: torch.Generator) -> tuple[Tensor]:
        """Random LR training inputs from a private generator (the EMA's BatchNorm re-estimation)."""
        images = self.sampler.images  # on the device, or a streaming run's memory-mapped file (CPU)
        rows = torch.randint(images.shape[0], (count,), device=noise.device, generator=noise)
        hr = random_crops(to_float(images[rows.to(images.device)].to(noise.device)), self.hr_size, noise)
        return (downsample(hr, self.scale),)

    def d_loss(self, step: int, repeat: int, handed: object) -> tuple[Tensor, Stats, Pending]:
        hr, lr = self.batch(step)
        if step == self.pretrain_steps and step:
            log.info("step %d: the SRResNet warm-up is over, the adversarial phase begins", step + 1)
        if step < self.pretrain_steps:  # content-only warm-up: D is neither run nor changed
            zero = torch.zeros((), device=hr.device)
            return zero.requires_grad_(), {"loss/d": zero, "prob/real": zero, "prob/fake": zero}, Pending(hr, lr, None)
        sr = self.generator(lr)
        # Two forwards: D has BatchNorm, and real and fake must not share batch statistics.
        real_logits, fake_logits = self.discriminator(hr), self.discriminator(sr.detach())
        loss, d_loss, probs = self.adversary.d_loss(self.discriminator, hr, sr.detach(), real_logits, fake_logits, step)
        return loss, {"loss/d": d_loss, **probs}, Pending(hr, lr, sr)

    def after_d_update(self, step: int) -> None:
        if step >= self.pretrain_steps:  # D was trained this step
            self.adversary.after_d_step(self.discriminator)

    def g_loss(self, step: int, repeat: int, handed: object) -> tuple[Tensor, Stats, None]:
        assert isinstance(handed, Pending), "the G phase follows a D phase"
        hr, lr = handed.hr, handed.lr
        sr = self.generator(lr) if handed.sr is None else handed.sr  # the warm-up's D phase ran no G
        content = self.content_loss(sr, hr)
        zero = torch.zeros((), device=hr.device)
        if step < self.pretrain_steps:
            return content, {"loss/content": content.detach(), "loss/perceptual": zero, "loss/g": zero}, None
        content_weight, perceptual_weight, adversarial_weight = self.weights
        perceptual = zero
        if self.perceptual is not None:
            perceptual = F.mse_loss(self.perceptual(sr), self.perceptual(hr).detach())
        with frozen(self.discriminator):  # D's weights get no gradient from G's phase
            adversarial = self.adversary.g_loss(self.discriminator(sr))
        total = content_weight * content + perceptual_weight * perceptual + adversarial_weight * adversarial
        return total, {"loss/content": content.detach(), "loss/perceptual": perceptual.detach(),
                       "loss/g": adversarial.detach()}, None

    def upscale(self, lr: Tensor) -> Tensor:
        """[-1, 1] LR images -> SR images, with the EMA generator in eval mode."""
        return in_eval_mode(self.ema.module, lr)

    def preview(self) -> Preview:
        """Rows: LR (nearest-upsampled) | bicubic | SR | HR, on fixed test images."""
        lr = downsample(self.preview_hr, self.scale)
        rows = [nearest(lr, self.scale), bicubic(lr, self.scale), self.upscale(lr), self.preview_hr]
        return Preview(torch.cat(rows), self.preview_hr.shape[0])

    def real_preview(self) -> Preview:
        count = self.preview_hr.shape[0]
        return Preview(center_crop(to_float(self.sampler.images[:count]), self.hr_size), count)

    def evaluation(self, cfg: DictConfig) -> SrEvaluation:
        return SrEvaluation(cfg, self.data, self.test, self.upscale, self.scale, self.device)
