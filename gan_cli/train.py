"""The training loop: `train(cfg) -> metrics`, independent of the Hydra entrypoint.

The loop knows only "G: z (, labels) -> images, D: images (, labels) -> logits (B,)"; what one
step does is in step.py. Statistics are summed on the device and read back at log intervals,
the loop's one host sync. Samples, metrics and checkpoints come from the EMA copy of G.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from gan_cli import distributed
from gan_cli.checkpoint import CheckpointDir, load_checkpoint, load_weights, rng_state, set_rng_state
from gan_cli.config import resolve_device, run_length, validate
from gan_cli.errors import GanCliError
from gan_cli.logging import Reporter, SilentReporter, flatten_config
from gan_cli.metrics import Evaluator
from gan_cli.signals import GracefulStop, TrainingInterrupted
from gan_cli.step import STAT_NAMES, GanRun, build_run, train_step

log = logging.getLogger("gan_cli")

__all__ = ["GanRun", "build_run", "train_step", "train", "seed_everything"]


def checkpoint_state(run: GanRun, cfg: DictConfig, step: int, epoch: int) -> dict[str, Any]:
    """Everything the run depends on. The sampler needs no state: batch k is a pure function
    of (seed, k), so `step` fixes the position in the epoch's permutation."""
    return {
        "step": step,
        "epoch": epoch,
        "batches_drawn": step * run.d_steps,
        "generator": run.generator.state_dict(),
        "generator_ema": run.ema.state_dict(),
        "discriminator": run.discriminator.state_dict(),
        "opt_g": run.opt_g.state_dict(),
        "opt_d": run.opt_d.state_dict(),
        "config": OmegaConf.to_yaml(cfg),
        "rng": rng_state(),
    }


def model_differences(saved: DictConfig, current: DictConfig) -> list[str]:
    """`key: checkpoint -> config` for every model setting that differs."""
    old, new = flatten_config(saved), flatten_config(current)
    return [f"model.{key}: {old.get(key)} -> {new.get(key)}" for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)]


def find_resume(spec: str | None, checkpoints: CheckpointDir) -> tuple[Path, dict[str, Any]] | None:
    """`trainer.resume`: a path, or `auto` = the newest loadable checkpoint of this run dir."""
    if not spec:
        return None
    if spec != "auto":
        return Path(spec), load_checkpoint(spec)
    found = checkpoints.newest_loadable()
    if found is None:
        log.info("trainer.resume=auto: no checkpoint in %s yet, starting fresh", checkpoints.folder)
    return found


def restore(run: GanRun, cfg: DictConfig, path: Path, state: dict[str, Any]) -> int:
    """Load a checkpoint into `run`; returns the step to continue from."""
    differences = model_differences(OmegaConf.create(state["config"]).model, cfg.model)
    if differences:
        raise GanCliError(f"checkpoint {path} was trained with another model config: {'; '.join(differences)}")
    load_weights(run.generator, state["generator"], path, "generator")
    load_weights(run.discriminator, state["discriminator"], path, "discriminator")
    load_weights(run.ema.module, state.get("generator_ema", state["generator"]), path, "EMA generator")
    run.opt_g.load_state_dict(state["opt_g"])
    run.opt_d.load_state_dict(state["opt_d"])
    set_rng_state(state["rng"])
    log.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"])


class TrainingDiverged(GanCliError):
    pass


class Meter:
    """Sums step statistics on the device; `read` is the loop's one host sync."""

    def __init__(self, device: torch.device, images_per_step: int, step: int):
        self.sums = torch.zeros(len(STAT_NAMES), device=device)
        self.count, self.images_per_step = 0, images_per_step
        self.since_step, self.since_time = step, time.perf_counter()
        self.last: dict[str, float] = {}

    def add(self, stats: Tensor) -> None:
        self.sums += stats
        self.count += 1

    def read(self, step: int) -> dict[str, float]:
        values = dict(zip(STAT_NAMES, (self.sums / self.count).tolist(), strict=True))
        for name, value in values.items():
            if not math.isfinite(value):  # NaN or inf anywhere in the interval reaches the sum
                raise TrainingDiverged(
                    f"{name} is {value} in steps {self.since_step + 1}..{step} (trainer.on_nan=stop): "
                    f"stopped; checkpoints from before step {self.since_step + 1} are kept"
                )
        now = time.perf_counter()
        values["perf/img_per_sec"] = (step - self.since_step) * self.images_per_step / (now - self.since_time)
        self.sums.zero_()
        self.count, self.since_step, self.since_time, self.last = 0, step, now, values
        return values


