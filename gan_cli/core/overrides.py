"""Command-line keys checked before Hydra runs: a key the config does not have is one line that
names the closest valid key. Hydra's own answer to `optim.lrr=1e-3` is to suggest
`+optim.lrr=1e-3`, and following that advice trains with the key silently ignored.

A key is valid when it is in the config composed from the same group choices without the user's
key overrides (so keys that only some options carry, e.g. `dataset.num_samples` of
`dataset=fake`, count exactly when that option is chosen), or a field of the typed schema, or,
under a node built from a `_target_`, a named argument of that target (`+optim.g.amsgrad=true`
reaches torch.optim.Adam; a catch-all `**kwargs` does not count, it would swallow typos).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from gan_cli.core.errors import GanCliError

MAX_COMPOSITIONS = 16  # group sweeps are checked one option at a time, not as their full product


def group_names(config_dir: str) -> set[str]:
    """The config groups are the folders of conf/ (Hydra's own groups start with hydra/)."""
    return {path.name for path in Path(config_dir).iterdir() if path.is_dir()}


def command_line_overrides(argv: list[str]) -> list[str] | None:
    """The overrides of a gan-train/gan-sample command line, or None when Hydra will not compose
    our config with them (--help, --hydra-help, --info, another config name or directory)."""
    from hydra._internal.utils import get_args_parser  # Hydra's own parser: flags that take values

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:  # a malformed flag: Hydra reports it
        return None
    if args.help or args.hydra_help or args.info or args.shell_completion or args.config_name \
            or args.config_path or args.config_dir or args.experimental_rerun:
        return None
    return list(args.overrides)


def choice_variants(group_overrides: list[Override]) -> Iterator[list[str]]:
    """Group choices to compose with: the first value of every swept group, then each other value
    of one swept group at a time (a key valid for some option of a sweep passes)."""
    fixed = [o.input_line or "" for o in group_overrides if not o.is_sweep_override()]
    swept = [(o.get_key_element(), list(o.sweep_string_iterator())) for o in group_overrides
             if o.is_choice_sweep() and o.value_type is not None and "GLOB" not in o.value_type.name]
    first = [f"{key}={values[0]}" for key, values in swept]
    yield fixed + first
    for index, (key, values) in enumerate(swept):
        for value in values[1:]:
            yield fixed + first[:index] + [f"{key}={value}"] + first[index + 1:]


def config_paths(node: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a plain container, nodes and leaves alike."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}{key}"
            yield path
            yield from config_paths(value, f"{path}.")


def schema_paths(schema: type, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a schema dataclass (nested schemas come from their default_factory)."""
    for item in dataclasses.fields(schema):
        path = f"{prefix}{item.name}"
        yield path
        if item.default_factory is not dataclasses.MISSING:
            value = item.default_factory()
            if dataclasses.is_dataclass(value):
                yield from schema_paths(type(value), f"{path}.")


def target_accepts(config: DictConfig, key: str) -> bool:
    """Whether `key`'s parent node is built from a `_target_` that takes `key`'s last part."""
    parent, _, name = key.rpartition(".")
    target = OmegaConf.select(config, f"{parent}._target_" if parent else "_target_", default=None)
    if not isinstance(target, str):
        return False
    from hydra.utils import get_object

    try:
        parameters = inspect.signature(get_object(target)).parameters
    except (ImportError, ValueError, TypeError, AttributeError):
        return False
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return name in parameters and parameters[name].kind in named


def unknown_key_message(override: Override, valid: set[str], script: str, groups: set[str]) -> str:
    """The closest valid key; when that is a config group (`modle=dcgan`), the group choice."""
    key = override.key_or_group.split("[", 1)[0]
    candidates = sorted(k for k in valid if not k.rpartition(".")[2].startswith("_"))  # not _target_
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    ours = groups - {"hydra"}  # conf/hydra/ holds options of Hydra's own groups (hydra/help)
    if close and close[0] in ours:
        return unknown_group_message(override, close[0], ours, "the folders of conf/")
    hint = f"did you mean {close[0]}?" if close else f"`{script} --cfg job` prints every key"
    return f"unknown key {key}: {hint}"


def unknown_group_message(override: Override, close: str | None, groups: Iterable[str], where: str) -> str:
    """`modle=dcgan`, `hydra/laucher=joblib`: the group meant, with the user's choice, and every group."""
    choice = (override.input_line or "").partition("=")[2]
    hint = f"did you mean {close}={choice}? " if close else ""
    return (f"unknown config group {override.key_or_group}: {hint}the groups are {', '.join(sorted(groups))} "
            f"({where})")


def is_key(override: Override, groups: set[str]) -> bool:
    """`loss=bce` picks an option; `loss.margin=1`, `optim.lr=1e-3` set keys."""
    if override.is_hydra_override() or override.is_delete() or override.package is not None:
        return False
    return override.key_or_group not in groups


def group_options(config_dir: str, group: str) -> list[str]:
    return sorted(path.stem for path in (Path(config_dir) / group).glob("*.yaml"))


def chosen_options(override: Override) -> list[str]:
    """The option names `model=dcgan` or a sweep `model=mlp,dcgan` picks (globs and ranges: none)."""
    if override.is_sweep_override():
        if not override.is_choice_sweep() or (override.value_type is not None and "GLOB" in override.value_type.name):
            return []
        return [str(value) for value in override.sweep_string_iterator()]
    value = override.value()
    return [value] if isinstance(value, str) else []


def hydra_groups(config_dir: str) -> dict[str, list[str]]:
    """Hydra's own groups (hydra/launcher, hydra/sweeper, ...) and their options, as Hydra finds
    them: its installed plugins' and conf/hydra/'s."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        return {f"hydra/{group}": sorted(loader.get_group_options(f"hydra/{group}"))
                for group in loader.list_groups("hydra")}


def check_choice(override: Override, group: str, options: list[str], where: str) -> None:
    """`model=dcgann` is one line naming the closest option and all of them (Hydra's own answer is
    a multi-line message with its search path and exit 1)."""
    for chosen in chosen_options(override):
        if chosen not in options and chosen != "null":
            close = difflib.get_close_matches(chosen, options, n=1, cutoff=0.5)
            hint = f"did you mean {group}={close[0]}? " if close else ""
            raise GanCliError(f"unknown option {group}={chosen}: {hint}the options of {group} are "
                              f"{', '.join(options)} ({where})")


def check_choices(parsed: list[Override], groups: set[str], config_dir: str) -> None:
    """Every group choice of the command line: ours (conf/<group>/) and Hydra's own (hydra/...)."""
    own: dict[str, list[str]] = {}
    for override in parsed:
        name = override.key_or_group
        if override.is_delete() or override.package is not None:
            continue
        if name.startswith("hydra/"):
            own = own or hydra_groups(config_dir)
            if name not in own:
                close = difflib.get_close_matches(name, list(own), n=1, cutoff=0.6)
                raise GanCliError(unknown_group_message(override, close[0] if close else None, own,
                                                        "Hydra's own"))
            check_choice(override, name, own[name], "Hydra's and its installed plugins'")
        elif name in groups and not override.is_hydra_override():
            check_choice(override, name, group_options(config_dir, name), f"conf/{name}/")


def check_overrides(argv: list[str], config_dir: str, config_name: str, schema: type, script: str) -> None:
    """Raise GanCliError for a command-line key that the config does not have (with or without `+`),
    naming the closest valid key; or for `+key` on a key that is already there."""
    overrides = command_line_overrides(argv)
    if not overrides:
        return
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # a syntax error: Hydra's message shows where it is
        return
    groups = group_names(config_dir)
    check_choices(parsed, groups, config_dir)
    keys = [o for o in parsed if is_key(o, groups)]
    if not keys:
        return  # nothing to check: no extra composition
    choices = [o for o in parsed if o.key_or_group in groups and not o.is_delete()]
    composed = compose_variants(config_dir, config_name, choices)
    if not composed:
        return  # the choices themselves do not compose: Hydra names the missing option
    present = [set(config_paths(OmegaConf.to_container(config, resolve=False))) for config in composed]
    valid = set(schema_paths(schema)).union(*present)
    for override in keys:
        key = override.key_or_group.split("[", 1)[0]
        if override.is_add() and any(key in paths for paths in present):
            raise GanCliError(f"{key} is already in the config: set it without the +, e.g. "
                              f"{(override.input_line or '').lstrip('+')}")
        if key not in valid and not any(target_accepts(config, key) for config in composed):
            raise GanCliError(unknown_key_message(override, valid, script, groups))


def compose_variants(config_dir: str, config_name: str, choices: list[Override]) -> list[DictConfig]:
    """The config composed with each variant of the group choices (and none of the key overrides)."""
    from hydra import compose, initialize_config_dir

    composed = []
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        for variant in itertools.islice(choice_variants(choices), MAX_COMPOSITIONS):
            try:
                composed.append(compose(config_name, overrides=variant))
            except Exception:  # an unknown option: Hydra's own error lists the options
                continue
    return composed
