"""Console entrypoints. Thin: compose the config with Hydra, hand it to train() / sample()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from gan_cli.errors import reported


def config_dir() -> str:
    """The wheel ships conf/ as gan_cli/conf; a source checkout has it at the repo root.

    Absolute on purpose: Hydra resolves a relative config_path against the calling module's
    package when run from a console script, which breaks for `../conf`.
    """
    packaged = Path(__file__).resolve().parent / "conf"
    return str(packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "conf")


CONFIG_DIR = config_dir()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@reported
def _train(cfg: DictConfig) -> Any:
    from gan_cli.train import train  # torch import after Hydra has parsed the command line

    return train(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
@reported
def _sample(cfg: DictConfig) -> None:
    from gan_cli.sample import sample

    sample(cfg)


def train_main() -> None:
    _train()


def sample_main() -> None:
    _sample()
