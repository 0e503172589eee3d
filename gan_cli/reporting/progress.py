"""What a training run shows while it runs: a rich progress bar on a terminal (moving every
step, with log lines printed above it), plain log lines elsewhere, and the progress of long
side tasks (the feature classifier). Reporter (logging.py) feeds it at log intervals."""

from __future__ import annotations

import logging
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

log = logging.getLogger("gan_cli")

# Progress-line names: every task's D sees real and generated ("fake") images, whatever G's input
# (z, an image of the other domain, a low-resolution image), so no family's notation (D(G(z))).
SHOWN = {"loss/d": "d_loss", "loss/g": "g_loss", "prob/real": "D(real)", "prob/fake": "D(fake)"}


def _stats_text(values: dict[str, float]) -> str:
    shown = " ".join(f"{SHOWN.get(key, key.split('/', 1)[1])}={value:.3f}" for key, value in values.items()
                     if key.startswith(("loss/", "prob/")))  # whatever the task reports
    return f"{values.get('perf/img_per_sec', 0):,.0f} img/s  {shown}"


class RichDisplay:
    """Progress bar for a terminal. The step count moves every step (`tick`: no statistics, no
    device sync); the statistics at log intervals. While the bar is live, the console log handlers
    write through rich's console, so log lines (the run-time estimate, evaluations) print above
    the bar instead of into it."""

    def __init__(self, total: int, start: int, epoch: int, time_limit_s: float | None = None):
        # rich's time-remaining column counts steps; with a time limit the estimate line printed
        # above the bar says when the limit ends the run
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
        )
        # Until the first step is done (the first grids, cuDNN autotuning, compilation: seconds on a
        # GPU) the bar would sit at 0/N -:--:-- with nothing to say why.
        self.task = self.progress.add_task("train", total=total, completed=start, epoch=epoch + 1,
                                           stats=f"starting: step {start + 1} (warm-up) takes longest")
        self.first_step: float | None = time.perf_counter()  # None once the first step is done
        terminal = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)  # before rich wraps sys.stdout
        self.progress.start()
        self.redirected = _console_handlers_through(self.progress.console, terminal)

    def tick(self, step: int) -> None:
        if self.first_step is None:
            self.progress.update(self.task, completed=step)
            return
        # The time left is measured from the end of the first step: its warm-up is no rate of the run.
        seconds, self.first_step = time.perf_counter() - self.first_step, None
        (task,) = (task for task in self.progress.tasks if task.id == self.task)
        self.progress.reset(self.task, completed=step,  # reset replaces every field: the epoch kept
                            **{**task.fields, "stats": f"step {step} took {seconds:.1f} s (warm-up)"})

    def update(self, step: int, epoch: int, values: dict[str, float]) -> None:
        self.progress.update(self.task, completed=step, epoch=epoch + 1, stats=_stats_text(values))

    def stop(self) -> None:
        self.progress.stop()
        for handler, stream in self.redirected:
            handler.setStream(stream)


class ConsoleWriter:
    """A file-like stream for a logging handler that prints through a rich Console."""

    def __init__(self, console: Console):
        self.console = console

    def write(self, text: str) -> int:
        self.console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        pass


def _console_handlers_through(console: Console, terminal: tuple[object, ...]
                              ) -> list[tuple[logging.StreamHandler, object]]:
    """Point every handler that writes to one of the `terminal` streams (Hydra's console handler)
    at `console`; returns (handler, its stream) to restore."""
    handlers = [*logging.getLogger().handlers, *log.handlers]
    redirected = []
    for handler in handlers:
        if type(handler) is logging.StreamHandler and handler.stream in terminal:
            redirected.append((handler, handler.setStream(ConsoleWriter(console))))
    return redirected


class LineDisplay:
    """Plain periodic log lines when stdout is not a terminal (CI, SLURM logs, pipes)."""

    def __init__(self, total: int, start: int, epoch: int, time_limit_s: float | None = None):
        self.total = total
        self.deadline = time.perf_counter() + time_limit_s if time_limit_s else None  # the eta never passes it
        self.origin = self.started = (start, time.perf_counter())  # (step, when): what the ETA is timed from
        # after the first step (tick), the time from its end: its warm-up is no rate of the run

    def tick(self, step: int) -> None:
        if self.started is self.origin:
            self.started = (step, time.perf_counter())

    def update(self, step: int, epoch: int, values: dict[str, float]) -> None:
        since, when = self.started if self.started[0] < step else self.origin
        eta = (time.perf_counter() - when) / max(step - since, 1) * (self.total - step)
        if self.deadline is not None:
            eta = max(min(eta, self.deadline - time.perf_counter()), 0.0)
        log.info("step %d/%d epoch %d | %s | eta %.0fs", step, self.total, epoch + 1, _stats_text(values), eta)

    def stop(self) -> None:
        pass


class TaskProgress:
    """Progress of a long side task (the feature classifier before training; gan-eval's samples,
    features, nearest neighbours and classifiers): a rich bar on a terminal, else a log line at
    each quarter once the task has run `quiet_seconds` (a short pass, of which gan-eval runs many,
    says nothing; 0: every quarter, as the feature classifier's training, which a user waits on).
    Use as a context manager; `advance` per step."""

    QUIET_SECONDS = 10.0

    def __init__(self, description: str, total: int, quiet_seconds: float | None = None):
        self.description, self.total, self.done, self.started = description, total, 0, time.perf_counter()
        self.quiet_seconds = self.QUIET_SECONDS if quiet_seconds is None else quiet_seconds
        self.progress: Progress | None = None
        if sys.stdout.isatty():
            self.progress = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[note]}"), TimeRemainingColumn())
            self.task = self.progress.add_task(description, total=total, note="")

    def __enter__(self) -> TaskProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def advance(self, steps: int = 1, note: str = "") -> None:
        quarter = max(self.total // 4, 1)
        crossed = (self.done + steps) // quarter > self.done // quarter
        self.done += steps
        if self.progress is not None:
            self.progress.update(self.task, completed=self.done, note=note)
        elif crossed and self.done < self.total and time.perf_counter() - self.started >= self.quiet_seconds:
            eta = (time.perf_counter() - self.started) / self.done * (self.total - self.done)
            log.info("%s: %d/%d %s, eta %.0fs", self.description, self.done, self.total, note, eta)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
