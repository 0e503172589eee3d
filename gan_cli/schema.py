"""Typed schema of the composed configs (no torch import: the command line is checked against it
before training starts). Groups whose options carry their own keys (dataset, model, loss) are
typed where all options agree and open otherwise; config.validate merges the config onto these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_EPOCHS = 5  # trainer.epochs when neither it nor trainer.max_steps is set


@dataclass
class DatasetSchema:
    _target_: str = "???"
    name: str = "???"
    root: str = "data"
    download: bool = True
    channels: int = 1
    image_size: int = 28
    num_classes: int = 0
    hflip: bool = False


@dataclass
class ModelSchema:
    name: str = "???"
    z_dim: int = 100
    conditional: bool = False
    generator: Any = None
    discriminator: Any = None


@dataclass
class OptimSchema:
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0
    g: Any = None
    d: Any = None


@dataclass
class TrainerSchema:
    epochs: int | None = None  # null: DEFAULT_EPOCHS, unless max_steps is set (see config.run_length)
    max_steps: int | None = None
    time_limit_minutes: float | None = None
    batch_size: int = 128
    d_steps: int = 1
    device: str = "auto"
    seed: int = 0
    precision: str = "32"
    compile: bool = False
    ckpt_every_n_steps: int = 1000
    keep_checkpoints: int = 3
    on_nan: str = "stop"
    resume: str | None = None
    num_threads: int | None = None


@dataclass
class LogSchema:
    every_n_steps: int = 50
    sample_every_n_steps: int = 500
    num_samples: int = 64


@dataclass
class EvalSchema:
    enabled: bool = True
    every_n_steps: int = 1000
    num_samples: int = 5000
    features: str = "classifier"
    inception_weights: str | None = None
    batch_size: int = 250
    classifier_epochs: int = 4
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    cache_dir: str | None = None


@dataclass
class TrainSchema:
    task: Any = None
    dataset: DatasetSchema = field(default_factory=DatasetSchema)
    model: ModelSchema = field(default_factory=ModelSchema)
    loss: Any = None
    reg: Any = None
    augment: Any = None
    diversity: Any = None
    ema: Any = None
    optim: OptimSchema = field(default_factory=OptimSchema)
    lr_schedule: Any = None
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    log: LogSchema = field(default_factory=LogSchema)
    eval: EvalSchema = field(default_factory=EvalSchema)
    sr: Any = None  # task=srgan's settings (conf/task/srgan.yaml)
    optimized_metric: str | None = None


@dataclass
class SampleSchema:
    checkpoint: str = "???"
    num_samples: int = 64
    out: str = "samples.png"
    seed: int = 0
    batch_size: int = 256
    device: str = "auto"
    nrow: int = 0
    input: str | None = None  # translation tasks: a folder, an .npz, or test
    direction: str = "a2b"
    seeds: Any = None  # z -> image: [1,2,3] or 0-63, one image per seed (latent_tools.parse_seeds)
    truncation: float = 1.0
    interpolate: int = 0
    fps: int = 12
    mix: Any = None  # coarse | middle | fine | a list of them
    mix_seeds: Any = None
    layout: str = "flat"  # classes: out=DIR/<class>/*.png (an ImageFolder tree)
