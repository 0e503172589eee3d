"""A checkpoint is data: what a loaded checkpoint must look like before anything uses it.

`torch.load(weights_only=True)` keeps a pickle from running code, but the checkpoint also holds
the run's config as YAML, and gan-sample rebuilds the task's networks (and, for `input=test`, its
dataset) from it with `instantiate`. Without a check, that YAML could name any importable callable
(`builtins.open`, `os.system`) at the top of a node or nested inside a value. So `stored_config`
checks every node gan-cli may build from a checkpoint: a `model` node's `_target_` must be one of
gan-cli's model classes, `task._target_` one of its task classes, `dataset._target_` one of its
loaders (and `dataset_class` a torchvision dataset), and everything else plain values (no
`_target_`/`_args_`/`_partial_` deeper down, no `${...}` interpolation, which would run resolvers
such as `oc.env`).

`check_structure` checks the keys and types every reader relies on, so a damaged or foreign
dict is one error line (and `trainer.resume=auto` falls back) instead of a KeyError later.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from gan_cli.errors import GanCliError

# A stored config may only build gan-cli's own classes and loaders: `gan_cli.models.<family>.<Class>`,
# `gan_cli.tasks.<family>.<Class>`, `gan_cli.data.load_<name>` / `gan_cli.domains.load_<name>`.
TRUSTED_TARGET = re.compile(r"^gan_cli\.models\.[a-z_][a-z0-9_]*\.[A-Z][A-Za-z0-9_]*$")
TRUSTED_TASK = re.compile(r"^gan_cli\.tasks\.[a-z_][a-z0-9_]*\.[A-Z][A-Za-z0-9_]*$")
TRUSTED_LOADER = re.compile(r"^gan_cli\.(data|domains)\.load_[a-z0-9_]+$")
TRUSTED_DATASET_CLASS = re.compile(r"^torchvision\.datasets\.[A-Z][A-Za-z0-9_]*$")
PLAIN = (int, float, bool, str, type(None))

# key -> type every gan-cli checkpoint has (see resume.checkpoint_state); gan-cli/1 had other keys
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "step": int, "epoch": int, "networks": dict, "averages": dict, "optimizers": dict, "config": str, "rng": dict,
}
LEGACY_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "step": int, "epoch": int, "generator": dict, "discriminator": dict, "opt_g": dict, "opt_d": dict,
    "config": str, "rng": dict,
}


class UntrustedCheckpoint(GanCliError):
    pass


def _defined_in(target: str, pattern: re.Pattern[str], kind: type | None) -> bool:
    """True when `target` matches `pattern` and names a class (a subclass of `kind`) or, with
    kind None, a function defined in that very module (imports only after the name matched)."""
    if not pattern.match(target):
        return False
    module_name, name = target.rsplit(".", 1)
    try:
        found = getattr(importlib.import_module(module_name), name, None)
    except ImportError:
        return False
    if kind is None:
        return callable(found) and not isinstance(found, type) and getattr(found, "__module__", "") == module_name
    return isinstance(found, type) and issubclass(found, kind) and found.__module__ == module_name


def _is_model_class(target: str) -> bool:
    return _defined_in(target, TRUSTED_TARGET, torch.nn.Module)


def _is_task_class(target: str) -> bool:
    return _defined_in(target, TRUSTED_TASK, object)


def _is_loader(target: str) -> bool:
    return _defined_in(target, TRUSTED_LOADER, None)


def _is_torchvision_dataset(target: str) -> bool:
    """`torchvision.datasets.<Class>`, a Dataset class torchvision exports there."""
    if not TRUSTED_DATASET_CLASS.match(target):
        return False
    import torchvision.datasets

    found = getattr(torchvision.datasets, target.rsplit(".", 1)[1], None)
    return isinstance(found, type) and issubclass(found, torch.utils.data.Dataset)


def _plain_problem(value: Any, where: str) -> str | None:
    """Why `value` is not plain data (scalars and lists of them), or None."""
    if isinstance(value, list):
        return next((p for i, item in enumerate(value) if (p := _plain_problem(item, f"{where}[{i}]"))), None)
    if isinstance(value, dict):
        named = f" naming _target_={value['_target_']!r}" if "_target_" in value else ""
        return f"{where} is a nested node{named}; only plain values are allowed"
    if not isinstance(value, PLAIN):
        return f"{where} is a {type(value).__name__}"
    if isinstance(value, str) and "${" in value:
        return f"{where} holds an interpolation {value!r}"
    return None


def trusted_node(node: Any, where: str, source: str | Path, allowed: Any = _is_model_class,
                 what: str = "gan-cli's model classes (gan_cli.models.*)") -> DictConfig:
    """`node` if it is safe to instantiate: `allowed(_target_)` (a gan_cli.models class by default)
    and every other key holds a plain value; else UntrustedCheckpoint naming `where`."""
    if not isinstance(node, DictConfig):
        raise UntrustedCheckpoint(f"checkpoint {source} was refused: its config has no {where} node")
    plain = OmegaConf.to_container(node, resolve=False)  # never resolve: interpolations are refused
    target = plain.get("_target_")
    if not isinstance(target, str) or not allowed(target):
        raise UntrustedCheckpoint(f"checkpoint {source} was refused: {where}._target_={target!r} is not one of {what}")
    for key, value in plain.items():
        if key == "_target_":
            continue
        problem = (f"{where}.{key} is a special key" if str(key).startswith("_") else
                   _plain_problem(value, f"{where}.{key}"))
        if problem:
            raise UntrustedCheckpoint(f"checkpoint {source} was refused: {problem}")
    return node


def stored_config(state: dict[str, Any], source: str | Path) -> DictConfig:
    """The checkpoint's config, parsed from its YAML, with every node gan-cli may build from it
    checked: `model.*` nodes, `task`, `dataset` (see the module docstring)."""
    try:
        config = OmegaConf.create(state["config"])
    except Exception as err:  # noqa: BLE001 - any YAML/type problem of a damaged file is one line
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GanCliError(f"checkpoint {source} is corrupt: its config is not readable YAML ({reason})") from None
    model = config.get("model") if isinstance(config, DictConfig) else None
    if not isinstance(model, DictConfig):
        raise UntrustedCheckpoint(f"checkpoint {source} was refused: its config has no model node")
    for key, value in OmegaConf.to_container(model, resolve=False).items():
        if isinstance(value, dict):  # a network: built by gan-sample
            trusted_node(model.get(key), f"model.{key}", source)
        elif problem := _plain_problem(value, f"model.{key}"):
            raise UntrustedCheckpoint(f"checkpoint {source} was refused: {problem}")
    if "task" in config:  # gan-cli/1 checkpoints had none (image_gan)
        trusted_node(config.task, "task", source, _is_task_class, "gan-cli's tasks (gan_cli.tasks.*)")
    if "dataset" in config:
        dataset = trusted_node(config.dataset, "dataset", source, _is_loader,
                               "gan-cli's dataset loaders (gan_cli.data.load_*, gan_cli.domains.load_*)")
        dataset_class = dataset.get("dataset_class")
        if dataset_class is not None and not _is_torchvision_dataset(str(dataset_class)):
            raise UntrustedCheckpoint(f"checkpoint {source} was refused: dataset.dataset_class={dataset_class!r} "
                                      "is not a torchvision dataset class")
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
    problems.append(_rng_problem(state["rng"]))
    problem = next((p for p in problems if p), None)
    if problem:
        raise GanCliError(f"checkpoint {source} is damaged: {problem}")
