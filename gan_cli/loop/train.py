"""The training loop: `train(cfg) -> metrics`, independent of the Hydra entrypoint and of the
GAN family. The task (gan_cli/tasks/) owns networks, data and what one step computes; this file
owns what every family shares: device, seeding, resume, the step schedule, the meter, grids,
evaluation, checkpoints, signals and the time limit. Statistics are summed on the device and read
back at log intervals, the loop's one host sync.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from gan_cli.components.contracts import LrSchedule
from gan_cli.components.schedule import Schedules
from gan_cli.core.config import build, resolve_device, run_length, validate
from gan_cli.loop import distributed
from gan_cli.loop.checkpoint import CheckpointDir
from gan_cli.loop.meter import Meter, TrainingDiverged
from gan_cli.loop.precision import warn_about_slow_precision
from gan_cli.loop.resume import checkpoint_state, find_resume, restore
from gan_cli.loop.signals import GracefulStop, TrainingInterrupted
from gan_cli.loop.step import Updater, build_task, build_updater, train_step
from gan_cli.reporting.logging import Reporter, SilentReporter
from gan_cli.reporting.outputs import replaced
from gan_cli.tasks.base import Evaluation, Task

log = logging.getLogger("gan_cli")

__all__ = ["train", "seed_everything", "build_task", "train_step", "TrainingDiverged"]


class Outputs:
    """What the loop writes besides scalars: checkpoints (rank 0), evaluations and best.pt."""

    def __init__(self, cfg: DictConfig, task: Task, schedules: Schedules, checkpoints: CheckpointDir,
                 evaluation: Evaluation | None, reporter: Reporter | SilentReporter, is_main: bool):
        self.cfg, self.task, self.schedules, self.checkpoints = cfg, task, schedules, checkpoints
        self.evaluation, self.reporter, self.is_main = evaluation, reporter, is_main
        self.scores: dict[str, float] = {}
        self.best = math.inf

    def epoch_of(self, step: int) -> int:
        return epoch_of(self.task, step)

    def state(self, step: int) -> dict[str, Any]:
        return checkpoint_state(self.task, self.schedules, self.cfg, step, self.epoch_of(step), self.best)

    def save(self, step: int) -> None:
        if self.is_main:  # rank 0 holds the same weights; non-finite ones are refused (checkpoint.py)
            self.checkpoints.save(self.state(step), step)

    def evaluate(self, step: int) -> None:
        if self.evaluation is None:
            return
        self.scores = self.evaluation.evaluate(step)
        if self.scores.get(self.evaluation.primary, math.inf) < self.best:
            self.best = self.scores[self.evaluation.primary]
            self.checkpoints.save_best(self.state(step))
        # best/<primary>: best.pt's score, and the HParams tab's first metric column (it orders
        # metrics by tag, and `best/` sorts before loss/, metrics/, perf/, prob/)
        best = {best_tag(self.evaluation.primary): self.best} if self.best < math.inf else {}
        self.reporter.scalars(step, self.epoch_of(step), {**best, **self.scores}, show=False)

    def preview(self, step: int) -> None:
        preview = self.task.preview()
        self.reporter.samples(step, preview.images, preview.nrow)


def best_tag(primary: str) -> str:
    """metrics/fd_classifier -> best/fd_classifier (metrics.json: best_fd_classifier)."""
    return f"best/{primary.split('/')[-1]}"


def epoch_of(task: Task, step: int) -> int:
    """The (0-based) epoch a step falls in: epochs count batches of the task's epoch stream."""
    return step * task.batches_per_step // task.batches_per_epoch


