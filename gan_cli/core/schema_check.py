"""The whole of a config against the schema (schema.py), as plain data: every key known, every value
of its declared type, a `_target_` only where gan-cli builds a component, no `${...}` interpolation.

A plain node is typed by its dataclass. A component node (a field marked `component()`) is typed by
its target's constructor: each key a named parameter (a catch-all `**kwargs` takes none), each value
of the parameter's annotation, and only plain values (scalars, lists of them), never a nested node.
Which targets a position takes is the registry: the targets conf/'s group options name there
(conf/model/dcgan.yaml names `model.generator`'s gan_cli.models.dcgan.Generator, ...), so adding a
component is a class and a YAML file, and a key added to conf/ without a schema entry fails the
tests that check every option of every group (tests/test_stored_config.py).

A checkpoint's config (trusted.py) must name registered targets only, and nothing named in it is
imported unless it is registered. The config of a new run (config.validate) comes from the user's
command line, which may name a class of their own (`loss._target_=mypkg.MyLoss`): its keys and
types are checked against that class.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from gan_cli.core.schema import CHECKED_AS, COMPONENT, TrainSchema

SPECIAL = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_")
LABELS = {"model.generator": "model classes", "model.discriminator": "model classes", "task": "tasks",
          "dataset": "dataset loaders"}  # how a refusal names a position's targets (default: components)
SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
Registry = dict[str, dict[str, frozenset[tuple[str, Any]]]]  # position -> target -> its special keys


def _collect(node: Any, where: str, found: Registry) -> None:
    if not isinstance(node, dict):
        return
    if isinstance(node.get("_target_"), str):
        specials = frozenset((k, v) for k, v in node.items() if k in SPECIAL and k != "_target_")
        found.setdefault(where, {})[node["_target_"]] = specials
    for key, value in node.items():
        if key != "defaults":
            _collect(value, f"{where}.{key}" if where else str(key), found)


@functools.cache
def registry() -> Registry:
    """position ("model.generator") -> {target: the special keys its option sets (`_partial_`)},
    from every option of every config group in conf/."""
    from gan_cli.apps.cli import CONFIG_DIR  # no torch, no Hydra run: only the path of conf/

    found: Registry = {}
    for path in sorted(Path(CONFIG_DIR).glob("*/*.yaml")):
        text = path.read_text()
        package = "" if "@package _global_" in "".join(text.splitlines()[:2]) else path.parent.name
        _collect(yaml.safe_load(text), package, found)
    return {position: targets for position, targets in found.items() if not position.startswith("hydra")}


def register(position: str, target: str) -> None:
    """Let checkpoints name `target` at `position` too (a class outside conf/, e.g. a test's)."""
    registry().setdefault(position, {})[target] = frozenset()


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _is_plain(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_plain(item) for item in value)
    return isinstance(value, (bool, int, float, str, type(None)))


def fits(value: Any, hint: Any) -> bool:
    """Whether a plain value is of an annotated type (int, float, str, bool, None, unions, lists)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return _is_plain(value)
    if origin in (Union, types.UnionType):
        return any(fits(value, arg) for arg in args)
    if hint in (None, type(None)):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float, str):
        numbers = (int, float) if hint is float else hint
        return isinstance(value, numbers) and not isinstance(value, bool)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return isinstance(value, list) and len(value) == len(args) and all(map(fits, value, args))
    if origin in SEQUENCES or hint in SEQUENCES:
        return isinstance(value, list) and all(fits(item, args[0] if args else Any) for item in value)
    return False  # a tensor, a module, a config object: nothing a config can hold


def allowed(hint: Any) -> str:
    """An annotation in words: `int | None` -> "an integer or null"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(allowed(arg) for arg in args if fits_something(arg))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null",
             Any: "a plain value"}
    if hint in names:
        return names[hint]
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} ({allowed(args[0])})"
    if origin in SEQUENCES or hint in SEQUENCES:
        return f"a list of ({allowed(args[0]) if args else 'plain values'})"
    if dataclasses.is_dataclass(hint):
        return f"a node of {', '.join(f.name for f in dataclasses.fields(hint))}"
    return getattr(hint, "__name__", str(hint))


def fits_something(hint: Any) -> bool:
    return hint in (bool, int, float, str, type(None), Any) or typing.get_origin(hint) in SEQUENCES \
        or dataclasses.is_dataclass(hint)


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        target = value.get("_target_")
        return "a nested node" + (f" naming _target_={target!r}" if target is not None else "")
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _interpolation(value: Any, where: str) -> str | None:
    """The first `${...}` in a value (a list's items too), else None."""
    if isinstance(value, str) and "${" in value:
        return f"{where} holds an interpolation {value!r}; a stored config holds resolved values only"
    if isinstance(value, list):
        return next((p for i, item in enumerate(value) if (p := _interpolation(item, f"{where}[{i}]"))), None)
    return None


