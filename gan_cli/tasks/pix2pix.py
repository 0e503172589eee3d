"""`task=pix2pix`: paired image-to-image translation (Isola, Zhu, Zhou & Efros 2017).

A U-Net G maps an input image A to an output (dropout is its only noise); a PatchGAN D scores
(A, B) pairs, so it judges whether B is a plausible output *for that input*. One step, as in the
authors' code: a D phase on (A, real B) vs (A, G(A)), then a G phase with

    adversarial_weight x loss.g_loss(D(A, G(A)))   any `loss` option; the paper's is BCE
  + lambda_l1 x |G(A) - B|_1                       the paper's 100: L1 gets the low frequencies
                                                   right, the adversarial term makes them sharp

adversarial_weight=0 trains G on L1 alone (D's phase then runs nothing): the blurry baseline the
paper compares with. Pairs come from a paired folder (`dataset=aligned|paired`) or from any
dataset with `transform` making A from each image (gan_cli/data/paired.py); `direction=b2a`
learns the other way. Networks: gan_cli/models/pix2pix.py; scores: paired_eval.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from gan_cli.core.config import build, trained_by
from gan_cli.core.errors import GanCliError
from gan_cli.core.sizes import square_size
from gan_cli.data.datasets import ImageData, to_float, to_uint8
from gan_cli.data.domains import load_images
from gan_cli.data.paired import Pairs, check_direction, oriented, pairs_from_dataset
from gan_cli.data.streaming import make_sampler
from gan_cli.evaluate.metrics import load_test_split
from gan_cli.loop.distributed import SINGLE_PROCESS, Ranks
from gan_cli.tasks.adversarial import Adversary, mapped, sampling_network, setup_networks
from gan_cli.tasks.base import Drawn, Phase, Preview, Sampling, Stats, Translator, drawn_at_once, frozen, in_eval_mode
from gan_cli.tasks.paired_eval import PairedEvaluation


def load_pairs(cfg: DictConfig, transform: str, direction: str, device: torch.device) -> Pairs:
    """A paired dataset's pairs, or pairs made by `transform` from any other dataset (on `device`,
    a batch of images at a time); oriented."""
    check_direction(direction, "task.direction")
    loaded = build(cfg.dataset)
    if isinstance(loaded, Pairs):
        return oriented(loaded, direction)
    if not isinstance(loaded, ImageData):
        raise GanCliError(f"dataset={cfg.dataset.name} holds {type(loaded).__name__}{trained_by(loaded)}, not "
                          "pairs or images for task=pix2pix")
    if transform == "none":
        raise GanCliError(f"dataset={cfg.dataset.name} holds single images: task=pix2pix needs pairs: set "
                          "task.transform (mask_bottom, edges, blur, downsample, dilate, erode, invert, colorize) "
                          "or use dataset=aligned / dataset=paired")
    return pairs_from_dataset(loaded, load_test_split(cfg.dataset), transform, direction=direction,
                              seed=cfg.trainer.seed, device=device)


def build_networks(cfg: DictConfig, channels_a: int, channels_b: int) -> dict[str, nn.Module]:
    channels = {"channels_in": channels_a, "channels_out": channels_b}
    return {"generator": build(cfg.model.generator, **channels), "discriminator": build(cfg.model.discriminator,
                                                                                          **channels)}


def pair_channels(train_cfg: DictConfig) -> tuple[int, int]:
    """(channels of A, of B) of a run, from its config alone (gan-sample builds no dataset)."""
    task, channels = train_cfg.task, train_cfg.dataset.channels
    coloured = 3 if task.transform == "colorize" else channels
    return (coloured, channels) if task.direction == "a2b" else (channels, coloured)


def draw(train_cfg: DictConfig, state: Any, cfg: DictConfig, device: torch.device) -> Drawn:
    """gan-sample: translate `input` (a folder, an .npz, or `test`: grid rows input | output | target)."""
    trained = train_cfg.task.direction
    if cfg.input is None or cfg.direction != trained:
        raise GanCliError(f"this checkpoint translates {trained} (task pix2pix): give input=DIR, input=FILE.npz or "
                          f"input=test, and direction={trained} (or leave direction unset when it is a2b)")
    channels_a, channels_b = pair_channels(train_cfg)
    generator = sampling_network(build_networks(train_cfg, channels_a, channels_b)["generator"], state, "generator",
                                 cfg.checkpoint, device)
    targets: list[Tensor] = []
    if cfg.input == "test":
        pairs = load_pairs(train_cfg, train_cfg.task.transform, trained, device)
        inputs, targets = pairs.test_a[: cfg.num_samples], [pairs.test_b[: cfg.num_samples]]
        names = [f"{index:06d}.png" for index in range(inputs.shape[0])]
    else:
        inputs, names = load_images(Path(cfg.input).expanduser(), channels_a, train_cfg.dataset.image_size)
    outputs = mapped(lambda chunk: to_uint8(in_eval_mode(generator, to_float(chunk))), inputs, cfg.batch_size, device)
    shown = [inputs, outputs, *targets]
    if channels_a != channels_b:  # a grid holds one channel count: gray images shown as RGB
        shown = [images.expand(-1, 3, -1, -1) for images in shown]
    cells = torch.stack(shown, 1).flatten(0, 1)  # input, output(, target), input, output, ...
    return drawn_at_once(len(outputs), tuple(outputs.shape[1:]), lambda: (outputs, cells),
                         cfg.nrow or 4 * len(shown), names=names)


def translate(train_cfg: DictConfig, state: Any, checkpoint: str, device: torch.device) -> Translator:
    """gan-draw: G (input A -> output, in the trained direction) as one call on uint8 batches."""
    channels_a, channels_b = pair_channels(train_cfg)
    generator = sampling_network(build_networks(train_cfg, channels_a, channels_b)["generator"], state, "generator",
                                 checkpoint, device)
    return Translator(channels_a, train_cfg.dataset.image_size,
                      lambda images: to_uint8(in_eval_mode(generator, to_float(images.to(device)))).cpu())


@dataclass(frozen=True)
class Translated:
    """What D's phase hands to G's: the input, its target and G's output (None when D ran nothing)."""

    inputs: Tensor
    targets: Tensor
    outputs: Tensor | None