def write_metrics(run_dir: Path, metrics: dict[str, Any], what: str) -> None:
    with replaced(run_dir / "metrics.json", what) as path:
        path.write_text(json.dumps(metrics, indent=2) + "\n")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def hydra_run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def run_steps(cfg: DictConfig, task: Task, updater: Updater, schedules: Schedules, outputs: Outputs,
              meter: Meter, stop: GracefulStop, start: int, steps: int) -> int:
    """Steps start+1..steps (fewer on a time limit or a signal); returns the last step done."""
    every = lambda step, n: step % n == 0  # noqa: E731
    time_limit, started = 60 * (cfg.trainer.time_limit_minutes or math.inf), time.perf_counter()
    for step in range(start + 1, steps + 1):
        meter.add(train_step(task, step - 1, updater))
        schedules.step()
        outputs.reporter.tick(step)
        interrupted, out_of_time = distributed.any_ranks(
            [stop.signum is not None, time.perf_counter() - started > time_limit], meter.sums.device)
        ending = step == steps or out_of_time or interrupted
        if ending or every(step, cfg.log.every_n_steps) or every(step, cfg.trainer.ckpt_every_n_steps):
            outputs.reporter.scalars(step, outputs.epoch_of(step), meter.read(step, updater.skipped))
        if every(step, cfg.log.sample_every_n_steps):
            with meter.excluded():
                outputs.preview(step)
        if interrupted:
            outputs.save(step)
            stop.hand_over()  # preempted under submitit: it requeues the job and exits here
            raise TrainingInterrupted(stop.signum or signal.SIGTERM, step, str(outputs.checkpoints.folder / "last.pt"))
        if every(step, cfg.eval.every_n_steps) and not ending:
            with meter.excluded():  # img/s counts training steps only
                outputs.evaluate(step)
        if every(step, cfg.trainer.ckpt_every_n_steps) or ending:
            outputs.save(step)
        if out_of_time:
            log.info("time limit of %s min reached at step %d", cfg.trainer.time_limit_minutes, step)
        if ending:
            return step
    return start  # nothing left to train


