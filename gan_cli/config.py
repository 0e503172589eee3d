"""Typed schema for the composed config, and the checks that run before any training.

Hydra composes plain YAML; `validate` merges it onto the dataclasses below so a wrong type
fails with the key's name, then applies the range checks in CHECKS. Groups whose options carry
their own keys (dataset, model, loss) are typed where all options agree and open otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gan_cli.errors import GanCliError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEVICES_ALLOWED = "auto, cpu, cuda, cuda:N, mps"
PRECISIONS = ("32", "bf16")
EVAL_FEATURES = ("classifier", "inception")


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
    epochs: int = 5
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
    input: str | None = None
    direction: str = "a2b"


def _positive(value: Any) -> bool:
    return value is not None and value > 0


def _beta(value: Any) -> bool:
    return 0.0 <= value < 1.0


# (key, predicate, what is allowed). Keys are dotted paths into the resolved config;
# `[*]` checks every item of a list.
Check = tuple[str, Callable[[Any], bool], str]
CHECKS: list[Check] = [
    ("optim.g.lr", _positive, "a number > 0"),
    ("optim.d.lr", _positive, "a number > 0"),
    ("optim.g.betas[*]", _beta, "two numbers in [0, 1)"),
    ("optim.d.betas[*]", _beta, "two numbers in [0, 1)"),
    ("optim.g.betas", lambda b: len(b) == 2, "exactly two betas, e.g. [0.5,0.999]"),
    ("optim.d.betas", lambda b: len(b) == 2, "exactly two betas, e.g. [0.5,0.999]"),
    ("trainer.batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.epochs", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.max_steps", lambda v: v >= 1, "null or an integer >= 1"),
    ("trainer.time_limit_minutes", _positive, "null or a number of minutes > 0"),
    ("trainer.d_steps", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.ckpt_every_n_steps", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.keep_checkpoints", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.on_nan", lambda v: v in ("stop", "skip"), "stop or skip"),
    ("trainer.num_threads", lambda v: v >= 1, "null or an integer >= 1"),
    ("trainer.device", lambda v: bool(DEVICE_PATTERN.match(v)), DEVICES_ALLOWED),
    ("trainer.precision", lambda v: v in PRECISIONS, " or ".join(PRECISIONS)),
    ("log.every_n_steps", lambda v: v >= 1, "an integer >= 1"),
    ("log.sample_every_n_steps", lambda v: v >= 1, "an integer >= 1"),
    ("log.num_samples", lambda v: v >= 1, "an integer >= 1"),
    ("eval.every_n_steps", lambda v: v >= 1, "an integer >= 1"),
    ("eval.num_samples", lambda v: v >= 2, "an integer >= 2"),
    ("eval.features", lambda v: v in EVAL_FEATURES, " or ".join(EVAL_FEATURES)),
    ("eval.batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("eval.classifier_epochs", lambda v: v >= 1, "an integer >= 1"),
    ("eval.kid_subsets", lambda v: v >= 1, "an integer >= 1"),
    ("eval.kid_subset_size", lambda v: v >= 2, "an integer >= 2"),
    ("dataset.channels", lambda v: v in (1, 3), "1 or 3"),
    ("dataset.image_size", lambda v: v >= 8, "an integer >= 8"),
    ("dataset.num_classes", lambda v: v >= 0, "an integer >= 0"),
    ("model.z_dim", lambda v: v >= 1, "an integer >= 1"),
]

SAMPLE_CHECKS: list[Check] = [
    ("num_samples", lambda v: v >= 1, "an integer >= 1"),
    ("batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("nrow", lambda v: v >= 0, "an integer >= 0 (0 = square-ish)"),
    ("direction", lambda v: v in ("a2b", "b2a"), "a2b or b2a"),
    ("device", lambda v: bool(DEVICE_PATTERN.match(v)), DEVICES_ALLOWED),
]


def _typed(cfg: DictConfig, schema: type, open_nodes: tuple[str, ...]) -> DictConfig:
    base = OmegaConf.structured(schema)
    for key in open_nodes:  # options of these groups add keys of their own ("" = the root)
        OmegaConf.set_struct(base[key] if key else base, False)
    try:
        merged = OmegaConf.merge(base, cfg)
        OmegaConf.resolve(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "config"
        reason = str(err).splitlines()[0]
        raise GanCliError(f"invalid config value for '{key}': {reason}") from None
    assert isinstance(merged, DictConfig)
    return merged


def _run_checks(cfg: DictConfig, checks: list[Check]) -> None:
    for key, ok, allowed in checks:
        path, each = (key[:-3], True) if key.endswith("[*]") else (key, False)
        value = OmegaConf.select(cfg, path, throw_on_missing=False)
        if value is None:
            continue  # unset optional key, or an option that does not use this key
        for item in (value if each else [value]):
            try:
                good = ok(item)
            except TypeError:
                good = False
            if not good:
                raise GanCliError(f"invalid value {path}={item!r}: allowed is {allowed}")


def validate(cfg: DictConfig) -> DictConfig:
    """Return a typed, fully resolved copy of the train config, or raise GanCliError."""
    typed = _typed(cfg, TrainSchema, open_nodes=("dataset", "model", "optim"))
    _run_checks(typed, CHECKS)
    if typed.model.conditional and typed.dataset.num_classes < 1:
        raise GanCliError(
            "model.conditional=true needs labelled data but dataset.num_classes is 0: pick a dataset "
            "with classes (for dataset=folder set dataset.num_classes to the number of class folders)"
        )
    check_device(typed.trainer.device, "trainer.device")
    group = OmegaConf.select(typed, "model.discriminator.minibatch_std") or 0
    if group and typed.trainer.batch_size % group:
        raise GanCliError(f"invalid value model.discriminator.minibatch_std={group}: allowed is 0 (off) or a "
                          f"divisor of trainer.batch_size={typed.trainer.batch_size}, e.g. 4")
    root = typed.dataset.root
    if root and not typed.dataset.download and not Path(root).expanduser().exists():
        raise GanCliError(
            f"dataset.root={root!r} does not exist (resolved to {Path(root).expanduser().resolve()}) "
            "and dataset.download=false: point dataset.root at the folder holding the files"
        )
    return typed


def validate_sample(cfg: DictConfig) -> DictConfig:
    typed = _typed(cfg, SampleSchema, open_nodes=("",))  # `class` is a Python keyword: no dataclass field
    _run_checks(typed, SAMPLE_CHECKS)
    check_device(typed.device, "device")
    return typed


def check_device(spec: str, key: str) -> None:
    """Fail early when the requested accelerator is not on this machine."""
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GanCliError(f"{key}={spec} but CUDA is not available here: use auto or cpu")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise GanCliError(
                f"{key}={spec} but this machine has {torch.cuda.device_count()} CUDA device(s): "
                f"use cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    if spec == "mps" and not torch.backends.mps.is_available():
        raise GanCliError(f"{key}=mps but MPS is not available here: use auto or cpu")


def resolve_device(spec: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu."""
    if spec != "auto":
        return torch.device(spec)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def build(node: DictConfig, *args: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate with user-facing errors: a GanCliError raised by a component
    comes through as itself (Hydra would wrap it), anything else names the config node."""
    try:
        return instantiate(node, *args, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, GanCliError):
            raise err.__cause__ from None
        cause = err.__cause__ if err.__cause__ is not None else err
        reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        target = node.get("_target_", "?")
        raise GanCliError(f"cannot build {target} from the config: {type(cause).__name__}: {reason}") from None