class Pix2Pix:
    """Networks `generator` (U-Net) and `discriminator` (PatchGAN on pairs), optimizers `g` and `d`,
    an EMA copy of G; phases D then G on the same batch of pairs."""

    stat_names = ("loss/d", "loss/g", "loss/l1", "prob/real", "prob/fake")
    sampling: ClassVar[Sampling] = Sampling(("input", "direction", "num_samples"), draw, translate)

    def __init__(self, cfg: DictConfig, device: torch.device, ranks: Ranks = SINGLE_PROCESS, *,
                 transform: str = "none", direction: str = "a2b", lambda_l1: float = 100.0,
                 adversarial_weight: float = 1.0, preview_images: int = 8):
        if lambda_l1 < 0 or adversarial_weight < 0:
            raise GanCliError(f"invalid value task.lambda_l1={lambda_l1} / task.adversarial_weight="
                              f"{adversarial_weight}: allowed are numbers >= 0")
        square_size(cfg.dataset.image_size, "task=pix2pix")  # its U-Net pads to a square power of two
        self.device, self.lambda_l1, self.adversarial_weight = device, lambda_l1, adversarial_weight
        self.pairs = load_pairs(cfg, transform, direction, device)
        self.channels_a = self.pairs.channels_a
        # A and B side by side on channels: one sampler draws aligned batches, and flips both alike (a
        # converted paired dataset is stored so, and streams when make_sampler says so)
        self.sampler = make_sampler(self.pairs.joined("train"), device, cfg.trainer.batch_size,
                                    cfg.trainer.seed + ranks.rank, cfg.dataset.hflip, ranks.rank, ranks.world_size)
        networks = build_networks(cfg, self.pairs.channels_a, self.pairs.channels_b)
        trained = setup_networks(cfg, networks, device, {"generator": self.training_inputs})
        self.networks, self.averages, self.optimizers = trained.networks, trained.averages, trained.optimizers
        self.generator, self.discriminator = self.networks["generator"], self.networks["discriminator"]
        self.adversary = Adversary(cfg)
        self.phases = (Phase("d", "d", self.d_loss, after_update=self.after_d_update), Phase("g", "g", self.g_loss))
        self.batches_per_epoch, self.batches_per_step = self.sampler.batches_per_epoch, 1
        self.images_per_step = cfg.trainer.batch_size
        count = min(preview_images, self.pairs.test_a.shape[0])
        self.preview_a, self.preview_b = (to_float(images[:count]).to(device)
                                          for images in (self.pairs.test_a, self.pairs.test_b))

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """Inputs A and targets B (B, C, H, W) in [-1, 1] of this step's pairs."""
        joined, _ = self.sampler.batch(step)
        return self.pairs.split(joined)

    def training_inputs(self, count: int, noise: torch.Generator) -> tuple[Tensor]:
        """Random training inputs from a private generator (the EMA's BatchNorm re-estimation)."""
        images = self.sampler.images  # on the device, or a streaming run's memory-mapped file (CPU)
        rows = torch.randint(images.shape[0], (count,), device=noise.device, generator=noise)
        return (to_float(self.pairs.split(images[rows.to(images.device)])[0].to(noise.device)),)

    def d_loss(self, step: int, repeat: int, handed: object) -> tuple[Tensor, Stats, Translated]:
        inputs, targets = self.batch(step)
        if self.adversarial_weight == 0:  # L1 alone: D is neither run nor changed
            zero = torch.zeros((), device=inputs.device)
            return zero.requires_grad_(), {"loss/d": zero, "prob/real": zero, "prob/fake": zero}, \
                Translated(inputs, targets, None)
        outputs = self.generator(inputs)
        critic = partial(self.discriminator, inputs)  # D sees the input beside every image it judges
        # Two forwards: D has BatchNorm, and real and fake pairs must not share batch statistics.
        real_logits, fake_logits = critic(targets), critic(outputs.detach())
        loss, d_loss, probs = self.adversary.d_loss(critic, targets, outputs.detach(), real_logits, fake_logits, step)
        return loss, {"loss/d": d_loss, **probs}, Translated(inputs, targets, outputs)

    def after_d_update(self, step: int) -> None:
        if self.adversarial_weight > 0:
            self.adversary.after_d_step(self.discriminator)

    def g_loss(self, step: int, repeat: int, handed: object) -> tuple[Tensor, Stats, None]:
        assert isinstance(handed, Translated), "the G phase follows a D phase"
        outputs = self.generator(handed.inputs) if handed.outputs is None else handed.outputs
        l1 = F.l1_loss(outputs, handed.targets)
        adversarial = torch.zeros((), device=outputs.device)
        if self.adversarial_weight > 0:
            with frozen(self.discriminator):  # D's weights get no gradient from G's phase
                adversarial = self.adversary.g_loss(self.discriminator(handed.inputs, outputs))
        total = self.adversarial_weight * adversarial + self.lambda_l1 * l1
        return total, {"loss/g": adversarial.detach(), "loss/l1": l1.detach()}, None

    def translate(self, inputs: Tensor) -> Tensor:
        """[-1, 1] inputs -> outputs, with the EMA generator in eval mode."""
        return in_eval_mode(self.averages["generator"].module, inputs)

    def preview(self) -> Preview:
        """Rows: input | output | target, on fixed test pairs."""
        rows = [self.preview_a, self.translate(self.preview_a), self.preview_b]
        if self.channels_a != self.preview_b.shape[1]:
            rows = [images.expand(-1, 3, -1, -1) for images in rows]
        return Preview(torch.cat(rows), self.preview_a.shape[0])

    def real_preview(self) -> Preview:
        """Training pairs: inputs (first row) and their targets (second row)."""
        count = self.preview_a.shape[0]
        a, b = self.pairs.split(self.sampler.images[:count])
        if a.shape[1] != b.shape[1]:
            a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
        return Preview(torch.cat([a, b]), count)

    def evaluation(self, cfg: DictConfig) -> PairedEvaluation:
        return PairedEvaluation(cfg, self.pairs, self.translate, self.device, cache_suffix(cfg))


def cache_suffix(cfg: DictConfig) -> str:
    """The feature classifier learns the target images: for pairs made from a dataset in the a2b
    direction they are the dataset's own images, so its cached classifier serves (no suffix)."""
    task = cfg.task
    return "" if task.direction == "a2b" or task.transform == "none" else f"_{task.transform}"
