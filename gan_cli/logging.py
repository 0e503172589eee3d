"""The one reporting funnel: the loop hands named scalars and images to `Reporter`; TensorBoard,
the progress display and the Python log (Hydra's job log file) all read from here."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary
from torchvision.utils import make_grid, save_image

log = logging.getLogger("gan_cli")

SHOWN = {"loss/d": "d_loss", "loss/g": "g_loss", "prob/real": "D(x)", "prob/fake": "D(G(z))"}


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


def _stats_text(values: dict[str, float]) -> str:
    shown = " ".join(f"{SHOWN.get(key, key.split('/', 1)[1])}={value:.3f}" for key, value in values.items()
                     if key.startswith(("loss/", "prob/")))  # whatever the task reports
    return f"{values.get('perf/img_per_sec', 0):,.0f} img/s  {shown}"


class _RichDisplay:
    """Progress bar for a terminal."""

    def __init__(self, total: int, start: int):
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("train", total=total, completed=start, epoch=0, stats="")
        self.progress.start()

    def update(self, step: int, epoch: int, values: dict[str, float]) -> None:
        self.progress.update(self.task, completed=step, epoch=epoch, stats=_stats_text(values))

    def stop(self) -> None:
        self.progress.stop()


class _LineDisplay:
    """Plain periodic log lines when stdout is not a terminal (CI, SLURM logs, pipes)."""

    def __init__(self, total: int, start: int):
        self.total, self.start, self.started = total, start, time.perf_counter()

    def update(self, step: int, epoch: int, values: dict[str, float]) -> None:
        done = max(step - self.start, 1)
        eta = (time.perf_counter() - self.started) / done * (self.total - step)
        log.info("step %d/%d epoch %d | %s | eta %.0fs", step, self.total, epoch, _stats_text(values), eta)

    def stop(self) -> None:
        pass


def tb_run_dir(run_dir: Path) -> Path:
    """Where the event files go: run_dir/tb, and for a multirun job run_dir/tb/<its overrides>
    (Hydra's override_dirname; gan_cli.sweep leaves out the keys every job shares), so that
    `tensorboard --logdir <sweep dir>` names each run `N/tb/optim.lr=0.0001,loss=hinge`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return run_dir / "tb"
    name = HydraConfig.get().job.override_dirname.replace("/", "_")[:200]  # one folder, < 255 bytes
    return run_dir / "tb" / name if name else run_dir / "tb"


class Reporter:
    def __init__(self, run_dir: Path, total_steps: int, start_step: int):
        self.samples_dir = run_dir / "samples"
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        # A resumed run continues after its checkpoint's step: points logged past it by the run
        # that was killed are purged, the point at the checkpoint's own step is kept.
        self.writer = SummaryWriter(str(tb_run_dir(run_dir)), purge_step=start_step + 1 if start_step else None)
        display = _RichDisplay if sys.stdout.isatty() else _LineDisplay
        self.display = display(total_steps, start_step)

    def scalars(self, step: int, epoch: int, values: dict[str, float], show: bool = True) -> None:
        """show=False: TensorBoard only, not the progress line (evaluation logs its own line)."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        if show:
            self.display.update(step, epoch, values)

    def samples(self, step: int, images: Tensor, nrow: int) -> Path:
        """images: (B, C, H, W) in [-1, 1]. Logged as one grid, and saved as PNG."""
        grid = make_grid(images.float(), nrow=nrow, normalize=True, value_range=(-1, 1))
        self.writer.add_image("samples", grid, step)
        path = self.samples_dir / f"step_{step:07d}.png"
        save_image(grid, path)
        return path

    def hparams(self, step: int, cfg: DictConfig, metrics: dict[str, float]) -> None:
        """Write final metrics as `final/*` scalars and the HParams summary into this run's own
        event file, so the HParams tab lists one row per run beside its curves
        (SummaryWriter.add_hparams would create a separate sub-run)."""
        final = {f"final/{name}": value for name, value in metrics.items()}
        for tag, value in final.items():
            self.writer.add_scalar(tag, value, step)
        # Only the session summaries: TensorBoard then builds the HParams columns from the union
        # of every run's keys; an `experiment` summary would fix them to the first run it reads.
        _, session_start, session_end = hparams_summary(flatten_config(cfg), final)
        for summary in (session_start, session_end):
            self.writer.file_writer.add_summary(summary)

    def close(self) -> None:
        self.writer.close()
        self.display.stop()


class SilentReporter:
    """What ranks other than 0 of a multi-process run report to: nothing."""

    def scalars(self, step: int, epoch: int, values: dict[str, float], show: bool = True) -> None:
        pass

    def samples(self, step: int, images: Tensor, nrow: int) -> None:
        pass

    def hparams(self, step: int, cfg: DictConfig, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass
