"""`task=image_gan`: G maps z (and a label, when conditional) to an image; D scores images.

Vanilla, DCGAN, SNGAN, conditional and Wasserstein GANs are all this task with other `model`,
`loss`, `reg`, `augment` and `diversity` options. One step is `d_steps` D updates, each on a new
real batch and a detached fake batch, then one G update on the last fake batch (its graph into G
is still there, so G runs once per step). The components have uniform hooks, so nothing here
branches on which were chosen:
  loss.d_loss / g_loss on logits; loss.penalty and reg.penalty add a term to D's loss (WGAN-GP,
  R1) or return None; loss.after_d_step(D) runs after D's update (WGAN clipping); augment(x) is
  applied to every image D sees, real and fake (DiffAugment; identity when off);
  diversity.penalty(G, fake, z, labels, step) adds a term to G's loss (mode seeking, path
  length) or returns None.

Sampling G (latents, labels, eval mode, uint8) is `draw_latents` + `generate`: the preview, the
evaluation and gan-sample all go through them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.utils import parametrize

from gan_cli.components.ema import GeneratorEMA, InputSampler
from gan_cli.core.config import build
from gan_cli.core.errors import GanCliError
from gan_cli.data.datasets import DeviceSampler, ImageData, to_uint8
from gan_cli.evaluate.metrics import Evaluator
from gan_cli.loop import distributed
from gan_cli.loop.distributed import SINGLE_PROCESS, Ranks
from gan_cli.models.layers import MinibatchStd
from gan_cli.tasks.base import Drawn, Phase, Preview, Stats, frozen, in_eval_mode


def make_optimizer(node: DictConfig, module: nn.Module) -> torch.optim.Optimizer:
    """Fused Adam where the class and device have it: one kernel over all tensors per step
    instead of ~10 ops per tensor, the same update. A `fused` key in the config wins."""
    make, params = build(node), list(module.parameters())
    if "fused" not in node:
        try:
            return make(params, fused=True)
        except (TypeError, RuntimeError, ValueError):  # no fused kernel for this class or device
            pass
    return make(params)


def prepare(network: nn.Module, device: torch.device) -> nn.Module:
    """On the device, in NHWC where that helps: oneDNN (CPU) and cuDNN skip their layout reorders,
    the same math; DCGAN at 28 px trains ~1.3x faster on CPU. Only 4-D weights change."""
    network = network.to(device)
    return network.to(memory_format=torch.channels_last) if device.type in ("cpu", "cuda") else network


@dataclass
class Pair:
    """A generator and a discriminator ready to train (the tasks with one of each share this)."""

    generator: nn.Module
    discriminator: nn.Module
    ema: GeneratorEMA
    optimizers: dict[str, torch.optim.Optimizer]  # "g", "d"

    @property
    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    @property
    def averages(self) -> dict[str, GeneratorEMA]:
        return {"generator": self.ema}


def setup_pair(cfg: DictConfig, networks: Mapping[str, nn.Module], device: torch.device,
               inputs: InputSampler) -> Pair:
    """`networks["generator"]` and `["discriminator"]` on the device, equal on every rank, G's EMA
    copy (drawing `inputs` to re-estimate BatchNorm), compiled when asked, and their optimizers."""
    generator, discriminator = (prepare(networks[k], device) for k in ("generator", "discriminator"))
    distributed.broadcast_parameters(generator, discriminator)
    # From the uncompiled G: the copy must not share compiled code.
    ema = build(cfg.ema, generator, inputs)
    if cfg.trainer.compile:  # in place, so state_dict keys and attributes (G.z_dim) stay unchanged
        generator.compile()
        discriminator.compile()
    return Pair(generator, discriminator, ema,
                {"g": make_optimizer(cfg.optim.g, generator), "d": make_optimizer(cfg.optim.d, discriminator)})


def scores_each_image_alone(discriminator: nn.Module) -> bool:
    """True when D's logit for an image depends on that image alone: no BatchNorm or minibatch
    std (batch statistics) and no spectral norm (one power iteration per forward call, so the number of
    calls is part of the math)."""
    return not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, MinibatchStd)) or parametrize.is_parametrized(m)
                   for m in discriminator.modules())


def class_count(generator: nn.Module) -> int:
    """The classes G is conditioned on (0 = unconditional): the one place that asks."""
    return int(getattr(generator, "num_classes", 0) or 0)


def draw_latents(count: int, z_dim: int, seed: int, chunk: int | None = None) -> Tensor:
    """(count, z_dim) normal latents on the CPU from `seed` alone, drawn `chunk` rows at a time
    (None: all at once, so they do not depend on any batch size). Evaluation draws in chunks of
    eval.batch_size, as it always has, so its numbers stay comparable across versions."""
    noise = torch.Generator().manual_seed(seed)
    chunk = chunk or count
    return torch.cat([torch.randn(min(chunk, count - start), z_dim, generator=noise)
                      for start in range(0, count, chunk)])


@torch.no_grad()
def generate(generator: nn.Module, z: Tensor, labels: Tensor | None, batch_size: int,
             truncation: float = 1.0) -> Tensor:
    """uint8 images (N, C, H, W) on G's device: G in eval mode, `batch_size` latents at a time;
    `truncation` (psi) reaches G only when set, as only a StyleGAN takes it."""
    device = next(generator.parameters()).device
    label_parts = labels.split(batch_size) if labels is not None else [None] * len(z.split(batch_size))
    psi = () if truncation == 1.0 else (truncation,)
    return torch.cat([to_uint8(in_eval_mode(generator, zs.to(device), None if ys is None else ys.to(device), *psi))
                      for zs, ys in zip(z.split(batch_size), label_parts, strict=True)])


def preview_latents(generator: nn.Module, count: int, seed: int) -> tuple[Tensor, Tensor | None, int]:
    """The sample grid's latents (and labels: one row per class when conditional) and its row width."""
    classes = class_count(generator)
    if not classes:
        return draw_latents(count, generator.z_dim, seed), None, max(int(count**0.5), 1)
    per_class = max(count // classes, 1)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return draw_latents(len(labels), generator.z_dim, seed), labels, per_class


def build_networks(cfg: DictConfig) -> dict[str, nn.Module]:
    """The networks a checkpoint of this task holds, by name (gan-sample rebuilds G alone)."""
    return {"generator": build(cfg.model.generator), "discriminator": build(cfg.model.discriminator)}


class ImageGan:
    """z (+ label) -> image. Networks `generator` and `discriminator`, optimizers `g` and `d`,
    an EMA copy of the generator; phases D (`trainer.d_steps` updates) then G."""

    stat_names = ("loss/d", "loss/g", "prob/real", "prob/fake")

    def __init__(self, cfg: DictConfig, device: torch.device, ranks: Ranks = SINGLE_PROCESS):
        self.cfg = cfg
        self.data: ImageData = build(cfg.dataset)
        if cfg.model.conditional and self.data.num_classes != cfg.dataset.num_classes:
            raise GanCliError(f"dataset.num_classes={cfg.dataset.num_classes} but the data has "
                              f"{self.data.num_classes} classes: set dataset.num_classes={self.data.num_classes} "
                              "for a conditional model")
        self.sampler = DeviceSampler(self.data, device, cfg.trainer.batch_size, cfg.trainer.seed + ranks.rank,
                                     cfg.dataset.hflip, ranks.rank, ranks.world_size)
        pair = setup_pair(cfg, build_networks(cfg), device, self.latent_inputs)
        self.generator, self.discriminator, self.ema = pair.generator, pair.discriminator, pair.ema
        self.networks, self.averages, self.optimizers = pair.networks, pair.averages, pair.optimizers
        self.loss_fn, self.reg = build(cfg.loss), build(cfg.reg)
        self.augment, self.diversity = build(cfg.augment), build(cfg.diversity)
        self.d_steps = cfg.trainer.d_steps
        self.phases = (Phase("d", "d", self.d_loss, self.d_steps, partial(self.loss_fn.after_d_step,
                                                                           self.discriminator)),
                       Phase("g", "g", self.g_loss))
        self.batches_per_epoch, self.batches_per_step = self.sampler.batches_per_epoch, self.d_steps
        self.images_per_step = cfg.trainer.batch_size * self.d_steps
        self.joint_d_forward = scores_each_image_alone(self.discriminator)
        z, labels, self.preview_nrow = preview_latents(self.generator, cfg.log.num_samples, cfg.trainer.seed)
        self.preview_z, self.preview_labels = z.to(device), None if labels is None else labels.to(device)
        self._last: tuple[Tensor, Tensor, Tensor | None] | None = None  # the last D update's fakes, for G's

    def latent_inputs(self, count: int, noise: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """Random G inputs from a private generator (the EMA's BatchNorm re-estimation)."""
        z = torch.randn(count, self.generator.z_dim, device=noise.device, generator=noise)
        classes = class_count(self.generator)
        return z, torch.randint(classes, (count,), device=noise.device, generator=noise) if classes else None

    def score_real_and_fake(self, real: Tensor, fake: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """D's logits on the real and the fake batch. When D scores each image alone, one forward
        over both batches is the same math as two, with half the kernel launches and GEMMs twice as
        tall (MLP GAN on a 2-core CPU: 1.12x img/s). With BatchNorm in D it would not be: real and
        fake would share batch statistics."""
        if not self.joint_d_forward:
            return self.discriminator(real, labels=labels), self.discriminator(fake, labels=labels)
        both_labels = None if labels is None else torch.cat([labels, labels])
        return self.discriminator(torch.cat([real, fake]), labels=both_labels).split(real.shape[0])

    def d_loss(self, step: int, repeat: int) -> tuple[Tensor, Stats]:
        d_step = step * self.d_steps + repeat
        real, labels = self.sampler.batch(d_step)  # (B, C, H, W) in [-1, 1], (B,)
        labels = labels if class_count(self.generator) else None  # fakes take the real batch's labels
        z = torch.randn(real.shape[0], self.generator.z_dim, device=real.device)
        critic = partial(self.discriminator, labels=labels)
        fake = self.generator(z, labels)
        real_seen, fake_seen = self.augment(real), self.augment(fake.detach())
        real_logits, fake_logits = self.score_real_and_fake(real_seen, fake_seen, labels)
        d_loss = self.loss_fn.d_loss(real_logits, fake_logits)
        penalties = [self.loss_fn.penalty(critic, real_seen, fake_seen, d_step),
                     self.reg.penalty(critic, real_seen, fake_seen, d_step)]
        self._last = (fake, z, labels)
        probs = {"prob/real": torch.sigmoid(real_logits.detach()).mean(),
                 "prob/fake": torch.sigmoid(fake_logits.detach()).mean()}
        return d_loss + sum(p for p in penalties if p is not None), {"loss/d": d_loss.detach(), **probs}

    def g_loss(self, step: int, repeat: int) -> tuple[Tensor, Stats]:
        assert self._last is not None, "the G phase follows a D phase"
        fake, z, labels = self._last
        with frozen(self.discriminator):  # D's parameter gradients are not needed for G's update
            g_loss = self.loss_fn.g_loss(self.discriminator(self.augment(fake), labels=labels))
        diversity = self.diversity.penalty(self.generator, fake, z, labels, step)
        self._last = None
        return g_loss if diversity is None else g_loss + diversity, {"loss/g": g_loss.detach()}

    def preview(self) -> Preview:
        images = in_eval_mode(self.ema.module, self.preview_z, self.preview_labels)
        return Preview(images, self.preview_nrow)

    def real_preview(self) -> Preview:
        return Preview(self.sampler.images[: len(self.preview_z)], self.preview_nrow)

    def evaluation(self, cfg: DictConfig) -> SampledEvaluation:
        return SampledEvaluation(Evaluator(cfg, self.data, self.sampler.device), self.ema, cfg.eval)

    sample_options = ("num_samples", "seed", "seeds", "truncation", "class", "interpolate", "fps", "mix", "mix_seeds")

    @classmethod
    def draw(cls, train_cfg: DictConfig, state: Mapping[str, Any], cfg: DictConfig, device: torch.device) -> Drawn:
        from gan_cli.tasks.image_sampling import draw  # it builds on this module's generate()

        return draw(train_cfg, state, cfg, device)


class SampledEvaluation:
    """Metrics of `eval.num_samples` images of the EMA generator, from fixed latents (seed 0), so
    evaluations compare G only; a conditional G gets labels cycling through every class."""

    def __init__(self, evaluator: Evaluator, ema: GeneratorEMA, settings: DictConfig):
        self.evaluator, self.ema, self.settings = evaluator, ema, settings
        self.primary = evaluator.primary_metric
        self.baseline: dict[str, float] = {}  # samples from noise have no do-nothing counterpart

    def evaluate(self, step: int) -> dict[str, float]:
        generator = self.ema.module
        count, batch = self.settings.num_samples, self.settings.batch_size
        classes = class_count(generator)
        labels = torch.arange(count) % classes if classes else None
        z = draw_latents(count, generator.z_dim, 0, chunk=batch)
        return self.evaluator.evaluate(lambda: generate(generator, z, labels, batch), step)