def _plain_problem(value: Any, where: str, wanted: str = "plain values only") -> str | None:
    """Why a value is not plain data (scalars and lists of them), naming the nested node or the
    interpolation, or None."""
    if isinstance(value, list):
        return next((p for i, item in enumerate(value) if (p := _plain_problem(item, f"{where}[{i}]", wanted))), None)
    if isinstance(value, dict):
        return f"{where} is {_shown(value)}; allowed is {wanted}"
    return _interpolation(value, where)


def _value_problem(value: Any, hint: Any, where: str, registered_only: bool) -> str | None:
    schema = next((arg for arg in (hint, *typing.get_args(hint)) if isinstance(arg, type)
                   and dataclasses.is_dataclass(arg)), None)
    if schema is not None and isinstance(value, dict):
        return _node_problem(value, schema, where, registered_only)
    if (problem := _plain_problem(value, where, allowed(hint))) is not None:
        return problem
    return None if fits(value, hint) else f"{where} holds {_shown(value)}; allowed is {allowed(hint)}"


def _keys_problem(node: dict[Any, Any], where: str) -> str | None:
    for key in node:
        if not isinstance(key, str) or "${" in key:
            return f"{_join(where, key)} is not a key (a key is a plain name)"
    return None


def _node_problem(node: dict[str, Any], schema: type, where: str, registered_only: bool) -> str | None:
    """A plain node: each key a field of `schema`, of its type; component fields as components."""
    fields = {field.name: field for field in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    if (problem := _keys_problem(node, where)) is not None:
        return problem
    for key, value in node.items():
        path = _join(where, key)
        if key not in fields:
            return f"{path} is not a key of {where or 'the config'} (allowed: {', '.join(fields)})"
        hint = fields[key].metadata.get(CHECKED_AS, hints[key])
        problem = (component_problem(value, path, hint, registered_only) if fields[key].metadata.get(COMPONENT)
                   else _value_problem(value, hint, path, registered_only))
        if problem is not None:
            return problem
    return None


def _parameters(target: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    """The named parameters of a class or function, and their annotations."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    parameters = {n: p for n, p in inspect.signature(target).parameters.items() if p.kind in named}
    function = next(vars(k)["__init__"] for k in target.__mro__ if "__init__" in vars(k)) \
        if isinstance(target, type) else target  # a class: the __init__ it inherits or defines
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - an annotation that does not evaluate: no type known, plain values only
        hints = {}
    return parameters, hints


def _target_problem(node: dict[str, Any], where: str, registered_only: bool) -> tuple[Any, str | None]:
    """The target object of a component node, or why it is refused (None, None: not checkable)."""
    from hydra.utils import get_object

    target, known = node.get("_target_"), registry().get(where, {})
    if not isinstance(target, str):
        return None, f"{where}._target_ is {_shown(target)}; allowed is a class name"
    if registered_only and target not in known:
        label = LABELS.get(where, f"{where} components")
        return None, f"{where}._target_={target!r} is not one of gan-cli's {label} ({', '.join(sorted(known))})"
    for key, value in node.items():
        registered = any(k == key and type(v) is type(value) and v == value for k, v in known.get(target, ()))
        if key.startswith("_") and key != "_target_" and (registered_only or key not in SPECIAL) and not registered:
            return None, f"{where}.{key} is a special key; allowed here is only _target_ and the constructor's " \
                         "parameters"
    try:
        return get_object(target), None
    except Exception:  # noqa: BLE001 - an unimportable name of a new run's config: building it says why
        return None, None


def component_problem(node: Any, where: str, hint: Any, registered_only: bool = True) -> str | None:
    """A component node at position `where`: a registered target (any importable one with
    registered_only=False) and, for each key, a field of the position's dataclass (`hint`: the
    dataset's) or a named parameter of the target, with a plain value of its type."""
    if not isinstance(node, dict) or "_target_" not in node:
        return f"{where} holds {_shown(node)}; allowed is a node with a _target_ gan-cli builds"
    if (problem := _keys_problem(node, where)) is not None:
        return problem
    target, problem = _target_problem(node, where, registered_only)
    if target is None:
        return problem
    parameters, hints = _parameters(target)
    schema = hint if dataclasses.is_dataclass(hint) else None
    fields = {f.name: f.metadata.get(CHECKED_AS, typing.get_type_hints(schema)[f.name])
              for f in dataclasses.fields(schema)} if schema else {}
    for key, value in node.items():
        if key.startswith("_"):
            continue
        path = _join(where, key)
        if (problem := _plain_problem(value, path)) is not None:
            return problem
        if key in fields:
            problem = _value_problem(value, fields[key], path, registered_only)
        elif key in parameters:
            problem = _value_problem(value, hints.get(key, Any), path, registered_only)
        else:
            names = ", ".join([*fields, *(n for n in parameters if n not in fields)]) or "none"
            problem = f"{path} is not a parameter of {node['_target_']} (allowed: {names})"
        if problem is not None:
            return problem
    return None


def config_problem(config: Any, registered_only: bool = True) -> str | None:
    """Why a train config (plain containers, as OmegaConf.to_container gives it) does not fit the
    schema, in one line naming the key, or None."""
    if not isinstance(config, dict):
        return f"the config is {_shown(config)}, not a node of keys"
    return _node_problem(config, TrainSchema, "", registered_only)
