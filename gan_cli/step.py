"""What one training step does, and everything it touches (`GanRun`), built from the config.

A step is (1) `d_steps` discriminator updates, each on a new real batch and a detached fake
batch, (2) one generator update on the last fake batch, (3) the EMA update of G. The loss,
regularizer and augmentation are config components with uniform hooks, so this code never
branches on which ones were chosen:
  loss.d_loss / g_loss on logits; loss.penalty and reg.penalty add a term to D's loss (WGAN-GP,
  R1) or return None; loss.after_d_step(D) runs after D's update (WGAN clipping); augment(x) is
  applied to every image D sees, real and fake (DiffAugment; identity when off);
  diversity.penalty(G, fake, z, labels) adds a term to G's loss (mode seeking) or returns None.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.utils import parametrize

from gan_cli import distributed
from gan_cli.config import build
from gan_cli.data import DeviceSampler, ImageData
from gan_cli.distributed import Ranks
from gan_cli.errors import GanCliError
from gan_cli.models.layers import MinibatchStd

STAT_NAMES = ("loss/d", "loss/g", "prob/real", "prob/fake")


@dataclass
class GanRun:
    generator: nn.Module
    discriminator: nn.Module
    ema: Any  # GeneratorEMA: .module to sample from, .update(step)
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    loss: Any
    reg: Any
    augment: Callable[[Tensor], Tensor]
    diversity: Any  # .penalty(G, fake, z, labels) -> Tensor | None, added to G's loss
    data: ImageData
    sampler: DeviceSampler
    d_steps: int
    autocast: Callable[[], AbstractContextManager[Any]]
    ranks: Ranks = Ranks()
    joint_d_forward: bool = False  # D scores real and fake in one forward (see `score_real_and_fake`)
    skip_nonfinite: bool = False  # trainer.on_nan=skip: check each loss before its update (a sync)
    skipped: int = 0


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


SINGLE_PROCESS = Ranks()


def scores_each_image_alone(discriminator: nn.Module) -> bool:
    """True when D's logit for an image depends on that image alone: no BatchNorm or minibatch
    std (batch statistics) and no spectral norm (one power iteration per forward call, so the number of
    calls is part of the math)."""
    return not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, MinibatchStd)) or parametrize.is_parametrized(m)
                   for m in discriminator.modules())


def build_run(cfg: DictConfig, device: torch.device, ranks: Ranks = SINGLE_PROCESS) -> GanRun:
    """Instantiate every component from its `_target_`; the config alone decides what runs."""
    data = build(cfg.dataset)
    if cfg.model.conditional and data.num_classes != cfg.dataset.num_classes:
        raise GanCliError(f"dataset.num_classes={cfg.dataset.num_classes} but the data has {data.num_classes} "
                          f"classes: set dataset.num_classes={data.num_classes} for a conditional model")
    sampler = DeviceSampler(data, device, cfg.trainer.batch_size, cfg.trainer.seed + ranks.rank, cfg.dataset.hflip,
                            ranks.rank, ranks.world_size)
    generator = build(cfg.model.generator).to(device)
    discriminator = build(cfg.model.discriminator).to(device)
    distributed.broadcast_parameters(generator, discriminator)
    if device.type in ("cpu", "cuda"):
        # NHWC convolutions: oneDNN (CPU) and cuDNN skip their layout reorders, the same math;
        # DCGAN at 28 px trains ~1.3x faster on CPU. Only 4-D weights change, so MLPs are untouched.
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
    ema = build(cfg.ema, generator)  # from the uncompiled G: the copy must not share compiled code
    if cfg.trainer.compile:  # in place, so state_dict keys and attributes (G.z_dim) stay unchanged
        generator.compile()
        discriminator.compile()
    bf16 = cfg.trainer.precision == "bf16"
    return GanRun(
        generator=generator,
        discriminator=discriminator,
        ema=ema,
        opt_g=make_optimizer(cfg.optim.g, generator),
        opt_d=make_optimizer(cfg.optim.d, discriminator),
        loss=build(cfg.loss),
        reg=build(cfg.reg),
        augment=build(cfg.augment),
        diversity=build(cfg.diversity),
        data=data,
        sampler=sampler,
        d_steps=cfg.trainer.d_steps,
        autocast=partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=bf16),
        ranks=ranks,
        joint_d_forward=scores_each_image_alone(discriminator),
        skip_nonfinite=cfg.trainer.on_nan == "skip",
    )


def update(run: GanRun, optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.ranks.enabled:
        distributed.average_gradients(optimizer)
    if run.skip_nonfinite and distributed.any_rank(not bool(torch.isfinite(loss)), loss.device):  # a host sync
        run.skipped += 1
        return
    optimizer.step()


def score_real_and_fake(run: GanRun, real: Tensor, fake: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
    """D's logits on the real and the fake batch. When D scores each image alone, one forward
    over both batches is the same math as two, with half the kernel launches and GEMMs twice as
    tall (MLP GAN on a 2-core CPU: 1.12x img/s). With BatchNorm in D it would not be: real and
    fake would share batch statistics."""
    if not run.joint_d_forward:
        return run.discriminator(real, labels=labels), run.discriminator(fake, labels=labels)
    both_labels = None if labels is None else torch.cat([labels, labels])
    return run.discriminator(torch.cat([real, fake]), labels=both_labels).split(real.shape[0])


def train_step(run: GanRun, step: int) -> Tensor:
    """One generator step and its d_steps discriminator steps. Returns the step's statistics
    as a device tensor (no sync): d loss, g loss, mean D(x), mean D(G(z)) (sigmoid of logits)."""
    G, D = run.generator, run.discriminator
    for inner in range(run.d_steps):
        d_step = step * run.d_steps + inner
        real, labels = run.sampler.batch(d_step)  # (B, C, H, W) in [-1, 1], (B,)
        labels = labels if G.num_classes else None  # fakes take the real batch's labels
        z = torch.randn(real.shape[0], G.z_dim, device=real.device)
        critic = partial(D, labels=labels)
        with run.autocast():
            fake = G(z, labels)
            real_seen, fake_seen = run.augment(real), run.augment(fake.detach())
            real_logits, fake_logits = score_real_and_fake(run, real_seen, fake_seen, labels)
            d_loss = run.loss.d_loss(real_logits, fake_logits)
            penalties = [run.loss.penalty(critic, real_seen, fake_seen, d_step),
                         run.reg.penalty(critic, real_seen, fake_seen, d_step)]
            d_total = d_loss + sum(p for p in penalties if p is not None)
        update(run, run.opt_d, d_total)
        run.loss.after_d_step(D)
    # G step on the last fake batch: its graph into G is still there, so G runs once per step.
    D.requires_grad_(False)  # D's parameter gradients are not needed for G's update
    with run.autocast():
        g_loss = run.loss.g_loss(critic(run.augment(fake)))
        diversity = run.diversity.penalty(G, fake, z, labels)
    update(run, run.opt_g, g_loss if diversity is None else g_loss + diversity)
    D.requires_grad_(True)
    run.ema.update(step)
    probs = torch.stack([torch.sigmoid(real_logits.detach()).mean(), torch.sigmoid(fake_logits.detach()).mean()])
    stats = torch.cat([torch.stack([d_loss.detach(), g_loss.detach()]).float(), probs.float()])
    return stats  # on_nan=skip: the Meter masks non-finite steps out of its sums
