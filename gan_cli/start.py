"""The console scripts' entry points. Each imports its command only inside a guard, because a
Ctrl-C right after pressing Enter lands in the imports (Hydra, OmegaConf, torch take seconds on a
busy machine): one line and exit 130 there, not an import traceback. Nothing but `sys` is imported
before the guard, so the unguarded window is the interpreter's own start-up."""

import sys


def _run(module: str, name: str) -> object:
    try:
        import importlib

        entry = getattr(importlib.import_module(module), name)
    except KeyboardInterrupt:
        print("error: interrupted by SIGINT while starting: nothing was written", file=sys.stderr, flush=True)
        sys.exit(130)
    return entry()


def train() -> object:
    return _run("gan_cli.apps.cli", "train_main")


def sample() -> object:
    return _run("gan_cli.apps.cli", "sample_main")


def bench() -> object:
    return _run("gan_cli.apps.bench", "main")


def evaluate() -> object:
    return _run("gan_cli.evaluate.main", "main")


def project() -> object:
    return _run("gan_cli.apps.project", "main")


def draw() -> object:
    return _run("gan_cli.apps.draw", "main")


def data() -> object:
    return _run("gan_cli.apps.data", "main")