def weights_finite(run: GanRun) -> bool:
    tensors = [*run.generator.parameters(), *run.discriminator.parameters()]
    return bool(torch.stack([t.detach().isfinite().all() for t in tensors]).all())


def fixed_latents(generator: nn.Module, count: int, seed: int) -> tuple[Tensor, Tensor | None, int]:
    """The sample grid's latents (and labels: one row per class when conditional) and its row width."""
    noise = torch.Generator().manual_seed(seed)
    if not generator.num_classes:
        return torch.randn(count, generator.z_dim, generator=noise), None, max(int(count**0.5), 1)
    per_class = max(count // generator.num_classes, 1)
    labels = torch.arange(generator.num_classes).repeat_interleave(per_class)
    return torch.randn(len(labels), generator.z_dim, generator=noise), labels, per_class


@torch.no_grad()
def draw_samples(generator: nn.Module, z: Tensor, labels: Tensor | None = None) -> Tensor:
    """Samples in eval mode (BatchNorm running statistics), then back to the previous mode."""
    was_training = generator.training
    generator.eval()
    images = generator(z, labels)
    generator.train(was_training)
    return images


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def hydra_run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def train(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Train the configured GAN; writes TensorBoard events, samples/, checkpoints/ and metrics.json into
    run_dir (the Hydra run dir by default) and returns the final metrics."""
    cfg = validate(cfg)
    run_dir = Path(run_dir) if run_dir is not None else hydra_run_dir()
    ranks = distributed.init(resolve_device(cfg.trainer.device))
    device = distributed.device_for(resolve_device(cfg.trainer.device), ranks)
    run_dir = Path(distributed.broadcast_string(str(run_dir.absolute())))  # rank 0's run dir for all
    log.info("device: %s", device)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: autotune once
    seed_everything(cfg.trainer.seed)
    run = build_run(cfg, device, ranks)
    checkpoints = CheckpointDir(run_dir / "checkpoints", cfg.trainer.keep_checkpoints)
    resumed = find_resume(cfg.trainer.resume, checkpoints)
    start = restore(run, cfg, *resumed) if resumed else 0
    if ranks.enabled:  # each rank its own noise (a resumed run restored rank 0's RNG everywhere)
        torch.manual_seed(cfg.trainer.seed + 1_000_003 * ranks.rank + start)
    steps, ends = run_length(cfg.trainer, run.sampler.batches_per_epoch)
    epoch_of = lambda step: step * run.d_steps // run.sampler.batches_per_epoch  # noqa: E731
    every = lambda step, n: step % n == 0  # noqa: E731
    z_fixed, labels_fixed, grid_width = fixed_latents(run.generator, cfg.log.num_samples, cfg.trainer.seed)
    z_fixed, labels_fixed = z_fixed.to(device), None if labels_fixed is None else labels_fixed.to(device)
    evaluator = Evaluator(cfg, run.data, device) if cfg.eval.enabled and ranks.is_main else None
    log.info("training steps %d..%d (%d batches/epoch, batch %d x %d rank(s)) into %s; %s", start + 1, steps,
             run.sampler.batches_per_epoch, cfg.trainer.batch_size, ranks.world_size, run_dir, ends)
    reporter = Reporter(run_dir, steps, start) if ranks.is_main else SilentReporter()
    if start == 0:  # once per run: real images, the config and the untrained G's grid at step 0
        reporter.run_started(cfg, run.sampler.images[: len(z_fixed)], draw_samples(run.ema.module, z_fixed,
                                                                                   labels_fixed), grid_width)
    images_per_step = cfg.trainer.batch_size * run.d_steps * ranks.world_size  # real images, all ranks
    meter = Meter(device, images_per_step, start)
    time_limit = 60 * (cfg.trainer.time_limit_minutes or math.inf)
    scores: dict[str, float] = {}

    def save(step: int) -> None:
        if not ranks.is_main:  # rank 0 holds the same weights
            return
        if not weights_finite(run):  # never replace a good checkpoint with broken weights
            raise TrainingDiverged(f"weights are not finite at step {step}: stopped without saving")
        checkpoints.save(checkpoint_state(run, cfg, step, epoch_of(step)), step)

    def evaluate(step: int) -> None:
        nonlocal scores
        scores = evaluator.evaluate(run.ema.module, step) if evaluator else {}
        if scores:
            reporter.scalars(step, epoch_of(step), scores, show=False)
        if evaluator and evaluator.improved(scores):
            checkpoints.save_best(checkpoint_state(run, cfg, step, epoch_of(step)))

    started = time.perf_counter()
    try:
        with GracefulStop() as stop:
            for step in range(start + 1, steps + 1):
                meter.add(train_step(run, step - 1))
                interrupted, out_of_time = distributed.any_ranks(
                    [stop.signum is not None, time.perf_counter() - started > time_limit], device)
                ending = step == steps or out_of_time or interrupted
                if ending or every(step, cfg.log.every_n_steps) or every(step, cfg.trainer.ckpt_every_n_steps):
                    reporter.scalars(step, epoch_of(step), meter.read(step))
                if every(step, cfg.log.sample_every_n_steps):
                    reporter.samples(step, draw_samples(run.ema.module, z_fixed, labels_fixed), grid_width)
                if interrupted:
                    save(step)
                    stop.hand_over()  # preempted under submitit: it requeues the job and exits here
                    raise TrainingInterrupted(stop.signum or signal.SIGTERM, step, str(checkpoints.folder / "last.pt"))
                if every(step, cfg.eval.every_n_steps) and step != steps:
                    evaluate(step)
                if every(step, cfg.trainer.ckpt_every_n_steps) or ending:
                    save(step)
                if out_of_time:
                    log.info("time limit of %s min reached at step %d", cfg.trainer.time_limit_minutes, step)
                    steps = step
                    break
        seconds = time.perf_counter() - started
        if start >= steps:
            log.info("checkpoint is at step %d, nothing left to train for %d steps", start, steps)
        reporter.samples(steps, draw_samples(run.ema.module, z_fixed, labels_fixed), grid_width)
        evaluate(steps)
        metrics = final_metrics(meter.last, steps, start, seconds, images_per_step, device)
        metrics.update(scores, skipped_steps=run.skipped, **(evaluator.best_metrics() if evaluator else {}))
        if ranks.is_main:
            (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        reporter.hparams(steps, cfg, {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    finally:
        reporter.close()  # flushes TensorBoard on every exit path
        distributed.shutdown()
    log.info("done: %d steps, %.0f img/s, d %.3f g %.3f%s -> %s", steps, metrics["img_per_sec"], metrics["loss/d"],
             metrics["loss/g"], evaluator.headline(scores) if evaluator else "", run_dir)
    return metrics


def final_metrics(last: dict[str, float], steps: int, start: int, seconds: float, images_per_step: int,
                  device: torch.device) -> dict[str, Any]:
    images_this_session = (steps - start) * images_per_step
    return {
        "steps": steps,
        "images_seen": steps * images_per_step,  # real images D has seen, across resumes
        "train_seconds": round(seconds, 3),
        "img_per_sec": round(images_this_session / seconds, 1) if seconds > 0 and steps > start else 0.0,
        **{name: last.get(name, float("nan")) for name in STAT_NAMES},
        "device": str(device),
    }
