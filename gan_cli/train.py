"""The training loop: `train(cfg) -> metrics`, independent of the Hydra entrypoint.

The loop knows only "G: z -> images, D: images -> logits (B,)". Each step is (1) d_steps
discriminator updates on real and detached fake batches, (2) one generator update; statistics
are summed on the device and read back only every `log.every_n_steps`, the loop's one host sync.
"""

from __future__ import annotations

import json
import logging
import random
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from gan_cli.checkpoint import load_checkpoint, load_weights, rng_state, save_checkpoint, set_rng_state
from gan_cli.config import build, resolve_device, validate
from gan_cli.data import DeviceSampler
from gan_cli.logging import Reporter

log = logging.getLogger("gan_cli")

STAT_NAMES = ("loss/d", "loss/g", "prob/real", "prob/fake")


@dataclass
class GanRun:
    """Everything one training step touches."""

    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    loss: Any  # d_loss(real_logits, fake_logits), g_loss(fake_logits)
    sampler: DeviceSampler
    d_steps: int
    autocast: Callable[[], AbstractContextManager[Any]]


def build_run(cfg: DictConfig, device: torch.device) -> GanRun:
    """Instantiate every component from its `_target_`; the config alone decides what runs."""
    data = build(cfg.dataset)
    sampler = DeviceSampler(data, device, cfg.trainer.batch_size, cfg.trainer.seed, cfg.dataset.hflip)
    generator = build(cfg.model.generator).to(device)
    discriminator = build(cfg.model.discriminator).to(device)
    bf16 = cfg.trainer.precision == "bf16"
    return GanRun(
        generator=generator,
        discriminator=discriminator,
        opt_g=build(cfg.optim.g)(generator.parameters()),
        opt_d=build(cfg.optim.d)(discriminator.parameters()),
        loss=build(cfg.loss),
        sampler=sampler,
        d_steps=cfg.trainer.d_steps,
        autocast=partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=bf16),
    )


def train_step(run: GanRun, step: int) -> Tensor:
    """One generator step and its d_steps discriminator steps. Returns the step's statistics
    as a device tensor (no sync): d loss, g loss, mean D(x), mean D(G(z))."""
    G, D = run.generator, run.discriminator
    for inner in range(run.d_steps):
        real, _ = run.sampler.batch(step * run.d_steps + inner)  # (B, C, H, W) in [-1, 1]
        z = torch.randn(real.shape[0], G.z_dim, device=real.device)
        with run.autocast():
            fake = G(z)
            real_logits, fake_logits = D(real), D(fake.detach())
            d_loss = run.loss.d_loss(real_logits, fake_logits)
        run.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        run.opt_d.step()
    # G step on the last fake batch: its graph into G is still there, so G runs once per step.
    D.requires_grad_(False)  # D's parameter gradients are not needed for G's update
    with run.autocast():
        g_loss = run.loss.g_loss(D(fake))
    run.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    run.opt_g.step()
    D.requires_grad_(True)
    probs = torch.sigmoid(torch.stack([real_logits.detach().mean(), fake_logits.detach().mean()]))
    return torch.cat([torch.stack([d_loss.detach(), g_loss.detach()]).float(), probs.float()])


def checkpoint_state(run: GanRun, cfg: DictConfig, step: int, epoch: int) -> dict[str, Any]:
    return {
        "step": step,
        "epoch": epoch,
        "generator": run.generator.state_dict(),
        "discriminator": run.discriminator.state_dict(),
        "opt_g": run.opt_g.state_dict(),
        "opt_d": run.opt_d.state_dict(),
        "config": OmegaConf.to_yaml(cfg),
        "rng": rng_state(),
    }


def restore(run: GanRun, path: str) -> int:
    """Load a checkpoint into `run`; returns the step to continue from."""
    state = load_checkpoint(path)
    load_weights(run.generator, state["generator"], path, "generator")
    load_weights(run.discriminator, state["discriminator"], path, "discriminator")
    run.opt_g.load_state_dict(state["opt_g"])
    run.opt_d.load_state_dict(state["opt_d"])
    set_rng_state(state["rng"])
    log.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"])


