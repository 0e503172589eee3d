"""User-facing errors: one line, no traceback, non-zero exit."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE = 2


class GanCliError(Exception):
    """A problem with the user's input (config, files, checkpoint) that a message can explain."""


def reported(func: F) -> F:
    """Turn a GanCliError inside a Hydra task into `error: ...` on stderr and exit 2.

    Hydra would print its own traceback for an exception escaping the task function; a bad
    config value deserves one line. HYDRA_FULL_ERROR=1 keeps the traceback for debugging.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GanCliError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            if getattr(err, "is_error", True):  # not: a run the user stopped, said in its log (train.stopped)
                print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(getattr(err, "exit_code", EXIT_USAGE))
        except KeyboardInterrupt:
            interrupted()

    return wrapper  # type: ignore[return-value]


TRAINING_NOT_RUNNING = "interrupted by SIGINT before training started (or after it ended): nothing new was saved"
NOTHING_WRITTEN = "interrupted by SIGINT: nothing was written"
STARTING = "interrupted by SIGINT while starting: nothing was written"


def interrupted(what: str = TRAINING_NOT_RUNNING) -> None:
    """Ctrl-C outside the training loop (start-up, imports): one line, exit 130, no traceback.
    Inside the loop, gan_cli.loop.signals turns it into a checkpoint first."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise KeyboardInterrupt
    print(f"error: {what}", file=sys.stderr, flush=True)
    sys.exit(128 + signal.SIGINT)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C while torch & co. are imported (the first seconds) can land inside a library's own
    `try:` around an import: seen swallowed (the run went on) or turned into an ImportError naming
    the task. Inside this block SIGINT is only noted; KeyboardInterrupt is raised when it ends."""
    noted: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:  # a background job started with SIGINT ignored keeps ignoring it
        yield
        return
    signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if noted:
        raise KeyboardInterrupt
