"""Clean stops: SIGINT / SIGTERM end the current step, then the loop checkpoints and exits.

The handler only sets a flag, which the loop reads between steps (a Python bool: no device
sync). A second signal stops at once with the default behaviour, for a run that hangs.

Under submitit (SLURM), the launcher owns SIGTERM and the preemption signal (SIGUSR2, or
$SUBMITIT_PREEMPT_SIGNAL): SIGTERM is left to it, and on the preemption signal the loop first
writes its checkpoint, then calls submitit's handler, which requeues the job; the requeued job
continues from that checkpoint with trainer.resume=auto.

`request_stop` does what a SIGTERM does from any thread: the parent watchdog of a sweep job
(`watch_parent`) uses it, so a joblib worker whose sweep process was SIGKILLed checkpoints and
stops instead of training to the end as an orphan.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from gan_cli.core.errors import GanCliError

log = logging.getLogger("gan_cli")

HANDLED = (signal.SIGINT, signal.SIGTERM)
PREEMPT = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


class TrainingInterrupted(GanCliError):
    """Raised after the checkpoint is written (train() then writes the grid and metrics.json at
    the stop step and fills in `resume`, the command that continues the run). The exit status is
    128 + the signal's number (SIGINT: 130, so `gan-train ... && next` does not go on to `next`
    and `set -e` scripts stop; SIGTERM: 143, as schedulers expect). Ctrl-C is the user's choice,
    not an error: `is_error` False, no `error:` line, the log line says it all (a sweep stopped
    part-way is one, see sweep.run_task); the Makefile's `train` takes 130 as success."""

    def __init__(self, signum: int, step: int, checkpoint: str):
        self.signum, self.step, self.checkpoint, self.resume = signum, step, checkpoint, ""
        self.exit_code = 128 + signum
        self.is_error = signum != signal.SIGINT
        super().__init__(str(self))

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        text = f"stopped by {name} at step {self.step}; checkpoint saved to {self.checkpoint}"
        return f"{text}; continue with: {self.resume}" if self.resume else text


_ACTIVE: list[GracefulStop] = []  # the training loops running in this process (one, normally)
_PENDING: list[int] = []  # a stop requested before any loop started: the next loop stops at once


def request_stop(signum: int, reason: str) -> None:
    """Stop training as `signum` would (checkpoint, then TrainingInterrupted); any thread."""
    log.warning("%s: finishing this step and saving a checkpoint", reason)
    for stop in _ACTIVE:
        stop.signum = stop.signum or signum
    if not _ACTIVE:
        _PENDING.append(signum)


PARENT_GONE = threading.Event()  # set by watch_parent: nobody is left to report this job to


def watch_parent(interval: float = 1.0) -> threading.Thread:
    """A daemon thread that calls request_stop(SIGTERM) once this process's parent is gone (the
    process was re-parented: its parent pid changed)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        PARENT_GONE.set()
        request_stop(signal.SIGTERM, f"parent process {parent} is gone")

    thread = threading.Thread(target=watch, name="gan-cli-parent-watch", daemon=True)
    thread.start()
    return thread


class GracefulStop:
    """Context manager: `stop.signum` is set once a handled signal arrives (or request_stop)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # second signal: do what it would have done without us
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        log.warning("%s received: finishing this step and saving a checkpoint (send it again to stop now)",
                    signal.Signals(signum).name)

    def __enter__(self) -> GracefulStop:
        _ACTIVE.append(self)
        if _PENDING:
            self.signum = _PENDING.pop()
            _PENDING.clear()
        if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
            return self
        for signum in HANDLED:
            if signum == signal.SIGTERM and signal.getsignal(signum) not in (signal.SIG_DFL, None):
                continue  # a launcher (submitit) handles SIGTERM its own way
            self._previous[signum] = signal.signal(signum, self._handle)
        if PREEMPT is not None and callable(signal.getsignal(PREEMPT)):  # a launcher that requeues
            self._previous[PREEMPT] = signal.signal(PREEMPT, self._handle)
        return self

    def hand_over(self) -> None:
        """After the checkpoint: let the launcher's preemption handler requeue the job (it exits)."""
        previous = self._previous.get(self.signum) if self.signum is not None and self.signum == PREEMPT else None
        if callable(previous):
            log.warning("checkpoint written; handing the preemption over to the launcher to requeue")
            previous(self.signum, None)

    def __exit__(self, *exc: object) -> None:
        _ACTIVE.remove(self)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