def train(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Train the configured task; writes TensorBoard events, samples/, checkpoints/ and metrics.json into
    run_dir (the Hydra run dir by default) and returns the final metrics."""
    cfg = validate(cfg)
    ranks = distributed.init(resolve_device(cfg.trainer.device), cfg.trainer.dist_timeout_minutes)
    device = distributed.device_for(resolve_device(cfg.trainer.device), ranks)
    run_dir = Path(distributed.broadcast_string(str(Path(run_dir or hydra_run_dir()).absolute())))  # rank 0's
    log.info("device: %s", device)
    warn_about_slow_precision(cfg.trainer.precision, device)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: autotune once
    seed_everything(cfg.trainer.seed)
    checkpoints = CheckpointDir(run_dir / "checkpoints", cfg.trainer.keep_checkpoints)
    resumed = find_resume(cfg.trainer.resume, checkpoints)  # checked (trusted.py) before anything is built
    task, updater = build_task(cfg, device, ranks), build_updater(cfg, device, ranks)
    steps, ends = run_length(cfg.trainer, task.batches_per_epoch, task.batches_per_step)
    time_limit_s = 60 * cfg.trainer.time_limit_minutes if cfg.trainer.time_limit_minutes else None
    if time_limit_s:
        ends += f", unless trainer.time_limit_minutes={cfg.trainer.time_limit_minutes} ends it first"
    schedules = Schedules(build(cfg.lr_schedule, expect=LrSchedule), task.optimizers, steps)
    start = restore(task, schedules, cfg, *resumed) if resumed else 0
    if ranks.enabled:  # each rank its own noise (a resumed run restored rank 0's RNG everywhere)
        torch.manual_seed(cfg.trainer.seed + 1_000_003 * ranks.rank + start)
    evaluation = task.evaluation(cfg) if cfg.eval.enabled and ranks.is_main else None
    images_per_step = task.images_per_step * ranks.world_size  # real images, all ranks
    log.info("training steps %d..%d (%d batches/epoch, batch %d x %d rank(s)) into %s; %s", start + 1, steps,
             task.batches_per_epoch, cfg.trainer.batch_size, ranks.world_size, run_dir, ends)
    reporter = Reporter(run_dir, steps, start, epoch_of(task, start), time_limit_s) if ranks.is_main \
        else SilentReporter()
    if start == 0:  # once per run: real images, the config and the untrained networks' grid at step 0
        reporter.run_started(cfg, task.real_preview(), task.preview())
    outputs = Outputs(cfg, task, schedules, checkpoints, evaluation, reporter, ranks.is_main)
    if resumed and evaluation is not None:  # this run's best.pt is beaten, not replaced
        outputs.best = checkpoints.best_score()
    baseline = evaluation.baseline if evaluation is not None else {}
    reporter.baseline(baseline)
    updates_per_step = sum(phase.repeats for phase in task.phases)
    meter = Meter(tuple(task.stat_names), device, images_per_step, start, updates_per_step, updater.skip_nonfinite)
    started = time.perf_counter()
    try:
        with GracefulStop() as stop:  # a signal during the final evaluation waits for metrics.json
            try:
                last = run_steps(cfg, task, updater, schedules, outputs, meter, stop, start, steps)
            except TrainingInterrupted as interruption:
                stopped(interruption, run_dir, outputs, final_metrics(
                    meter, interruption.step, start, time.perf_counter() - started, device, outputs, updater.skipped))
                raise
            seconds = time.perf_counter() - started
            if start >= steps:
                log.info("checkpoint is at step %d, nothing left to train for %d steps", start, steps)
            outputs.preview(last)
            outputs.evaluate(last)
            metrics = final_metrics(meter, last, start, seconds, device, outputs, updater.skipped)
            if ranks.is_main:
                write_metrics(run_dir, metrics, "the final metrics")
            reporter.hparams(last, cfg, baseline)
    finally:
        reporter.close(failing=sys.exc_info()[0] is not None)  # flushes TensorBoard on every exit path
        distributed.shutdown()
    shown = "  ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in meter.last.items() if k in task.stat_names)
    log.info("done: %d steps, %.0f img/s, %s%s -> %s", last, metrics["img_per_sec"], shown,
             "".join(f", {k} {v:.4g}" for k, v in outputs.scores.items() if k == getattr(evaluation, "primary", "")),
             run_dir)
    return metrics


def stopped(interruption: TrainingInterrupted, run_dir: Path, outputs: Outputs, metrics: dict[str, Any]) -> None:
    """A run stopped by a signal (its checkpoint written): the grid and metrics.json at the stop
    step, and a log line (train.log too) saying where the checkpoint is and how to continue."""
    outputs.preview(interruption.step)
    if outputs.is_main:
        write_metrics(run_dir, {**metrics, "stopped_by": signal.Signals(interruption.signum).name},
                      "the metrics at the stop")
    interruption.resume = resume_command(run_dir)
    log.warning("%s", interruption)


def resume_command(run_dir: Path) -> str:
    """The command line that continues this run in its folder: the same overrides, resume=auto."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("trainer.resume=", "hydra.run.dir=",
                                                                   "trainer.overwrite="))]
    return " ".join(["gan-train", *map(shlex.quote, kept), "trainer.resume=auto",
                     f"hydra.run.dir={shlex.quote(str(run_dir))}"])


def final_metrics(meter: Meter, steps: int, start: int, seconds: float, device: torch.device, outputs: Outputs,
                  skipped: int) -> dict[str, Any]:
    images_this_session = (steps - start) * meter.images_per_step
    evaluation = outputs.evaluation  # a best score needs one
    best = ({f"best_{evaluation.primary.split('/')[-1]}": outputs.best}
            if evaluation is not None and outputs.best < math.inf else {})
    return {
        "steps": steps,
        "images_seen": steps * meter.images_per_step,  # real images D has seen, across resumes
        "train_seconds": round(seconds, 3),
        "img_per_sec": round(images_this_session / seconds, 1) if seconds > 0 and steps > start else 0.0,
        **{name: meter.last.get(name, float("nan")) for name in meter.names},
        "device": str(device),
        **outputs.scores,
        "skipped_steps": skipped,
        **best,
        **(outputs.evaluation.baseline if outputs.evaluation is not None else {}),
    }
