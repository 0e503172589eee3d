"""A checkpoint is data: what a loaded checkpoint must look like before anything uses it.

`torch.load(weights_only=True)` keeps a pickle from running code, but the checkpoint also holds
the run's config as YAML, and gan-sample rebuilds the task's networks (and, for `input=test`, its
dataset) from it. Without a check, that YAML could name any importable callable (`builtins.open`,
`os.system`) at the top of a node or nested inside any value that reaches a constructor
(`task.scale`), or hold an interpolation whose resolver runs (`${oc.env:HOME}`). So `stored_config`
checks the whole config against the schema before anything reads it (schema_check.py): every key
known, every value a plain value of its declared type, `_target_` only at the positions where
gan-cli builds a component and only naming a target conf/ registers there, no interpolation. And
config.build never builds recursively, so even a value that slipped through is never called.

`check_structure` checks the keys and types every reader relies on, so a damaged or foreign
dict is one error line (and `trainer.resume=auto` falls back) instead of a KeyError later.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from gan_cli.core.errors import GanCliError
from gan_cli.core.schema_check import component_problem, config_problem

TRUSTED_DATASET_CLASS = re.compile(r"^torchvision\.datasets\.[A-Z][A-Za-z0-9_]*$")
PLAIN = (int, float, bool, str, type(None))
NEEDED = ("model.generator", "model.discriminator", "dataset")  # what gan-sample rebuilds; in every checkpoint

# key -> type every gan-cli checkpoint has (see resume.checkpoint_state); gan-cli/1 had other keys
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "step": int, "epoch": int, "networks": dict, "averages": dict, "optimizers": dict, "config": str, "rng": dict,
}
LEGACY_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "step": int, "epoch": int, "generator": dict, "discriminator": dict, "opt_g": dict, "opt_d": dict,
    "config": str, "rng": dict,
}
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when installed: ~10x faster
SCHEDULE_STATE = {"last_epoch": int}  # schedule.Schedules.state_dict() of each optimizer
# Modules of components that moved into packages (a checkpoint's `_target_`s name the module of
# the code that wrote it): old module -> where it lives now. Only a rename; the result is checked as any target.
MOVED_MODULES = {
    "gan_cli.data": "gan_cli.data.datasets",
    "gan_cli.domains": "gan_cli.data.domains",
    "gan_cli.losses": "gan_cli.components.losses",
    "gan_cli.regularizers": "gan_cli.components.regularizers",
    "gan_cli.augment": "gan_cli.components.augment",
    "gan_cli.diversity": "gan_cli.components.diversity",
    "gan_cli.ema": "gan_cli.components.ema",
    "gan_cli.schedule": "gan_cli.components.schedule",
}


class UntrustedCheckpoint(GanCliError):
    pass


def _is_torchvision_dataset(target: str) -> bool:
    """`torchvision.datasets.<Class>`, a Dataset class torchvision exports there."""
    if not TRUSTED_DATASET_CLASS.match(target):
        return False
    import torchvision.datasets

    found = getattr(torchvision.datasets, target.rsplit(".", 1)[1], None)
    return isinstance(found, type) and issubclass(found, torch.utils.data.Dataset)


def trusted_node(node: Any, where: str, source: str | Path) -> DictConfig:
    """`node`, a component node at position `where` (`model.generator`), if a checkpoint may hold
    it; else UntrustedCheckpoint naming `where`."""
    plain = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    problem = component_problem(plain, where, None)
    if problem is not None:
        raise UntrustedCheckpoint(f"checkpoint {source} was refused: {problem}")
    return node


def with_current_targets(node: Any) -> Any:
    """`node` with every `_target_` of a moved module renamed to the module's current place."""
    if isinstance(node, dict):
        renamed = {key: with_current_targets(value) for key, value in node.items()}
        target = renamed.get("_target_")
        if isinstance(target, str) and "." in target:
            module, name = target.rsplit(".", 1)
            renamed["_target_"] = f"{MOVED_MODULES.get(module, module)}.{name}"
        return renamed
    return [with_current_targets(value) for value in node] if isinstance(node, list) else node


def with_current_options(config: Any) -> Any:
    """A config from before each family's options moved under `task:`: SRGAN's top-level `sr:`
    node and image_gan's `trainer.d_steps` (the only task that read it) join the task's node."""
    if not isinstance(config, dict):
        return config
    config = dict(config)
    task = config.get("task")
    trainer = config.get("trainer")
    sr = config.pop("sr", None)  # null in the other tasks' configs
    if isinstance(task, dict) and isinstance(sr, dict):
        task = {**task, **sr}
    if isinstance(trainer, dict) and "d_steps" in trainer:
        config["trainer"] = {k: v for k, v in trainer.items() if k != "d_steps"}
        if isinstance(task, dict) and str(task.get("_target_", "")).endswith(".image_gan.ImageGan"):
            task = {**task, "d_steps": trainer["d_steps"]}
    if task is not None:
        config["task"] = task
    return config


