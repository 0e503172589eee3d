"""`task=text2image`: say what you want to see. GAN-CLS + GAN-INT (Reed, Akata, Yan, Logeswaran,
Schiele & Lee 2016, "Generative Adversarial Text to Image Synthesis").

G maps (z, caption embedding) to an image; a matching-aware D scores (image, caption) pairs.
One step, with `loss.d_loss(real_logits, fake_logits)` of any `loss` option:

    D: real image + its caption               -> real
       G's image + that caption, and
       real image + another image's caption   -> fake (both halves of `fake_logits`: the paper's
                                                 (log(1 - s_w) + log(1 - s_f)) / 2 for BCE)
    G: loss.g_loss(D(G(z, t), t))
       + interpolation_weight x loss.g_loss(D(G(z', t_int), t_int)),   GAN-INT: t_int = beta t1 +
         (1 - beta) t2 of two captions of the batch, captions no image has, which fill the gaps
         between the training captions (the paper's beta 0.5), on the first
         interpolation_fraction of the batch (the paper's 1: all of it)

The mismatched caption is the batch's captions rolled by one (another random image's: batches are
random); a few such pairs happen to share their sentence. `prob/mismatch` is D's mean probability
that a real image with a wrong caption is real: it falls as D learns to read the text.

Captions: gan_cli/data/captions.py (a captioned folder, or made from MNIST's labels and measured
attributes); as tensors, and the frozen text encoder: text_captions.py; networks:
gan_cli/models/text2image.py; scores: text_eval.py; gan-sample (prompt grids, prompt walks):
text_sampling.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import ClassVar

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from gan_cli.components.contracts import DiversityTerm
from gan_cli.core.config import build
from gan_cli.core.errors import GanCliError
from gan_cli.data.datasets import ImageData
from gan_cli.data.streaming import make_sampler
from gan_cli.loop.distributed import SINGLE_PROCESS, Ranks
from gan_cli.models.text import tokenize
from gan_cli.sampling.generate import draw_latents, z_dim
from gan_cli.tasks import text_sampling
from gan_cli.tasks.adversarial import Adversary, setup_networks
from gan_cli.tasks.base import Phase, Preview, Sampling, Stats, frozen, in_eval_mode
from gan_cli.tasks.text_captions import CaptionSettings, caption_table, trained_encoder
from gan_cli.tasks.text_eval import TextEvaluation


@dataclass(frozen=True)
class Fakes:
    """What D's phase hands to G's: G's images (graph into G kept), their latents and captions."""

    images: Tensor
    z: Tensor
    text: Tensor


