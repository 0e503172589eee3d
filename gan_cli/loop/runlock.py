"""One gan-train process per run dir, and a run's files never mixed with another run's.

An advisory `fcntl` lock on `<run dir>/.gan-train.lock`, held for the whole run and released by
the kernel when the process dies (a SIGKILLed run leaves no stale lock; the file only keeps the
last holder's PID for the message). Ranks other than 0 of a multi-process run share rank 0's run
dir and take no lock.

For a single run the lock is taken by `RunDirGuard.on_run_start`, a Hydra callback that runs
before Hydra creates the run dir, writes `.hydra/` or opens `train.log`: a refused run touches
nothing in a folder another run owns. The guard also refuses a fresh run (no `trainer.resume`)
into a folder that holds another run's checkpoints, unless `trainer.overwrite=true`, which moves
the old run's files aside first; and a folder whose `checkpoints/step_*.pt` is not a file. A run
resumed in its own folder keeps the earlier `.hydra/` files under `.hydra/earlier/`. The
jobs of a multirun each get a new numbered folder of a new sweep dir; their lock is taken when
the job starts (`this_ranks_lock`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from gan_cli.core.errors import EXIT_USAGE, GanCliError
from gan_cli.loop.checkpoint import remove_stale_temp_files

LOCK_FILE = ".gan-train.lock"
CHECKPOINT_NAMES = ("step_*.pt", "last.pt", "best.pt")
HEADROOM = 1 << 20  # bytes a run dir must take before anything starts: .hydra/, the log, the first grid

_HELD: dict[Path, int] = {}  # run dirs whose lock this process holds -> the lock file's descriptor


def _forget_in_child() -> None:
    """A forked child (a DataLoader worker of a streaming run) drops its copies of the lock
    descriptors: the lock is the run's, and must die with it. A worker outlives a SIGKILLed run by
    up to its watchdog's 5 s; holding the lock, it would refuse the `trainer.resume=auto` run."""
    for handle in _HELD.values():
        os.close(handle)  # the parent's descriptor still holds the lock
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


class RunDirInUse(GanCliError):
    pass


def acquire(run_dir: Path, record: bool = True) -> None:
    """Take the run dir's lock for the rest of this process (RunDirInUse when another has it);
    `record`: write this PID into the lock file now (else `record_holder` once the run may start)."""
    key = run_dir.absolute()
    if key in _HELD:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(handle)
        raise RunDirInUse(f"run dir {run_dir} is in use by PID {holder} (another gan-train): wait for it "
                          "to end, or choose another hydra.run.dir") from None
    _HELD[key] = handle
    if record:
        record_holder(run_dir)


def record_holder(run_dir: Path) -> None:
    handle = _HELD[run_dir.absolute()]
    os.ftruncate(handle, 0)
    os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)


def release(run_dir: Path) -> None:
    handle = _HELD.pop(run_dir.absolute(), None)
    if handle is not None:
        os.close(handle)  # closing releases the lock


@contextmanager
def locked_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold the run dir's lock (kept as it is when the guard already took it for this process).
    Once held, temp files of interrupted saves are removed: no one else writes."""
    already = run_dir.absolute() in _HELD
    acquire(run_dir)
    try:
        remove_stale_temp_files(run_dir / "checkpoints")
        yield
    finally:
        if not already:
            release(run_dir)


@contextmanager
def this_ranks_lock(run_dir: Path) -> Iterator[None]:
    """`locked_run_dir` on rank 0 (or a single process); nothing on the other ranks."""
    from gan_cli.loop.distributed import launched_ranks

    if not launched_ranks().is_main:
        yield
        return
    with locked_run_dir(run_dir):
        yield


def check_run_dir(run_dir: Path, resume: Any, overwrite: bool) -> None:
    """What must hold before a run writes into `run_dir` (its lock held): no other run's
    checkpoints unless resuming (or overwrite, which moves them aside), no folder where a
    checkpoint file goes, and room on the disk for the run's first files."""
    folder = run_dir / "checkpoints"
    found = sorted(p for pattern in CHECKPOINT_NAMES for p in folder.glob(pattern)) if folder.is_dir() else []
    if strange := [p for p in found if not p.is_file()]:  # is_file follows links: a dangling one is strange too
        raise GanCliError(f"{strange[0]} is not a checkpoint file: move it out of {folder}, or choose another "
                          "hydra.run.dir")
    if found and not resume:
        if not overwrite:
            raise GanCliError(f"run dir {run_dir} holds another run's checkpoints ({found[-1].name}): continue "
                              "that run with trainer.resume=auto, choose another hydra.run.dir, or set "
                              "trainer.overwrite=true to start afresh (the old files are moved aside, not deleted)")
        aside = run_dir / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.mkdir()
        for entry in run_dir.iterdir():
            if entry.name not in (LOCK_FILE, aside.name) and not entry.name.startswith("replaced-"):
                shutil.move(str(entry), str(aside / entry.name))
    probe = run_dir / ".gan-train.space"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * HEADROOM)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        raise GanCliError(f"run dir {run_dir} cannot take the run's files: "
                          f"{'disk full' if full else err.strerror or err} (a run needs at least "
                          f"{HEADROOM >> 20} MiB to start); free some space or choose another hydra.run.dir") from None
    finally:
        probe.unlink(missing_ok=True)


EARLIER = "earlier"  # .hydra/earlier/<when that part started>/: the .hydra/ files of a run's earlier parts


def keep_earlier_hydra_files(hydra_dir: Path) -> None:
    """A resumed run writes into its own folder, and Hydra then rewrites `.hydra/config.yaml`,
    `hydra.yaml` and `overrides.yaml` with the resumed part's: move the earlier part's files to
    `.hydra/earlier/<YYYY-mm-dd_HH-MM-SS>/` first (the time its config was written, i.e. when that
    part started), so the config a run started with is never lost."""
    files = sorted(path for path in hydra_dir.glob("*.yaml") if path.is_file()) if hydra_dir.is_dir() else []
    if not files:
        return
    started = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(max(path.stat().st_mtime for path in files)))
    aside, number = hydra_dir / EARLIER / started, 1
    while aside.exists():  # two parts started within one second
        number += 1
        aside = hydra_dir / EARLIER / f"{started}-{number}"
    aside.mkdir(parents=True)
    for path in files:
        path.rename(aside / path.name)


class RunDirGuard(Callback):
    """Lock and check the run dir of a single run before Hydra writes into it (see the module
    docstring); a refusal is one `error:` line and exit 2, with nothing in the folder changed."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from gan_cli.loop.distributed import launched_ranks

        if not launched_ranks().is_main:
            return
        run_dir = Path(str(config.hydra.run.dir))  # resolves ${now:...} once; written back below
        with read_write(config.hydra.run), open_dict(config.hydra.run):
            config.hydra.run.dir = str(run_dir)
        existed = run_dir.exists()
        try:
            acquire(run_dir, record=False)  # a refused run leaves even the last holder's PID as it was
            check_run_dir(run_dir, config.trainer.get("resume"), bool(config.trainer.get("overwrite")))
            if config.hydra.output_subdir is not None:
                keep_earlier_hydra_files(run_dir / str(config.hydra.output_subdir))
            record_holder(run_dir)
        except GanCliError as err:
            if not existed and run_dir.absolute() in _HELD:  # only what this process created
                release(run_dir)
                shutil.rmtree(run_dir, ignore_errors=True)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USAGE)
