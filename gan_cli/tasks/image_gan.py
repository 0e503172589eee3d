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

Sampling G (latents, labels, eval mode, uint8) is gan_cli/sampling/generate.py: the preview, the
evaluation and gan-sample (image_sampling.py) all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.utils import parametrize

from gan_cli.components.contracts import Augmentation, DiversityTerm
from gan_cli.components.ema import GeneratorEMA
from gan_cli.core.config import build
from gan_cli.core.errors import GanCliError
from gan_cli.data.datasets import ImageData
from gan_cli.data.streaming import make_sampler
from gan_cli.evaluate.metrics import Evaluator
from gan_cli.loop.distributed import SINGLE_PROCESS, Ranks
from gan_cli.models.layers import MinibatchStd
from gan_cli.sampling.generate import class_count, draw_latents, generate, preview_latents, z_dim
from gan_cli.tasks import image_sampling
from gan_cli.tasks.adversarial import Adversary, setup_networks
from gan_cli.tasks.base import Phase, Preview, Sampling, Stats, frozen, in_eval_mode


def scores_each_image_alone(discriminator: nn.Module) -> bool:
    """True when D's logit for an image depends on that image alone: no BatchNorm or minibatch
    std (batch statistics) and no spectral norm (one power iteration per forward call, so the number of
    calls is part of the math)."""
    return not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, MinibatchStd)) or parametrize.is_parametrized(m)
                   for m in discriminator.modules())


@dataclass(frozen=True)
class Fakes:
    """What a D update hands to the next phase: its fake batch (graph into G kept), latents, labels."""

    images: Tensor
    z: Tensor
    labels: Tensor | None


class ImageGan:
    """z (+ label) -> image. Networks `generator` and `discriminator`, optimizers `g` and `d`,
    an EMA copy of the generator; phases D (`d_steps` updates, each on a new real batch) then G."""

    stat_names = ("loss/d", "loss/g", "prob/real", "prob/fake")
    sampling: ClassVar[Sampling] = Sampling(image_sampling.OPTIONS, image_sampling.draw)

    def __init__(self, cfg: DictConfig, device: torch.device, ranks: Ranks = SINGLE_PROCESS, *, d_steps: int = 1):
        if d_steps < 1:
            raise GanCliError(f"invalid value task.d_steps={d_steps}: allowed is an integer >= 1 (D updates per step)")
        self.cfg = cfg
        self.data = build(cfg.dataset, expect=ImageData)
        if cfg.model.conditional and self.data.num_classes != cfg.dataset.num_classes:
            raise GanCliError(f"dataset.num_classes={cfg.dataset.num_classes} but the data has "
                              f"{self.data.num_classes} classes: set dataset.num_classes={self.data.num_classes} "
                              "for a conditional model")
        self.sampler = make_sampler(self.data, device, cfg.trainer.batch_size, cfg.trainer.seed + ranks.rank,
                                    cfg.dataset.hflip, ranks.rank, ranks.world_size)
        trained = setup_networks(cfg, image_sampling.build_networks(cfg), device, {"generator": self.latent_inputs})
        self.networks, self.averages, self.optimizers = trained.networks, trained.averages, trained.optimizers
        self.generator, self.discriminator = self.networks["generator"], self.networks["discriminator"]
        self.ema: GeneratorEMA = self.averages["generator"]
        self.adversary = Adversary(cfg)
        self.augment = build(cfg.augment, expect=Augmentation)
        self.diversity = build(cfg.diversity, expect=DiversityTerm)
        self.d_steps = d_steps
        clip = lambda step: self.adversary.after_d_step(self.discriminator)  # noqa: E731  WGAN's clipping
        self.phases = (Phase("d", "d", self.d_loss, d_steps, clip), Phase("g", "g", self.g_loss))
        self.batches_per_epoch, self.batches_per_step = self.sampler.batches_per_epoch, d_steps
        self.images_per_step = cfg.trainer.batch_size * d_steps
        self.joint_d_forward = scores_each_image_alone(self.discriminator)
        z, labels, self.preview_nrow = preview_latents(self.generator, cfg.log.num_samples, cfg.trainer.seed)
        self.preview_z, self.preview_labels = z.to(device), None if labels is None else labels.to(device)

    def latent_inputs(self, count: int, noise: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """Random G inputs from a private generator (the EMA's BatchNorm re-estimation)."""
        z = torch.randn(count, z_dim(self.generator), device=noise.device, generator=noise)
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
        real_logits, fake_logits = self.discriminator(torch.cat([real, fake]), labels=both_labels).split(real.shape[0])
        return real_logits, fake_logits

    def d_loss(self, step: int, repeat: int, handed: object) -> tuple[Tensor, Stats, Fakes]:
        d_step = step * self.d_steps + repeat
        real, real_labels = self.sampler.batch(d_step)  # (B, C, H, W) in [-1, 1], (B,)
        labels = real_labels if class_count(self.generator) else None  # fakes take the real batch's labels
        z = torch.randn(real.shape[0], z_dim(self.generator), device=real.device)
        fake = self.generator(z, labels)
        real_seen, fake_seen = self.augment(real), self.augment(fake.detach())
        real_logits, fake_logits = self.score_real_and_fake(real_seen, fake_seen, labels)
        loss, d_loss, probs = self.adversary.d_loss(partial(self.discriminator, labels=labels), real_seen, fake_seen,
                                                    real_logits, fake_logits, d_step)
        return loss, {"loss/d": d_loss, **probs}, Fakes(fake, z, labels)

    def g_loss(self, step: int, repeat: int, handed: object) -> tuple[Tensor, Stats, None]:
        assert isinstance(handed, Fakes), "the G phase follows a D phase"
        with frozen(self.discriminator):  # D's parameter gradients are not needed for G's update
            g_loss = self.adversary.g_loss(self.discriminator(self.augment(handed.images), labels=handed.labels))
        diversity = self.diversity.penalty(self.generator, handed.images, handed.z, handed.labels, step)
        return g_loss if diversity is None else g_loss + diversity, {"loss/g": g_loss.detach()}, None

    def preview(self) -> Preview:
        images = in_eval_mode(self.ema.module, self.preview_z, self.preview_labels)
        return Preview(images, self.preview_nrow)

    def real_preview(self) -> Preview:
        return Preview(self.sampler.images[: len(self.preview_z)], self.preview_nrow)

    def evaluation(self, cfg: DictConfig) -> SampledEvaluation:
        return SampledEvaluation(Evaluator(cfg, self.data, self.sampler.device), self.ema, cfg.eval)


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
        z = draw_latents(count, z_dim(generator), 0, chunk=batch)
        return self.evaluator.evaluate(lambda: generate(generator, z, labels, batch), step)
