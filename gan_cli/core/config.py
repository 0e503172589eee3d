"""The checks that run before any training, device choice and component building.

Hydra composes plain YAML; `validate` merges it onto the schema dataclasses (schema.py) so a
wrong type fails with the key's name, checks the whole resolved config against the schema as a
checkpoint's is checked (schema_check.py: component nodes against their constructors), then
applies the range checks in CHECKS. A failed check
names the key the user sets: `optim.g.lr` is `${optim.lr}` unless set alone, so it reads
`optim.lr`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gan_cli.core.errors import GanCliError
from gan_cli.core.schema import DEFAULT_EPOCHS, DataSchema, DrawSchema, ProjectSchema, SampleSchema, TrainSchema
from gan_cli.core.schema_check import config_problem
from gan_cli.core.sizes import is_size, size_allowed

if TYPE_CHECKING:
    from typing_extensions import TypeForm  # PEP 747: a class or a Protocol, as `expect=` takes

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEVICES_ALLOWED = "auto, cpu, cuda, cuda:N, mps"
PRECISIONS = ("32", "bf16")
EVAL_FEATURES = ("classifier", "inception")


def _positive(value: Any) -> bool:
    return value is not None and value > 0


def _beta(value: Any) -> bool:
    return 0.0 <= value < 1.0


SEED_LIMIT = 2**32  # numpy's RandomState takes seeds in 0 .. 2**32 - 1
SEED_ALLOWED = f"an integer in 0..{SEED_LIMIT - 1}"
# Widths of the model options (conf/model/*.yaml): a zero-wide layer fails deep inside oneDNN
# with a 55-line traceback. Every option's width keys are listed once, for G and D alike; a key
# an option does not have is skipped.
WIDTH_KEYS = ("ngf", "ndf", "width", "dense", "hidden[*]", "channel_base", "channel_max")


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
    ("trainer.epochs", lambda v: v >= 1, "null or an integer >= 1"),
    ("trainer.max_steps", lambda v: v >= 1, "null or an integer >= 1"),
    ("trainer.time_limit_minutes", _positive, "null or a number of minutes > 0"),
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
    ("dataset.image_size", lambda v: is_size(v, 8), size_allowed(8)),
    ("dataset.num_classes", lambda v: v >= 0, "an integer >= 0"),
    # dataset=converted (data/converted.py, data/streaming.py)
    ("dataset.in_memory", lambda v: v in (True, False, "auto"), "auto, true or false"),
    ("dataset.memory_budget_gb", _positive, "null (a share of the device's free memory) or a number of GB > 0"),
    ("dataset.num_workers", lambda v: v >= 0, "null (min(4, CPUs)) or an integer >= 0 (0: read in the training "
                                               "process)"),
    ("model.z_dim", lambda v: v >= 1, "an integer >= 1"),
    ("model.w_dim", lambda v: v >= 1, "an integer >= 1"),
    *((f"model.{net}.{key}", lambda v: v >= 1, "an integer >= 1")
      for net in ("generator", "discriminator") for key in WIDTH_KEYS),
    ("trainer.seed", lambda v: 0 <= v < SEED_LIMIT, SEED_ALLOWED),
    ("trainer.dist_timeout_minutes", _positive, "a number of minutes > 0"),
    ("reg.gamma", lambda v: v >= 0, "a number >= 0 (the R1 penalty's weight; reg=none turns it off)"),
]

SAMPLE_CHECKS: list[Check] = [
    ("num_samples", lambda v: v >= 1, "an integer >= 1"),
    ("seed", lambda v: 0 <= v < SEED_LIMIT, SEED_ALLOWED),
    ("batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("nrow", lambda v: v >= 0, "an integer >= 0 (0 = square-ish)"),
    ("direction", lambda v: v in ("a2b", "b2a"), "a2b or b2a"),
    ("interpolate", lambda v: v == 0 or v >= 2, "0 (off) or a number of frames >= 2"),
    ("fps", lambda v: 1 <= v <= 100, "an integer in 1..100"),
    ("upscale", lambda v: 1 <= v <= 32, "null (animations to 256 px) or an integer in 1..32"),
    ("device", lambda v: bool(DEVICE_PATTERN.match(v)), DEVICES_ALLOWED),
]

PROJECT_CHECKS: list[Check] = [
    *((key, lambda v: v >= 1, "an integer >= 1") for key in ("starts", "steps", "batch_size", "classifier_epochs")),
    ("lr", _positive, "a number > 0"),
    ("seed", lambda v: 0 <= v < SEED_LIMIT, SEED_ALLOWED),
    *((key, lambda v: v >= 0, "a number >= 0") for key in ("pixel_weight", "perceptual_weight", "noise_weight")),
    ("space", lambda v: v in ("auto", "z", "w", "w_plus"), "auto, z, w or w_plus"),
    ("fps", lambda v: 1 <= v <= 100, "an integer in 1..100"),
    ("upscale", lambda v: 1 <= v <= 32, "null (animations to 256 px) or an integer in 1..32"),
    ("device", lambda v: bool(DEVICE_PATTERN.match(v)), DEVICES_ALLOWED),
]

DRAW_CHECKS: list[Check] = [
    *((key, lambda v: v >= 1, "an integer >= 1") for key in ("candidates", "starts", "steps", "classifier_epochs")),
    ("port", lambda v: 1 <= v <= 65535, "a port number in 1..65535"),
    ("background", lambda v: 0 <= v <= 1, "a number in 0..1"),
    ("canvas", lambda v: 64 <= v <= 2048, "a size in screen pixels, 64..2048"),
    ("lr", _positive, "a number > 0"),
    ("seed", lambda v: 0 <= v < SEED_LIMIT, SEED_ALLOWED),
    *((key, lambda v: v >= 0, "a number >= 0") for key in ("pixel_weight", "perceptual_weight")),
    ("device", lambda v: bool(DEVICE_PATTERN.match(v)), DEVICES_ALLOWED),
]

# Keys typed Any in the schema (an integer or a list: OmegaConf has no such union) whose null is no
# setting: checked, not skipped, when null.
NEVER_NULL = ("dataset.image_size", "image_size")

# What a required key (`???`) is for, in the one line that says it is missing.
REQUIRED = {
    "checkpoint": "the checkpoint to draw from, e.g. gan-sample checkpoint=outputs/DATE/TIME/checkpoints/last.pt",
    "dataset.root": "the folder of class folders of images, e.g. dataset.root=~/celeba",
}
PROJECT_REQUIRED = {
    "checkpoint": "the z -> image checkpoint to project into, e.g. checkpoint=outputs/DATE/TIME/checkpoints/last.pt",
    "target": "the images to project: an image, a folder of images or an .npz (arr_0 uint8 NHWC)",
}
DATA_CHECKS: list[Check] = [
    ("image_size", lambda v: is_size(v, 4), size_allowed(4)),
    ("channels", lambda v: v in (1, 3), "1 or 3"),
    ("crop", lambda v: v in ("center", "resize", "pad"), "center, resize or pad"),
    ("on_error", lambda v: v in ("skip", "stop"), "skip or stop"),
    ("layout", lambda v: v in ("images", "unpaired", "paired"), "images, unpaired or paired"),
    ("num_workers", lambda v: v >= 0, "null (min(4, CPUs)) or an integer >= 0 (0: decode in this process)"),
]
DATA_REQUIRED = {
    "source": "a folder of images (class subfolders become labels) or mnist, fashion_mnist, cifar10 (read from root)",
    "out": "the folder to write, e.g. out=~/datasets/faces64",
}
DRAW_REQUIRED = {"checkpoint": "the checkpoint to open, e.g. gan-draw checkpoint=outputs/DATE/TIME/checkpoints/last.pt"}
INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")  # `${optim.lr}`: the value is another key's


def source_key(raw: object, path: str) -> str:
    """The key a value was set through: `optim.g.lr` is `${optim.lr}` unless set on its own."""
    for _ in range(8):  # a short chain of plain interpolations
        node: Any = raw
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        match = INTERPOLATION.match(node) if isinstance(node, str) else None
        if match is None:
            return path
        path = match.group(1)
    return path


def _typed(cfg: DictConfig, schema: type, open_nodes: tuple[str, ...], required: dict[str, str] = REQUIRED
           ) -> DictConfig:
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
    missing = sorted(OmegaConf.missing_keys(cfg) | OmegaConf.missing_keys(merged))  # a merge keeps defaults over ???
    if missing:
        raise GanCliError(f"{missing[0]}= is required: {required.get(missing[0], 'set it on the command line')}")
    return merged


def shown(value: Any) -> str:
    """A value as the message quotes it: a list as typed on the command line (`[16,16,3]`)."""
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value)
    if isinstance(value, list) and all(isinstance(item, int) for item in value):
        return f"[{','.join(str(item) for item in value)}]"
    return repr(value)


def _run_checks(cfg: DictConfig, checks: list[Check], raw: DictConfig) -> None:
    """raw: the config before resolution, to name the key a bad value was typed as."""
    typed_as = OmegaConf.to_container(raw, resolve=False)
    for key, ok, allowed in checks:
        path, each = (key[:-3], True) if key.endswith("[*]") else (key, False)
        value = OmegaConf.select(cfg, path, throw_on_missing=False)
        if value is None and path not in NEVER_NULL:
            continue  # unset optional key, or an option that does not use this key
        for item in (value if each else [value]):
            try:
                good = ok(item)
            except TypeError:
                good = False
            if not good:
                raise GanCliError(f"invalid value {source_key(typed_as, path)}={shown(item)}: allowed is {allowed}")


def validate(cfg: DictConfig) -> DictConfig:
    """Return a typed, fully resolved copy of the train config, or raise GanCliError."""
    typed = _typed(cfg, TrainSchema, open_nodes=("dataset", "model", "optim"))
    _run_checks(typed, CHECKS, cfg)
    problem = config_problem(OmegaConf.to_container(typed), registered_only=False)  # what a checkpoint will hold
    if problem is not None:
        raise GanCliError(f"invalid config: {problem}")
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
    _run_checks(typed, SAMPLE_CHECKS, cfg)
    check_device(typed.device, "device")
    return typed


def validate_project(cfg: DictConfig) -> DictConfig:
    typed = _typed(cfg, ProjectSchema, open_nodes=("",), required=PROJECT_REQUIRED)  # open: `class`
    _run_checks(typed, PROJECT_CHECKS, cfg)
    if typed.pixel_weight == 0 and typed.perceptual_weight == 0:
        raise GanCliError("pixel_weight=0 and perceptual_weight=0 leave nothing to fit: set one of them > 0")
    check_device(typed.device, "device")
    return typed


def validate_data(cfg: DictConfig) -> DictConfig:
    typed = _typed(cfg, DataSchema, open_nodes=(), required=DATA_REQUIRED)
    _run_checks(typed, DATA_CHECKS, cfg)
    return typed


def validate_draw(cfg: DictConfig) -> DictConfig:
    typed = _typed(cfg, DrawSchema, open_nodes=(), required=DRAW_REQUIRED)
    _run_checks(typed, DRAW_CHECKS, cfg)
    if typed.pixel_weight == 0 and typed.perceptual_weight == 0:
        raise GanCliError("pixel_weight=0 and perceptual_weight=0 leave nothing to fit: set one of them > 0")
    check_device(typed.device, "device")
    return typed


def run_length(trainer: DictConfig, batches_per_epoch: int, batches_per_step: int) -> tuple[int, str]:
    """Steps of the run and which setting ends it, as Lightning does: `max_steps` alone decides;
    `epochs` alone decides; both set: the one reached first; neither: DEFAULT_EPOCHS. An epoch is
    `batches_per_epoch` batches of the task's data, a step draws `batches_per_step` of them."""
    epochs = trainer.epochs or (None if trainer.max_steps else DEFAULT_EPOCHS)
    by_epochs = max(epochs * batches_per_epoch // batches_per_step, 1) if epochs else None
    if by_epochs is None:
        return trainer.max_steps, f"trainer.max_steps={trainer.max_steps} ends the run"
    if not trainer.max_steps:
        source = f"trainer.epochs={epochs}" if trainer.epochs else f"trainer.epochs (default {epochs})"
        return by_epochs, f"{source} ends the run at step {by_epochs}"
    if trainer.max_steps <= by_epochs:
        return trainer.max_steps, (f"trainer.max_steps={trainer.max_steps} ends the run, before "
                                   f"trainer.epochs={epochs} ({by_epochs} steps)")
    return by_epochs, (f"trainer.epochs={epochs} ends the run at step {by_epochs}, before "
                       f"trainer.max_steps={trainer.max_steps}")


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


Built = TypeVar("Built")


@overload
def build(node: DictConfig, *args: Any, expect: TypeForm[Built], **kwargs: Any) -> Built: ...


@overload
def build(node: DictConfig, *args: Any, **kwargs: Any) -> Any: ...


def build(node: DictConfig, *args: Any, expect: Any = None, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, never recursive: the node's values and `kwargs` reach the target as
    plain Python values (a nested `_target_` is data, never built), so only the node's own target is
    called, also for a config read from a checkpoint. A GanCliError raised by a component comes
    through as itself (Hydra would wrap it), anything else names the config node.

    `expect`: what the node must make, a class or a runtime-checkable Protocol (components/
    contracts.py); the result is checked and typed as that, and anything else fails in one line.
    Without it the result is Any."""
    made = _instantiate(node, args, kwargs)
    if expect is not None and not isinstance(made, expect):
        raise GanCliError(f"cannot build {node.get('_target_', '?')} from the config: it made "
                          f"{type(made).__qualname__}{trained_by(made)}, not {getattr(expect, '__name__', expect)}")
    return made


def trained_by(made: object) -> str:
    """" (what task=X trains on)" for data made for one task (Domains, Pairs: their `trained_by`)."""
    owner = getattr(type(made), "trained_by", None)
    return f" (what {owner} trains on)" if isinstance(owner, str) else ""


def plain_dict(node: DictConfig) -> dict[str, Any]:
    """A node of keys as resolved plain Python values (dicts, lists, scalars)."""
    own = OmegaConf.to_container(node, resolve=True)
    assert isinstance(own, dict), "a component is a node of keys"
    return cast("dict[str, Any]", own)  # a config's keys are strings


def _instantiate(node: DictConfig, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    plain = {key: OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
             for key, value in kwargs.items()}
    config = {**plain_dict(node), **plain}
    try:
        return instantiate(config, *args, _recursive_=False, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, GanCliError):
            raise err.__cause__ from None
        cause = err.__cause__ if err.__cause__ is not None else err
        reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        target = node.get("_target_", "?")
        raise GanCliError(f"cannot build {target} from the config: {type(cause).__name__}: {reason}") from None