class TextToImage:
    """Networks `generator`, `discriminator` (matching-aware) and `text_encoder` (frozen: in no
    optimizer), optimizers `g` and `d`, an EMA copy of G; phases D then G on one batch."""

    stat_names = ("loss/d", "loss/g", "loss/int", "prob/real", "prob/fake", "prob/mismatch")
    sampling: ClassVar[Sampling] = Sampling(text_sampling.OPTIONS, text_sampling.draw)

    def __init__(self, cfg: DictConfig, device: torch.device, ranks: Ranks = SINGLE_PROCESS, *,
                 class_words: str = "digits", captions_per_image: int = 4, drop_attribute: float = 0.3,
                 slant_threshold: float = 0.15, max_words: int = 12, text_width: int = 128, text_dim: int = 128,
                 text_encoder_steps: int = 400, interpolation_weight: float = 1.0, interpolation_beta: float = 0.5,
                 interpolation_fraction: float = 1.0, prompts: Sequence[str] = (), preview_per_prompt: int = 8):
        for key, value, low in (("captions_per_image", captions_per_image, 1), ("max_words", max_words, 1),
                                ("text_encoder_steps", text_encoder_steps, 0), ("text_width", text_width, 1),
                                ("text_dim", text_dim, 1), ("preview_per_prompt", preview_per_prompt, 1),
                                ("interpolation_weight", interpolation_weight, 0)):
            if value < low:
                raise GanCliError(f"invalid value task.{key}={value}: allowed is a number >= {low}")
        for key, value in (("drop_attribute", drop_attribute), ("interpolation_beta", interpolation_beta)):
            if not 0 <= value <= 1:
                raise GanCliError(f"invalid value task.{key}={value}: allowed is a number in [0, 1]")
        if not 0 < interpolation_fraction <= 1:
            raise GanCliError(f"invalid value task.interpolation_fraction={interpolation_fraction}: allowed is a "
                              "number in (0, 1]")
        self.device, self.max_words = device, max_words
        self.interpolation_weight, self.interpolation_beta = interpolation_weight, interpolation_beta
        # GAN-INT's pass is a second G forward and backward through D: on a share of the batch it costs that share
        self.interpolation_count = max(round(cfg.trainer.batch_size * interpolation_fraction), 2)  # BatchNorm: >= 2
        data = build(cfg.dataset, expect=ImageData)
        settings = CaptionSettings(class_words, captions_per_image, drop_attribute, slant_threshold, max_words,
                                   cfg.trainer.seed)
        self.data, self.captions = data, caption_table(data, settings)
        encoder = trained_encoder(cfg, self.captions, data.images, text_width, text_dim, text_encoder_steps, device)
        self.caption_tokens = self.captions.image_tokens().to(device)  # (N, K, L)
        self.caption_counts = self.captions.counts.to(device)  # (N,)
        # The sampler's "labels" are row numbers: a batch's rows pick its captions (and nothing else reads
        # them). `replace` keeps the dataset's kind, so a converted one streams when make_sampler says so.
        rows = replace(data, labels=torch.arange(data.images.shape[0]))
        self.sampler = make_sampler(rows, device, cfg.trainer.batch_size, cfg.trainer.seed + ranks.rank,
                                    cfg.dataset.hflip, ranks.rank, ranks.world_size)
        networks = {"generator": build(cfg.model.generator, text_dim=text_dim),
                    "discriminator": build(cfg.model.discriminator, text_dim=text_dim), "text_encoder": encoder}
        trained = setup_networks(cfg, networks, device, {"generator": self.latent_inputs})
        self.networks, self.averages, self.optimizers = trained.networks, trained.averages, trained.optimizers
        self.generator, self.discriminator = self.networks["generator"], self.networks["discriminator"]
        self.text_encoder: nn.Module = self.networks["text_encoder"]
        self.z_dim = z_dim(self.generator)
        self.adversary = Adversary(cfg)
        self.diversity = build(cfg.diversity, expect=DiversityTerm)
        self.phases = (Phase("d", "d", self.d_loss, after_update=lambda step: self.adversary.after_d_step(
            self.discriminator)), Phase("g", "g", self.g_loss))
        self.batches_per_epoch, self.batches_per_step = self.sampler.batches_per_epoch, 1
        self.images_per_step = cfg.trainer.batch_size
        self.prompts = list(prompts) or self.captions.sentences[:8]
        prompt_tokens = tokenize(self.prompts, self.captions.vocabulary, max_words, "task.prompts entry")
        self.preview_text = self.encode(prompt_tokens.to(device)).repeat_interleave(preview_per_prompt, 0)
        self.preview_z = draw_latents(preview_per_prompt, self.z_dim, cfg.trainer.seed).to(device).repeat(
            len(self.prompts), 1)
        self.preview_per_prompt = preview_per_prompt

    @torch.no_grad()
    def encode(self, tokens: Tensor) -> Tensor:
        """(B, L) token ids -> (B, text_dim) caption embeddings of the frozen encoder."""
        return self.text_encoder(tokens)

    def captions_of(self, rows: Tensor, noise: torch.Generator | None = None) -> Tensor:
        """One caption drawn per image `rows` (B,) -> its embedding (B, text_dim)."""
        draws = torch.rand(rows.shape[0], device=rows.device, generator=noise)
        picks = (draws * self.caption_counts[rows]).long()
        return self.encode(self.caption_tokens[rows, picks])

    def latent_inputs(self, count: int, noise: torch.Generator) -> tuple[Tensor, Tensor]:
        """Random G inputs from a private generator (the EMA's BatchNorm re-estimation)."""
        z = torch.randn(count, self.z_dim, device=noise.device, generator=noise)
        rows = torch.randint(self.caption_tokens.shape[0], (count,), device=noise.device, generator=noise)
        return z, self.captions_of(rows, noise)  # the noise lives on the networks' device

    def d_loss(self, step: int, repeat: int, handed: object) -> tuple[Tensor, Stats, Fakes]:
        real, rows = self.sampler.batch(step)  # (B, C, H, W) in [-1, 1], (B,) row numbers
        text = self.captions_of(rows)  # (B, text_dim)
        wrong = text.roll(1, 0)  # another image's caption
        z = torch.randn(real.shape[0], self.z_dim, device=real.device)
        fake = self.generator(z, text)
        critic = partial(self.discriminator, text=text)
        # Separate forwards: D has BatchNorm, and real, fake and mismatched pairs must not share statistics
        real_logits, fake_logits = critic(real), critic(fake.detach())
        wrong_logits = self.discriminator(real, wrong)
        loss, d_loss, _ = self.adversary.d_loss(critic, real, fake.detach(), real_logits,
                                                torch.cat([fake_logits, wrong_logits]), step)
        stats = {"loss/d": d_loss, "prob/real": torch.sigmoid(real_logits.detach()).mean(),
                 "prob/fake": torch.sigmoid(fake_logits.detach()).mean(),
                 "prob/mismatch": torch.sigmoid(wrong_logits.detach()).mean()}
        return loss, stats, Fakes(fake, z, text)

    def g_loss(self, step: int, repeat: int, handed: object) -> tuple[Tensor, Stats, None]:
        assert isinstance(handed, Fakes), "the G phase follows a D phase"
        with frozen(self.discriminator):  # D's weights get no gradient from G's phase
            g_loss = self.adversary.g_loss(self.discriminator(handed.images, handed.text))
            interpolated = torch.zeros((), device=g_loss.device)
            if self.interpolation_weight > 0:  # GAN-INT: captions between the batch's captions
                beta, count = self.interpolation_beta, self.interpolation_count
                mixed = beta * handed.text[:count] + (1 - beta) * handed.text.roll(1, 0)[:count]
                z = torch.randn_like(handed.z[:count])
                interpolated = self.adversary.g_loss(self.discriminator(self.generator(z, mixed), mixed))
        total = g_loss + self.interpolation_weight * interpolated
        diversity = self.diversity.penalty(self.generator, handed.images, handed.z, handed.text, step)
        total = total if diversity is None else total + diversity
        return total, {"loss/g": g_loss.detach(), "loss/int": interpolated.detach()}, None

    def sample(self, z: Tensor, text: Tensor) -> Tensor:
        """[-1, 1] images of the EMA generator in eval mode."""
        return in_eval_mode(self.averages["generator"].module, z, text)

    def preview(self) -> Preview:
        """One row per prompt (`task.prompts`), the same latents in every row."""
        return Preview(self.sample(self.preview_z, self.preview_text), self.preview_per_prompt, rows=self.prompts)

    def real_preview(self) -> Preview:
        count = min(len(self.preview_z), self.sampler.images.shape[0])
        return Preview(self.sampler.images[:count], self.preview_per_prompt)

    def evaluation(self, cfg: DictConfig) -> TextEvaluation:
        return TextEvaluation(cfg, self.data, self.captions, self.encode, self.sample, self.device)
