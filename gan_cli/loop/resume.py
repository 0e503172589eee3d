"""What a checkpoint holds of a run, and how a run continues from one (`trainer.resume`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gan_cli.components.schedule import Schedules
from gan_cli.core.errors import GanCliError
from gan_cli.core.trusted import stored_config
from gan_cli.loop.checkpoint import (
    CheckpointDir,
    load_checkpoint,
    load_optimizer,
    load_weights,
    rng_state,
    set_rng_state,
)
from gan_cli.reporting.logging import flatten_config
from gan_cli.tasks.base import Task

log = logging.getLogger("gan_cli")

LEGACY_TASK = "gan_cli.tasks.image_gan.ImageGan"  # gan-cli/1 checkpoints had no task: all were this


def checkpoint_state(task: Task, schedules: Schedules, cfg: DictConfig, step: int, epoch: int,
                     best: float | None = None) -> dict[str, Any]:
    """Everything the run depends on, by the names the task declares. The data streams need no
    state: batch k is a pure function of (seed, k), so `step` fixes the position in each epoch.
    `best`: the primary metric's best score so far (best.pt's), so a resumed run replaces best.pt
    only with a better one."""
    return {
        **({"best": float(best)} if best is not None and math.isfinite(best) else {}),
        "step": step,
        "epoch": epoch,
        "networks": {name: network.state_dict() for name, network in task.networks.items()},
        "averages": {name: average.state_dict() for name, average in task.averages.items()},
        "optimizers": {name: optimizer.state_dict() for name, optimizer in task.optimizers.items()},
        "schedules": schedules.state_dict(),
        "config": OmegaConf.to_yaml(cfg),
        "rng": rng_state(),
    }


def config_differences(saved: DictConfig, current: DictConfig, group: str) -> list[str]:
    """`group.key: checkpoint -> config` for every setting of `group` that differs. A key the
    checkpoint lacks counts as null: the schema added it since (model.w_dim of a DCGAN is null)."""
    old = flatten_config(saved[group]) if group in saved else {}
    new = flatten_config(current[group])
    unset = str(None)  # how flatten_config writes null
    return [f"{group}.{key}: {old.get(key, unset)} -> {new.get(key, unset)}" for key in sorted(old.keys() | new.keys())
            if old.get(key, unset) != new.get(key, unset)]


def find_resume(spec: str | None, checkpoints: CheckpointDir) -> tuple[Path, dict[str, Any]] | None:
    """`trainer.resume`: a path, or `auto` = the newest loadable checkpoint of this run dir."""
    if not spec:
        return None
    if spec != "auto":
        return Path(spec), load_checkpoint(spec)
    found = checkpoints.newest_loadable()
    if found is None:
        log.info("trainer.resume=auto: no checkpoint in %s yet, starting fresh", checkpoints.folder)
    return found


def check_complete(state: dict[str, Any], path: Path, kinds: dict[str, Mapping[str, Any]]) -> None:
    """Every name a task declares (`kinds`: "networks" -> its networks, ...) is in the checkpoint."""
    for kind, names in kinds.items():
        missing = sorted(set(names) - set(state[kind]))
        if missing:
            raise GanCliError(f"checkpoint {path} is damaged or of another task: its {kind} lack {', '.join(missing)}")


def load_trained(task: Task, state: dict[str, Any], path: Path) -> None:
    """The checkpoint's weights of every network of `task` and of their EMA copies (resume, and
    gan-eval scoring an image -> image checkpoint with the task's own evaluation)."""
    trained: dict[str, Mapping[str, Any]] = {"networks": task.networks, "averages": task.averages}
    check_complete(state, path, trained)
    for kind, targets in trained.items():
        for name, target in targets.items():
            load_weights(target, state[kind][name], path, f"{kind[:-1]} {name!r}")


def restore(task: Task, schedules: Schedules, cfg: DictConfig, path: Path, state: dict[str, Any]) -> int:
    """Load a checkpoint into `task` and `schedules`; returns the step to continue from."""
    saved = stored_config(state, path)
    saved_task = OmegaConf.select(saved, "task._target_", default=LEGACY_TASK)
    differences = [f"task: {saved_task} -> {cfg.task._target_}"] if saved_task != cfg.task._target_ else []
    differences += config_differences(saved, cfg, "model")
    if differences:
        raise GanCliError(f"checkpoint {path} was trained with another config: {'; '.join(differences)}")
    check_complete(state, path, {"networks": task.networks, "averages": task.averages,
                                 "optimizers": task.optimizers})
    load_trained(task, state, path)
    for name, optimizer in task.optimizers.items():  # with the config's lr, betas, ... (not the checkpoint's)
        load_optimizer(optimizer, state["optimizers"][name], cfg.optim.get(name) or {}, path, f"optim.{name}")
    schedules.load_state_dict(state.get("schedules", {}), int(state["step"]))
    set_rng_state(state["rng"])
    log.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"])
