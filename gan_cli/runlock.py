"""One gan-train process per run dir: an advisory `fcntl` lock on `<run dir>/.gan-train.lock`.

Two processes writing one run dir (two fresh runs with the same hydra.run.dir, or two
`trainer.resume=auto` of one run) would interleave checkpoints and race in the rotation. The
lock is held for the whole run and released by the kernel when the process dies, so a SIGKILLed
run never leaves a stale lock; the file only keeps the last holder's PID for the message.
Ranks other than 0 of a multi-process run share rank 0's run dir and take no lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gan_cli.checkpoint import remove_stale_temp_files
from gan_cli.errors import GanCliError

LOCK_FILE = ".gan-train.lock"


class RunDirInUse(GanCliError):
    pass


@contextmanager
def locked_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold the run dir's lock; RunDirInUse (one line, with the holder's PID) when another
    process has it. Once held, temp files of interrupted saves are removed: no one else writes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirInUse(f"run dir {run_dir} is in use by PID {holder} (another gan-train): wait for it "
                              "to end, or choose another hydra.run.dir") from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        remove_stale_temp_files(run_dir / "checkpoints")
        yield
    finally:
        os.close(handle)  # closing releases the lock


@contextmanager
def this_ranks_lock(run_dir: Path) -> Iterator[None]:
    """`locked_run_dir` on rank 0 (or a single process); nothing on the other ranks."""
    from gan_cli.distributed import launched_ranks

    if not launched_ranks().is_main:
        yield
        return
    with locked_run_dir(run_dir):
        yield
