"""What tells runs apart, for TensorBoard's HParams table: the option chosen in every config
group, by its name (`loss=bce`, not `loss._target_=gan_cli.components.losses.NonSaturatingLoss`), then the
keys the user set on the command line (`optim.lr=0.0001`), at their resolved values. Keys
nobody changed stay out of the default columns; the whole config is in the Text tab.

Under Hydra (gan-train, every sweep job) the choices are `hydra.runtime.choices` and the user's
keys `hydra.overrides.task`. train() called directly has neither: the table then shows what the
config itself says of each group (a `name`, else its class).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

HParamValue = int | float | str


def as_hparam(value: Any) -> HParamValue:
    """The HParams tab takes numbers and strings; booleans as YAML writes them (torch's summary
    would turn them into 0.0 and 1.0), anything else as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, (int, float, str)) else str(value)


def hydra_choices_and_overrides() -> tuple[dict[str, Any], list[str]] | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return dict(hydra_cfg.runtime.choices), list(hydra_cfg.overrides.task)


def config_choices(cfg: DictConfig) -> dict[str, str]:
    """Without Hydra: each group node's `name`, else the class its `_target_` names."""
    choices = {}
    for group, node in cfg.items():
        if not isinstance(node, DictConfig):
            continue
        target = node.get("_target_")
        name = node.get("name") or (str(target).rsplit(".", 1)[-1] if target else None)
        if name:
            choices[str(group)] = str(name)
    return choices


def set_keys(cfg: DictConfig, overrides: list[str], groups: set[str]) -> dict[str, HParamValue]:
    """`key: resolved value` for every key (not group) the overrides set or added."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    values: dict[str, HParamValue] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if override.is_delete() or key in groups or override.is_hydra_override():
            continue
        values[key] = as_hparam(OmegaConf.select(cfg, key, default=None))
    return values


def run_hparams(cfg: DictConfig) -> dict[str, HParamValue]:
    """The HParams columns of one run: group choices by name, then the keys the user set."""
    found = hydra_choices_and_overrides()
    if found is None:
        return dict(config_choices(cfg))
    choices, overrides = found
    # Hydra's own groups (hydra/launcher, ...) and unused optional groups (experiment: null) stay out.
    chosen = {group: as_hparam(option) for group, option in choices.items()
              if option is not None and not group.startswith("hydra/")}
    return {**chosen, **set_keys(cfg, overrides, set(choices))}