def stored_config(state: dict[str, Any], source: str | Path) -> DictConfig:
    """The checkpoint's config, parsed from its YAML and checked as a whole against the schema
    (see the module docstring); UntrustedCheckpoint naming the first key that does not fit."""
    try:  # plain YAML (as OmegaConf.to_yaml wrote it): nothing is resolved or built while parsing
        plain = yaml.load(state["config"], Loader=YAML_LOADER)
    except yaml.YAMLError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GanCliError(f"checkpoint {source} is corrupt: its config is not readable YAML ({reason})") from None
    plain = with_current_options(with_current_targets(plain))
    problem = config_problem(plain)
    if problem is None:
        config = OmegaConf.create(plain)
        missing = next((key for key in NEEDED if OmegaConf.select(config, key, default=None) is None), None)
        dataset_class = OmegaConf.select(config, "dataset.dataset_class", default=None)
        if missing is not None:
            problem = f"its config has no {missing} node"
        elif dataset_class is not None and not _is_torchvision_dataset(str(dataset_class)):
            problem = f"dataset.dataset_class={dataset_class!r} is not a torchvision dataset class"
    if problem is not None:
        raise UntrustedCheckpoint(f"checkpoint {source} was refused: {problem}")
    return config


def _weights_problem(value: Any, name: str) -> str | None:
    """A state_dict: tensors, and plain `_extra_state` values (the image pool's fill count)."""
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and (isinstance(v, torch.Tensor) or (k.endswith("_extra_state") and
                                                                    isinstance(v, PLAIN)))
            for k, v in value.items()):
        return f"{name} is not a dict of tensors"
    return None


def _optimizer_problem(value: dict[str, Any], name: str) -> str | None:
    groups = value.get("param_groups")
    if not isinstance(value.get("state"), dict) or not isinstance(groups, list) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        return f"{name} is not an optimizer state"
    return None


def _rng_problem(rng: dict[str, Any]) -> str | None:
    numpy_state, python_state = rng.get("numpy"), rng.get("python")
    ok = (isinstance(rng.get("torch"), torch.Tensor) and rng["torch"].dtype == torch.uint8
          and rng["torch"].shape == torch.get_rng_state().shape
          and isinstance(rng.get("cuda"), list) and all(isinstance(t, torch.Tensor) for t in rng["cuda"])
          and isinstance(numpy_state, dict) and isinstance(numpy_state.get("keys"), torch.Tensor)
          and numpy_state["keys"].shape == (624,) and isinstance(numpy_state.get("pos"), int)
          and isinstance(numpy_state.get("has_gauss"), int) and isinstance(numpy_state.get("cached"), float)
          and isinstance(python_state, tuple) and len(python_state) == 3 and isinstance(python_state[1], tuple)
          and len(python_state[1]) == 625 and all(isinstance(x, int) for x in python_state[1]))
    return None if ok else "rng is not a set of RNG states"


def _named(value: dict[str, Any], kind: str, check: Any) -> list[str | None]:
    return [check(item, f"{kind}[{name!r}]") if isinstance(name, str) else f"{kind} has a key {name!r}"
            for name, item in value.items()]


def _schedules_problem(schedules: Any) -> str | None:
    """{optimizer name: {"last_epoch": int}}, as Schedules.state_dict() writes it."""
    if not isinstance(schedules, dict):
        return f"schedules is a {type(schedules).__name__}, not a dict of schedule states"
    for name, value in schedules.items():
        if not isinstance(name, str) or not isinstance(value, dict):
            return f"schedules[{name!r}] is not a schedule state (a dict with last_epoch)"
        for key, item in value.items():
            kind = SCHEDULE_STATE.get(key)
            if kind is None or not isinstance(item, kind) or isinstance(item, bool):
                return (f"schedules[{name!r}][{key!r}] holds {type(item).__name__} {item!r:.60}; allowed is "
                        f"{', '.join(SCHEDULE_STATE)}: an integer")
    return None


def check_structure(state: dict[str, Any], source: str | Path) -> None:
    """Every key a reader uses, with its type; GanCliError naming the first problem. Both formats."""
    legacy = state.get("format") == "gan-cli/1"
    for key, kind in (LEGACY_REQUIRED if legacy else REQUIRED).items():
        if key not in state:
            raise GanCliError(f"checkpoint {source} is damaged: it has no {key!r}")
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise GanCliError(f"checkpoint {source} is damaged: {key!r} is a {type(state[key]).__name__}")
    if legacy:
        problems = [_weights_problem(state[k], k) for k in ("generator", "discriminator")]
        if "generator_ema" in state:
            problems.append(_weights_problem(state["generator_ema"], "generator_ema"))
        problems += [_optimizer_problem(state[k], k) for k in ("opt_g", "opt_d")]
    else:
        problems = [*_named(state["networks"], "networks", _weights_problem),
                    *_named(state["averages"], "averages", _weights_problem),
                    *_named(state["optimizers"], "optimizers",
                            lambda v, n: _optimizer_problem(v, n) if isinstance(v, dict) else f"{n} is not a dict")]
    if "schedules" in state:  # gan-cli/2 checkpoints before learning-rate schedules had none
        problems.append(_schedules_problem(state["schedules"]))
    problems.append(_rng_problem(state["rng"]))
    if "best" in state and (not isinstance(state["best"], float) or not math.isfinite(state["best"])):
        problems.append(f"'best' holds {state['best']!r:.60}; allowed is a finite float (the best score so far)")
    problem = next((p for p in problems if p), None)
    if problem:
        raise GanCliError(f"checkpoint {source} is damaged: {problem}")
