"""Console entrypoints. Thin: compose the config with Hydra, hand it to train() / sample()."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gan_cli.core.errors import EXIT_USAGE, NOTHING_WRITTEN, STARTING, interrupted, interrupts_deferred, reported

try:  # the console scripts start by importing this module: Hydra and OmegaConf take a while
    import hydra
    from omegaconf import DictConfig

    from gan_cli.core.overrides import check_overrides
    from gan_cli.core.schema import SampleSchema, TrainSchema
except KeyboardInterrupt:  # Ctrl-C right after pressing Enter: one line, not an import traceback
    interrupted(STARTING)


def config_dir() -> str:
    """The wheel ships conf/ as gan_cli/conf; a source checkout has it at the repo root.

    Absolute on purpose: Hydra resolves a relative config_path against the calling module's
    package when run from a console script, which breaks for `../conf`.
    """
    package = Path(__file__).resolve().parents[1]  # gan_cli/
    packaged = package / "conf"
    return str(packaged if packaged.is_dir() else package.parent / "conf")


CONFIG_DIR = config_dir()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@reported
def _train(cfg: DictConfig) -> Any:
    from gan_cli.apps.sweep import in_multirun, run_task
    from gan_cli.loop.runlock import this_ranks_lock
    from gan_cli.loop.train import hydra_run_dir, train  # torch import after Hydra has parsed the command line

    run_dir = hydra_run_dir()
    # A failed sweep job's folder stays (the sweep summary points to its train.log).
    cleanup = contextlib.nullcontext() if in_multirun() else removed_if_unused(run_dir)
    with cleanup, this_ranks_lock(run_dir):  # one process per run dir
        return run_task(train, cfg)  # the metrics, or the float a sweeper optimizes


# What Hydra (and the run dir lock) put in every run dir before the task runs; a run dir holding
# nothing else (and empty folders) has no result of the run in it.
HYDRA_ONLY = (".hydra", "train.log", ".gan-train.lock")


@contextlib.contextmanager
def removed_if_unused(run_dir: Path) -> Iterator[None]:
    """A run that fails before it wrote anything (bad data, bad config) leaves no folder behind:
    remove the run dir, and the parents Hydra made for it, when nothing but Hydra's own files is
    in it. Never the current directory or one above it."""
    try:
        yield
    except BaseException:
        folder = run_dir.absolute()
        files = [path.relative_to(folder) for path in folder.rglob("*") if path.is_file() or path.is_symlink()]
        if folder.is_dir() and all(file.parts[0] in HYDRA_ONLY for file in files) \
                and not Path.cwd().is_relative_to(folder):
            shutil.rmtree(folder, ignore_errors=True)
            for parent in folder.parents:  # outputs/DATE/ when this run was its only one
                if parent == Path.cwd() or Path.cwd().is_relative_to(parent) or any(parent.iterdir()):
                    break
                parent.rmdir()
        raise


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
@reported
def _sample(cfg: DictConfig) -> None:
    from gan_cli.sampling.sample import sample

    try:
        sample(cfg)
    except KeyboardInterrupt:  # the output's temporary file is gone already (outputs.staged)
        interrupted(NOTHING_WRITTEN)


def check_output_root(argv: list[str]) -> None:
    """Hydra creates the run dir before any of our code runs and answers a failure with a
    traceback; check the folder it will create first, and say what is wrong in one line."""
    root = Path("outputs")
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir"):
            root = Path(value.split("$", 1)[0] or ".")  # the part before any ${now:...}
    existing = root.expanduser().absolute()
    while not existing.exists():
        existing = existing.parent
    problem = "is not a folder" if not existing.is_dir() else creating_fails(existing)
    if problem:
        print(f"error: cannot create the output dir {root}: {existing} {problem}; "
              "choose another with hydra.run.dir=... (hydra.sweep.dir=... for -m)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def creating_fails(folder: Path) -> str:
    """Why a folder cannot be created inside `folder`, or "". A real mkdir: os.access says yes
    to root for any folder, /proc included."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".gan-train-probe-"))
    except OSError as err:
        return f"does not take new folders ({err.strerror or err})"
    return ""


def quiet_rank_overrides(argv: list[str]) -> list[str]:
    """Ranks other than 0 of a torchrun/SLURM job write nothing (rank 0 owns the run dir): no
    Hydra run dir of their own, no .hydra/, no log file."""
    from gan_cli.loop.distributed import launched_ranks

    if launched_ranks().is_main:
        return []
    quiet = ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    return quiet if any(arg.startswith("hydra.run.dir=") for arg in argv) else [*quiet, "hydra.run.dir=."]


@reported
def check_keys(argv: list[str], config_name: str, schema: type, script: str) -> None:
    check_overrides(argv, CONFIG_DIR, config_name, schema, script)


def resume_in_place(argv: list[str]) -> list[str]:
    """`trainer.resume=RUN/checkpoints/last.pt` continues that run in its own folder (one curve in
    TensorBoard, its real-image grid, config and HParams row), unless a folder is named
    (hydra.run.dir) or it is a multirun: [`hydra.run.dir=RUN`] or nothing."""
    if {"-m", "--multirun"} & set(argv) or any(arg.startswith("hydra.run.dir=") for arg in argv):
        return []
    paths = [arg.split("=", 1)[1] for arg in argv if arg.startswith("trainer.resume=")]
    if not paths or paths[-1] in ("", "auto", "null"):
        return []
    checkpoint = Path(paths[-1]).expanduser()
    run = checkpoint.parent.parent
    if checkpoint.parent.name != "checkpoints" or not (run / ".hydra").is_dir():
        return []  # not a gan-train run folder: the run gets a new folder of its own, as before
    return [f"hydra.run.dir={run}"]


def train_main() -> None:
    try:  # Ctrl-C before Hydra called the task (the imports, composing the config): one line, exit 130
        with interrupts_deferred():
            check_output_root(sys.argv[1:])
            check_keys(sys.argv[1:], "train", TrainSchema, "gan-train")
            sys.argv += quiet_rank_overrides(sys.argv[1:]) or resume_in_place(sys.argv[1:])
            import gan_cli.loop.train  # noqa: F401
            import gan_cli.tasks.image_gan  # noqa: F401  the slow imports (torch, torchvision), every task's too
        _train()
    except KeyboardInterrupt:
        interrupted()


def sample_main() -> None:
    try:
        with interrupts_deferred():
            check_keys(sys.argv[1:], "sample", SampleSchema, "gan-sample")
            import gan_cli.sampling.sample  # noqa: F401  the slow imports, as in train_main
            import gan_cli.tasks.image_gan  # noqa: F401
        _sample()
    except KeyboardInterrupt:
        interrupted(NOTHING_WRITTEN)