@torch.no_grad()
def draw_samples(generator: nn.Module, z: Tensor) -> Tensor:
    """Samples in eval mode (BatchNorm running statistics), then back to training mode."""
    generator.eval()
    images = generator(z)
    generator.train()
    return images


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def total_steps(cfg: DictConfig, batches_per_epoch: int) -> int:
    steps = max(cfg.trainer.epochs * batches_per_epoch // cfg.trainer.d_steps, 1)
    return min(steps, cfg.trainer.max_steps) if cfg.trainer.max_steps else steps


def hydra_run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def train(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Train the configured GAN; writes tb/, samples/, checkpoints/ and metrics.json into
    run_dir (the Hydra run dir by default) and returns the final metrics."""
    cfg = validate(cfg)
    run_dir = Path(run_dir) if run_dir is not None else hydra_run_dir()
    device = resolve_device(cfg.trainer.device)
    log.info("device: %s", device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: autotune once
    seed_everything(cfg.trainer.seed)
    run = build_run(cfg, device)
    start = restore(run, cfg.trainer.resume) if cfg.trainer.resume else 0
    steps = total_steps(cfg, run.sampler.batches_per_epoch)
    batches_per_epoch, images_per_step = run.sampler.batches_per_epoch, cfg.trainer.batch_size * run.d_steps
    epoch_of = lambda step: step * run.d_steps // batches_per_epoch  # noqa: E731
    noise = torch.Generator().manual_seed(cfg.trainer.seed)  # fixed latents: comparable grids
    z_fixed = torch.randn(cfg.log.num_samples, run.generator.z_dim, generator=noise).to(device)
    grid_rows = max(int(cfg.log.num_samples**0.5), 1)
    reporter = Reporter(run_dir, steps, start)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    log.info("training %d steps (%d batches/epoch, batch %d) into %s", steps, batches_per_epoch,
             cfg.trainer.batch_size, run_dir)

    sums, count, values = torch.zeros(len(STAT_NAMES), device=device), 0, {}
    started = last_time = time.perf_counter()
    last_step = start
    for step in range(start + 1, steps + 1):
        sums += train_step(run, step - 1)
        count += 1
        if step % cfg.log.every_n_steps == 0 or step == steps:
            means = (sums / count).tolist()  # the loop's only host sync
            now = time.perf_counter()
            values = dict(zip(STAT_NAMES, means))
            values["perf/img_per_sec"] = (step - last_step) * images_per_step / (now - last_time)
            reporter.scalars(step, epoch_of(step), values)
            sums.zero_()
            count, last_time, last_step = 0, now, step
            if cfg.trainer.time_limit_minutes and now - started > 60 * cfg.trainer.time_limit_minutes:
                log.info("time limit of %s min reached at step %d", cfg.trainer.time_limit_minutes, step)
                steps = step
                break
        if step % cfg.log.sample_every_n_steps == 0:
            reporter.samples(step, draw_samples(run.generator, z_fixed), grid_rows)
        if step % cfg.trainer.ckpt_every_n_steps == 0:
            save_checkpoint(ckpt_path, checkpoint_state(run, cfg, step, epoch_of(step)))
    seconds = time.perf_counter() - started

    reporter.samples(steps, draw_samples(run.generator, z_fixed), grid_rows)
    save_checkpoint(ckpt_path, checkpoint_state(run, cfg, steps, epoch_of(steps)))
    images_this_session = (steps - start) * images_per_step
    metrics: dict[str, Any] = {
        "steps": steps,
        "images_seen": steps * images_per_step,  # real images D has seen, across resumes
        "train_seconds": round(seconds, 3),
        "img_per_sec": round(images_this_session / seconds, 1) if seconds > 0 else 0.0,
        **{name: values.get(name, float("nan")) for name in STAT_NAMES},
        "device": str(device),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    reporter.finish(steps, cfg, {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    log.info("done: %d steps, %.0f img/s, d %.3f g %.3f -> %s", steps, metrics["img_per_sec"],
             metrics["loss/d"], metrics["loss/g"], run_dir)
    return metrics
