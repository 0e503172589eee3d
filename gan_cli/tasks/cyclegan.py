"""`task=cyclegan`: unpaired image-to-image translation (Zhu, Park, Isola & Efros 2017).

Two generators, G_ab: A -> B and G_ba: B -> A, and two discriminators, D_a (real A vs G_ba's fakes)
and D_b. One step, as in the authors' code: a G phase on a batch of each domain,
    adversarial  loss.g_loss(D_b(G_ab(a))) + loss.g_loss(D_a(G_ba(b)))
    cycle        |G_ba(G_ab(a)) - a|_1 + |G_ab(G_ba(b)) - b|_1                   x lambda_cycle
    identity     |G_ab(b) - b|_1 + |G_ba(a) - a|_1     x lambda_identity x lambda_cycle
then a D phase on the same real batches and fakes drawn from a history of 50 (image_pool.py).
The cycle term is what makes unpaired data enough: a translation must keep what is needed to go
back. The identity term keeps colours and content when the input already looks like the target.
LSGAN loss, Adam 2e-4 (0.5, 0.999) and lr_schedule=linear_decay are the paper's (mnist_thicken,
cyclegan_folder presets). Data: gan_cli/data/domains.py; networks: gan_cli/models/cyclegan.py.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from gan_cli.data.domains import Domains, from_dataset, load_images
from gan_cli.data.image_pool import ImagePool
from gan_cli.data.streaming import make_sampler
from gan_cli.evaluate.metrics import load_test_split
from gan_cli.loop.distributed import SINGLE_PROCESS, Ranks
from gan_cli.tasks.adversarial import Adversary, mapped, sampling_network, setup_networks
from gan_cli.tasks.base import Drawn, Phase, Preview, Sampling, Stats, Translator, drawn_at_once, frozen, in_eval_mode
from gan_cli.tasks.translation_eval import TranslationEvaluation

DIRECTIONS = {"a2b": ("g_ab", "a"), "b2a": ("g_ba", "b")}  # direction -> (generator, source domain)


def load_domains(cfg: DictConfig, domain_a: str, domain_b: str) -> Domains:
    """`dataset=unpaired` (a trainA/trainB folder) and `dataset=converted` of a gan-data
    layout=unpaired folder give Domains; any other dataset is split."""
    loaded = build(cfg.dataset)
    if isinstance(loaded, Domains):
        return loaded
    if not isinstance(loaded, ImageData):
        raise GanCliError(f"dataset={cfg.dataset.name} holds {type(loaded).__name__}{trained_by(loaded)}: "
                          "task=cyclegan needs two unpaired domains or one dataset of images to split")
    return from_dataset(loaded, load_test_split(cfg.dataset), domain_a, domain_b, cfg.trainer.seed)


def build_networks(cfg: DictConfig, channels: int) -> dict[str, nn.Module]:
    make_g = partial(build, cfg.model.generator, in_channels=channels, out_channels=channels)
    make_d = partial(build, cfg.model.discriminator, channels=channels)
    return {"g_ab": make_g(), "g_ba": make_g(), "d_a": make_d(), "d_b": make_d()}


def domain_channels(cfg: DictConfig, domain_a: str, domain_b: str) -> int:
    return 3 if "colorize" in (domain_a, domain_b) else cfg.dataset.channels


def draw(train_cfg: DictConfig, state: Mapping[str, Any], cfg: DictConfig, device: torch.device) -> Drawn:
    """gan-sample: translate `input` (a folder, an .npz, or `test`) in `direction`."""
    if cfg.input is None:
        raise GanCliError("this checkpoint translates images (task cyclegan): give input=DIR, input=FILE.npz or "
                          "input=test, and direction=a2b|b2a")
    task_cfg = train_cfg.task
    channels = domain_channels(train_cfg, task_cfg.domain_a, task_cfg.domain_b)
    name, source = DIRECTIONS[cfg.direction]
    generator = sampling_network(build_networks(train_cfg, channels)[name], state, name, cfg.checkpoint, device)
    if cfg.input == "test":
        domains = load_domains(train_cfg, task_cfg.domain_a, task_cfg.domain_b)
        inputs = getattr(domains, f"test_{source}").images[: cfg.num_samples]
        names = [f"{index:06d}.png" for index in range(inputs.shape[0])]
    else:
        inputs, names = load_images(Path(cfg.input).expanduser(), channels, train_cfg.dataset.image_size)
    outputs = mapped(lambda chunk: to_uint8(in_eval_mode(generator, to_float(chunk))), inputs, cfg.batch_size, device)
    pairs = torch.stack([inputs, outputs], 1).flatten(0, 1)  # input, output, input, output, ...
    return drawn_at_once(len(outputs), tuple(outputs.shape[1:]), lambda: (outputs, pairs), cfg.nrow or 8, names=names)


def translate(train_cfg: DictConfig, state: Mapping[str, Any], checkpoint: str, device: torch.device) -> Translator:
    """gan-draw: G_ab (domain A -> B) as one call on uint8 batches."""
    task_cfg = train_cfg.task
    channels = domain_channels(train_cfg, task_cfg.domain_a, task_cfg.domain_b)
    generator = sampling_network(build_networks(train_cfg, channels)["g_ab"], state, "g_ab", checkpoint, device)
    return Translator(channels, train_cfg.dataset.image_size,
                      lambda images: to_uint8(in_eval_mode(generator, to_float(images.to(device)))).cpu())


@dataclass(frozen=True)
class Translated:
    """What G's phase hands to D's: this step's real batches and G's fakes (detached), by domain."""

    real: dict[str, Tensor]
    fake: dict[str, Tensor]


class CycleGan:
    stat_names = ("loss/g", "loss/cycle", "loss/identity", "loss/d_a", "loss/d_b", "prob/real", "prob/fake")
    # num_samples: with input=test
    sampling: ClassVar[Sampling] = Sampling(("input", "direction", "num_samples"), draw, translate)

    def __init__(self, cfg: DictConfig, device: torch.device, ranks: Ranks = SINGLE_PROCESS, *,
                 lambda_cycle: float = 10.0, lambda_identity: float = 0.5, pool_size: int = 50,
                 domain_a: str = "none", domain_b: str = "none", preview_images: int = 8):
        if lambda_cycle < 0 or lambda_identity < 0 or pool_size < 0:
            raise GanCliError("invalid task.lambda_cycle / task.lambda_identity / task.pool_size: allowed are >= 0")
        square_size(cfg.dataset.image_size, "task=cyclegan")
        self.cfg, self.device = cfg, device
        self.lambda_cycle, self.lambda_identity = lambda_cycle, lambda_identity
        self.domains = load_domains(cfg, domain_a, domain_b)
        batch, seed = cfg.trainer.batch_size, cfg.trainer.seed + ranks.rank
        # each domain in memory, or streamed from its converted folder (gan-data layout=unpaired)
        self.samplers = {d: make_sampler(data, device, batch, seed * 2 + i, cfg.dataset.hflip, ranks.rank,
                                         ranks.world_size)
                         for i, (d, data) in enumerate((("a", self.domains.train_a), ("b", self.domains.train_b)))}
        channels = self.domains.train_a.images.shape[1]
        # InstanceNorm has no running statistics: the EMA copies need no input sampler
        trained = setup_networks(cfg, build_networks(cfg, channels), device, {"g_ab": None, "g_ba": None},
                                 {"g": ("g_ab", "g_ba"), "d": ("d_a", "d_b")})
        nets, self.averages, self.optimizers = trained.networks, trained.averages, trained.optimizers
        self.g_ab, self.g_ba, self.d_a, self.d_b = nets["g_ab"], nets["g_ba"], nets["d_a"], nets["d_b"]
        self.pools = {"a": ImagePool(pool_size).to(device), "b": ImagePool(pool_size).to(device)}
        self.networks = {**nets, "pool_a": self.pools["a"], "pool_b": self.pools["b"]}
        self.adversary = Adversary(cfg)
        self.phases = (Phase("g", "g", self.g_loss),
                       Phase("d", "d", self.d_loss, after_update=self.after_d_update))
        self.batches_per_epoch = max(s.batches_per_epoch for s in self.samplers.values())
        self.batches_per_step, self.images_per_step = 1, 2 * batch
        count = min(preview_images, self.domains.test_a.images.shape[0], self.domains.test_b.images.shape[0])
        self.preview_a, self.preview_b = (to_float(d.images[:count]).to(device)
                                          for d in (self.domains.test_a, self.domains.test_b))

    def g_loss(self, step: int, repeat: int, handed: object) -> tuple[Tensor, Stats, Translated]:
        real_a, _ = self.samplers["a"].batch(step)  # (B, C, H, W) in [-1, 1]
        real_b, _ = self.samplers["b"].batch(step)
        fake_b, fake_a = self.g_ab(real_a), self.g_ba(real_b)
        with frozen(self.d_a, self.d_b):  # G's phase reads D; D's weights get no gradient here
            adversarial = self.adversary.g_loss(self.d_b(fake_b)) + self.adversary.g_loss(self.d_a(fake_a))
        cycle = F.l1_loss(self.g_ba(fake_b), real_a) + F.l1_loss(self.g_ab(fake_a), real_b)
        identity = torch.zeros((), device=real_a.device)
        if self.lambda_identity > 0:
            identity = F.l1_loss(self.g_ab(real_b), real_b) + F.l1_loss(self.g_ba(real_a), real_a)
        total = adversarial + self.lambda_cycle * (cycle + self.lambda_identity * identity)
        stats = {"loss/g": adversarial.detach(), "loss/cycle": cycle.detach(), "loss/identity": identity.detach()}
        return total, stats, Translated({"a": real_a, "b": real_b}, {"a": fake_a.detach(), "b": fake_b.detach()})

    def d_loss(self, step: int, repeat: int, handed: object) -> tuple[Tensor, Stats, None]:
        assert isinstance(handed, Translated), "the D phase follows G's"
        losses, bare, probs = {}, {}, []
        for domain, critic in (("a", self.d_a), ("b", self.d_b)):
            real, fake = handed.real[domain], self.pools[domain].query(handed.fake[domain])
            losses[domain], bare[domain], domain_probs = self.adversary.d_loss(critic, real, fake, critic(real),
                                                                               critic(fake), step)
            probs.append(torch.stack([domain_probs["prob/real"], domain_probs["prob/fake"]]))
        prob_real, prob_fake = torch.stack(probs).mean(0)
        return losses["a"] + losses["b"], {"loss/d_a": bare["a"], "loss/d_b": bare["b"],
                                           "prob/real": prob_real, "prob/fake": prob_fake}, None

    def after_d_update(self, step: int) -> None:
        self.adversary.after_d_step(self.d_a, self.d_b)

    def translate(self, direction: str, images: Tensor) -> Tensor:
        """[-1, 1] images of the source domain -> the other, with the EMA generator in eval mode."""
        return in_eval_mode(self.averages[DIRECTIONS[direction][0]].module, images)

    def preview(self) -> Preview:
        """Rows real_a | fake_b | rec_a and real_b | fake_a | rec_b on fixed test images."""
        fake_b, fake_a = self.translate("a2b", self.preview_a), self.translate("b2a", self.preview_b)
        rows = [self.preview_a, fake_b, self.translate("b2a", fake_b),
                self.preview_b, fake_a, self.translate("a2b", fake_a)]
        return Preview(torch.cat(rows), self.preview_a.shape[0])

    def real_preview(self) -> Preview:
        """Training images of A (first row) and B (second row)."""
        count = self.preview_a.shape[0]
        return Preview(torch.cat([self.samplers[d].images[:count] for d in ("a", "b")]), count)

    def evaluation(self, cfg: DictConfig) -> TranslationEvaluation:
        return TranslationEvaluation(cfg, self.domains, self.translate, self.device)
