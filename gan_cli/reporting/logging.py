"""The one reporting funnel: the loop hands named scalars and images to `Reporter`; TensorBoard,
the progress display and the Python log (Hydra's job log file) all read from here."""

from __future__ import annotations

import errno
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary
from torchvision.utils import make_grid, save_image

from gan_cli.core.errors import GanCliError
from gan_cli.reporting.hparams import run_hparams
from gan_cli.reporting.outputs import replaced
from gan_cli.reporting.progress import LineDisplay, RichDisplay
from gan_cli.tasks.base import Preview

log = logging.getLogger("gan_cli")

def flatten_config(cfg: DictConfig) -> dict[str, Any]:
    """`a.b.c -> value` with values TensorBoard's HParams tab accepts (numbers, str, bool)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            key = prefix[:-1]
            flat[key] = node if isinstance(node, (int, float, str, bool)) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def event_dir(run_dir: Path) -> Path:
    """Where the event files go: the run dir itself, and for a multirun job run_dir/<its overrides>
    (Hydra's override_dirname; gan_cli.apps.sweep leaves out the keys every job shares), so that
    `tensorboard --logdir <sweep dir>` names each run `N/loss=hinge,optim.lr=0.0001`. Nothing
    else in a run dir holds event files (.hydra/, samples/, checkpoints/), so each is one run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return run_dir
    name = HydraConfig.get().job.override_dirname.replace("/", "_")[:200]  # one folder, < 255 bytes
    return run_dir / name if name else run_dir


def sweep_job_name() -> str:
    """A multirun job's short name, `<sweep folder> #<job> <its overrides>` (12-00-00 #0
    optim.lr=0.0001), for the HParams table: the run's path under a shared logdir starts
    `multirun/2026-11-28/...`, which TensorBoard cuts before the part that tells jobs apart.
    "" outside a multirun (TensorBoard then shows the run's path)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return ""
    hydra_cfg = HydraConfig.get()
    return " ".join(part for part in (Path(hydra_cfg.sweep.dir).name, f"#{hydra_cfg.job.num}",
                                      hydra_cfg.job.override_dirname) if part)


def with_group_name(session_start: Any, name: str) -> Any:
    """The HParams session-start summary with its row's name (SessionStartInfo.group_name; the
    table shows it instead of the run's path). Each name is one job's, so no two runs share a row."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    if name:
        metadata = session_start.value[0].metadata.plugin_data
        data = plugin_data_pb2.HParamsPluginData.FromString(metadata.content)
        data.session_start_info.group_name = name
        metadata.content = data.SerializeToString()
    return session_start


# The Custom Scalars tab: each chart draws the curves whose tags match its regexes, so the
# G-vs-D balance reads off one chart instead of two.
BALANCE_LAYOUT = {
    "GAN balance": {
        "loss/d and loss/g": ["Multiline", ["^loss/d", "^loss/g$"]],  # loss/d_a, loss/d_b: a task with two D's
        "prob/real and prob/fake (mean D output)": ["Multiline", ["^prob/real$", "^prob/fake$"]],
    }
}


def image_grid(images: Tensor, nrow: int) -> Tensor:
    """(B, C, H, W), uint8 or G's [-1, 1] floats -> one (C, H', W') grid in [0, 1]."""
    value_range = (0.0, 255.0) if images.dtype == torch.uint8 else (-1.0, 1.0)
    return make_grid(images.float(), nrow=nrow, normalize=True, value_range=value_range)


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _events_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """TensorBoard's writer thread fails on a full disk and its next write or flush raises the
    OSError here: one line naming the folder (the thread's own traceback is silenced, see
    `_quiet_writer_threads`)."""

    @functools.wraps(method)
    def guarded(self: Reporter, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except OSError as err:
            full = err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            raise GanCliError(f"could not write TensorBoard events in {self.events}: "
                              f"{'disk full' if full else err.strerror or err} (the run's checkpoints are intact)"
                              ) from None

    return guarded


def _quiet_writer_threads() -> None:
    """An OSError in TensorBoard's background writer thread is reported once, by the thread that
    writes next (`_events_errors`), not also as a thread traceback."""
    if getattr(threading.excepthook, "gan_cli", False):
        return
    default = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread"):
            default(args)

    hook.gan_cli = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class Reporter:
    def __init__(self, run_dir: Path, total_steps: int, start_step: int, start_epoch: int = 0,
                 time_limit_s: float | None = None):
        self.samples_dir = run_dir / "samples"
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        # A resumed run continues after its checkpoint's step: points logged past it by the run
        # that was killed are purged, the point at the checkpoint's own step is kept.
        self.events = event_dir(run_dir)
        _quiet_writer_threads()
        self.writer = SummaryWriter(str(self.events), purge_step=start_step + 1 if start_step else None)
        display = RichDisplay if sys.stdout.isatty() else LineDisplay
        self.display = display(total_steps, start_step, start_epoch, time_limit_s)  # epochs shown from 1
        self.time_limit_s = time_limit_s  # trainer.time_limit_minutes: it may end the run before `total_steps`
        self.total, self.start, self.clock = total_steps, start_step, time.perf_counter()
        self.estimated_rate = 0.0  # img/s the run-time estimate was made at; 0: not yet
        self.last_sample_step = -1

    @_events_errors
    def run_started(self, cfg: DictConfig, real: Preview, samples: Preview) -> None:
        """Step 0 of a new run, once: the Custom Scalars layout, the resolved config (Text tab),
        a grid of real training images and the untrained G's grid (the slider starts there)."""
        self.writer.add_custom_scalars(BALANCE_LAYOUT)
        self.writer.add_text("config", f"```yaml\n{OmegaConf.to_yaml(cfg)}```", 0)
        self.writer.add_image("real", image_grid(real.images, real.nrow), 0)
        self.samples(0, samples.images, samples.nrow)
        if samples.rows:
            listed = "\n\n".join(f"{row}. {text}" for row, text in enumerate(samples.rows, 1))
            self.writer.add_text("samples/rows", listed, 0)  # what each row of the sample grid shows
        self.clock = time.perf_counter()  # the run-time estimate counts training steps only

    @_events_errors
    def scalars(self, step: int, epoch: int, values: dict[str, float], show: bool = True) -> None:
        """show=False: TensorBoard only, not the progress line (evaluation logs its own line)."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        if show:
            self.display.update(step, epoch, values)
            if not self.estimated_rate and step > self.start:
                self._estimate(step, values.get("perf/img_per_sec", 0.0))
            else:
                self._revise(step, values.get("perf/img_per_sec", 0.0))

    def tick(self, step: int) -> None:
        """Every step: moves a terminal's bar (no statistics, no device sync)."""
        self.display.tick(step)

    def _estimate(self, step: int, rate: float) -> None:
        """After the first log interval: the whole run at the rate measured so far."""
        self.per_step = (time.perf_counter() - self.clock) / (step - self.start)
        whole = self.per_step * (self.total - self.start)
        self.estimated_rate = rate
        if self.time_limit_s and whole > self.time_limit_s:  # what the user will see end the run is the limit
            log.info("estimated training time: %s, when the time limit ends the run at about step %d of %d "
                     "(%.0f ms/step over the first %d; all %d steps would take %s)", duration(self.time_limit_s),
                     self.start + self.time_limit_s / self.per_step, self.total, 1000 * self.per_step,
                     step - self.start, self.total - self.start, duration(whole))
            return
        log.info("estimated training time: %s for %d steps (%.0f ms/step over the first %d; evaluations "
                 "and checkpoints add to it)", duration(whole), self.total - self.start, 1000 * self.per_step,
                 step - self.start)

    def _revise(self, step: int, rate: float) -> None:
        """A step that got 1.5x cheaper or dearer (a warm-up phase ended, another job left the
        machine): the time left at the new rate (img/s of training steps only, see Meter)."""
        if not self.estimated_rate or not rate or 1 / 1.5 < rate / self.estimated_rate < 1.5 or step >= self.total:
            return
        self.per_step *= self.estimated_rate / rate
        left = self.per_step * (self.total - step)
        if self.time_limit_s:  # the limit's clock starts with the training steps, as self.clock does
            left = min(left, max(self.time_limit_s - (time.perf_counter() - self.clock), 0.0))
        log.info("training time revised: %s left for %d steps (now %.0f ms/step, %s img/s)",
                 duration(left), self.total - step, 1000 * self.per_step, f"{rate:,.0f}")
        self.estimated_rate = rate

    @_events_errors
    def samples(self, step: int, images: Tensor, nrow: int) -> Path:
        """images: (B, C, H, W) in [-1, 1]. Logged as one grid, and saved as PNG; once per step
        (the loop's last step is also a sampling step when it is a multiple of the interval)."""
        path = self.samples_dir / f"step_{step:07d}.png"
        if step == self.last_sample_step:
            return path
        grid = image_grid(images, nrow)
        self.writer.add_image("samples", grid, step)
        with replaced(path, "the sample grid") as temporary:
            save_image(grid, temporary)
        self.last_sample_step = step
        return path

    @_events_errors
    def baseline(self, values: dict[str, float]) -> None:
        """What doing nothing scores (Evaluation.baseline): once, as a table in the Text tab."""
        if values:
            rows = "\n".join(f"| {name} | {value:.4g} |" for name, value in values.items())
            self.writer.add_text("baseline", f"| baseline (doing nothing) | value |\n| --- | --- |\n{rows}", 0)

    @_events_errors
    def hparams(self, step: int, cfg: DictConfig, baseline: dict[str, float]) -> None:
        """This run's row in the HParams tab, in its own event file (SummaryWriter.add_hparams
        would make a separate sub-run): the columns are run_hparams(cfg) and the run's baseline
        numbers, and the metric columns are this run's curves at their last value (TensorBoard
        offers every scalar tag of a session's run, by tag: best/<primary metric> first), so the
        final values need no charts of their own. A sweep job's row is named sweep_job_name().
        The other final values (steps, train_seconds, ...) are in metrics.json and the sweep's
        summary.csv."""
        # Only the session summaries: TensorBoard then builds the HParams columns from the union
        # of every run's keys; an `experiment` summary would fix them to the first run it reads.
        _, session_start, session_end = hparams_summary({**run_hparams(cfg), **baseline}, {})
        for summary in (with_group_name(session_start, sweep_job_name()), session_end):
            # torch's SummaryWriter is unannotated: mypy infers file_writer from its `= None` in __init__
            self.writer.file_writer.add_summary(summary, step)  # type: ignore[attr-defined]

    def close(self, failing: bool = False) -> None:
        """Flush TensorBoard and stop the display. A write error here is one line, unless the run
        is already ending with an error of its own (`failing`), which it would hide."""
        self.display.stop()
        try:
            self.writer.close()
        except OSError as err:
            if not failing:
                raise GanCliError(f"could not write TensorBoard events in {self.events}: {err.strerror or err} "
                                  "(the run's checkpoints are intact)") from None


class SilentReporter:
    """What ranks other than 0 of a multi-process run report to: nothing."""

    def tick(self, step: int) -> None:
        pass

    def run_started(self, cfg: DictConfig, real: Preview, samples: Preview) -> None:
        pass

    def scalars(self, step: int, epoch: int, values: dict[str, float], show: bool = True) -> None:
        pass

    def samples(self, step: int, images: Tensor, nrow: int) -> None:
        pass

    def baseline(self, values: dict[str, float]) -> None:
        pass

    def hparams(self, step: int, cfg: DictConfig, baseline: dict[str, float]) -> None:
        pass

    def close(self, failing: bool = False) -> None:
        pass
