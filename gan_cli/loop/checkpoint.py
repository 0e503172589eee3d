"""Checkpoints: plain tensors and containers only, so loading never needs to unpickle code.

A checkpoint is a dict with FORMAT, the step, the state_dicts of the task's networks, EMA copies,
optimizers and learning-rate schedules, each a dict by the names the task declares
(`networks["generator"]`, `optimizers["d"]`), the resolved config as YAML, and the RNG states.
Checkpoints of format gan-cli/1 (before tasks: `generator`, `discriminator`, `generator_ema`,
`opt_g`, `opt_d`) are read as the image_gan task's. It is written to a temp file in the same folder,
fsynced and renamed, so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import errno
import io
import logging
import math
import os
import pickle
import random
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from gan_cli.core import integrity
from gan_cli.core.errors import GanCliError
from gan_cli.core.trusted import check_structure, stored_config

log = logging.getLogger("gan_cli")

FORMAT = "gan-cli/2"
LEGACY_FORMAT = "gan-cli/1"


def upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A gan-cli/1 checkpoint in the current layout (its networks are image_gan's)."""
    if state.get("format") != LEGACY_FORMAT:
        return state
    old = dict(state)
    networks = {"generator": old.pop("generator"), "discriminator": old.pop("discriminator")}
    averages = {"generator": old.pop("generator_ema", networks["generator"])}
    optimizers = {"g": old.pop("opt_g"), "d": old.pop("opt_d")}
    return {**old, "format": FORMAT, "networks": networks, "averages": averages, "optimizers": optimizers}


def rng_state() -> dict[str, Any]:
    state = np.random.get_state()
    assert isinstance(state, tuple), "numpy's legacy form, its default"
    kind, keys, position, has_gauss, cached = state
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached"]))
    random.setstate(state["python"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialize in memory, then write: torch's zip writer reports a full disk as
    `RuntimeError: unexpected pos`, a plain write as OSError(ENOSPC), which the caller can name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    payload = {"format": FORMAT, **state}
    torch.save({**payload, integrity.KEY: integrity.digest(payload)}, buffer)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            data = buffer.getbuffer()
            while data:
                data = data[os.write(handle, data):]
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(tmp_name, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def nonfinite_tensors(state: dict[str, Any]) -> list[str]:
    """`net.key` of every float tensor with NaN or inf among the networks' weights AND buffers
    (a diverging BatchNorm's running_var) and the EMA copies."""
    return [f"{kind}.{net}.{key}" for kind in ("networks", "averages") for net, weights in state.get(kind, {}).items()
            for key, tensor in weights.items()
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(tensor.isfinite().all())]


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Temp files of saves that were killed mid-write. Only safe while no other process writes
    here: called by the holder of the run dir's lock (gan_cli/loop/runlock.py)."""
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temp file(s) of interrupted saves from %s", len(stale), folder)
    return stale


class CheckpointDir:
    """checkpoints/step_NNNNNNN.pt for the newest `keep` saves, and last.pt, a hard link to the
    newest (no second copy on disk). Each file is complete or absent, never half written."""

    def __init__(self, folder: Path, keep: int):
        self.folder, self.keep = folder, keep

    def step_files(self) -> list[Path]:
        """Only files: a folder or fifo someone named step_N.pt is neither loaded nor rotated away."""
        return sorted(p for p in self.folder.glob("step_*.pt") if p.is_file())

    def kept(self) -> str:
        names = sorted(p.name for p in self.folder.glob("*.pt")) if self.folder.is_dir() else []
        if not names:
            return f"no earlier checkpoint in {self.folder}"
        return f"kept {', '.join(names)} in {self.folder} (intact)"

    def _write(self, path: Path, state: dict[str, Any], step: int) -> None:
        """save_checkpoint, refusing non-finite tensors; every failure is one line."""
        broken = nonfinite_tensors(state)
        if broken:
            raise NonFiniteState(f"{', '.join(broken[:3])} {'is' if len(broken) == 1 else 'are'} not finite at "
                                 f"step {step}: stopped without saving; {self.kept()}")
        try:
            save_checkpoint(path, state)
        except OSError as err:
            reason = err.strerror or str(err)
            what = f"disk full ({reason})" if err.errno in (errno.ENOSPC, errno.EDQUOT) else reason
            raise GanCliError(f"could not write checkpoint {path}: {what}; the partial file was removed, "
                              f"{self.kept()}") from None

    def save(self, state: dict[str, Any], step: int) -> Path:
        path = self.folder / f"step_{step:07d}.pt"
        self._write(path, state, step)
        try:
            link = self.folder / ".last.pt.tmp"
            link.unlink(missing_ok=True)
            os.link(path, link)
            os.replace(link, self.folder / "last.pt")
        except OSError as err:
            raise GanCliError(f"could not link {self.folder / 'last.pt'} to {path.name}: {err.strerror or err}; "
                              f"{self.kept()}") from None
        for old in self.step_files()[: -self.keep]:
            old.unlink()
        return path

    def save_best(self, state: dict[str, Any]) -> Path:
        """best.pt: the checkpoint with the best FID so far (same atomic write)."""
        path = self.folder / "best.pt"
        self._write(path, state, int(state.get("step", 0)))
        return path

    def best_score(self) -> float:
        """The score best.pt holds (inf when there is none, it predates the key or is damaged): a
        resumed run replaces best.pt only with a better one."""
        path = self.folder / "best.pt"
        if not path.is_file():
            return math.inf
        try:
            return float(load_checkpoint(path).get("best", math.inf))
        except GanCliError as err:
            log.warning("%s; the next evaluation writes a new best.pt", err)
            return math.inf

    def newest_loadable(self) -> tuple[Path, dict[str, Any]] | None:
        """The loadable checkpoint with the highest step, skipping (and reporting) damaged ones.
        last.pt is normally a link to the newest step file, but a copy, a stale file or a
        foreign file may sit there: its step is known only after loading it."""
        last, newest = self.folder / "last.pt", None
        if last.exists() or last.is_symlink():
            newest = self._try_load(last)
        newer = [p for p in reversed(self.step_files()) if newest is None or _name_step(p) > newest[1]["step"]]
        for path in newer:
            if (found := self._try_load(path)) is not None and (newest is None or found[1]["step"] > newest[1]["step"]):
                return found
        return newest

    @staticmethod
    def _try_load(path: Path) -> tuple[Path, dict[str, Any]] | None:
        try:
            return path, load_checkpoint(path)
        except GanCliError as err:
            log.warning("skipping %s", err)
            return None


class NonFiniteState(GanCliError):
    pass


def _name_step(path: Path) -> int:
    try:
        return int(path.stem.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def _unpickling_reason(err: Exception) -> str:
    """What torch refused, without its advice to retry with weights_only=False."""
    lines = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line or "global" in line]
    lines = [line for line in lines if "weights_only" not in line]
    return lines[0] if lines else "it names code to run"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True: a pickle that would run code is refused, not executed. Then
    the keys and types are checked and the stored model config must be trusted (trusted.py), so
    every way a file can be wrong is one GanCliError."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise GanCliError(f"checkpoint {path} is a folder, not a file: pass a .pt file, e.g. {path}/last.pt, "
                          "or trainer.resume=auto with hydra.run.dir set to the run")
    if not path.is_file():
        raise GanCliError(f"checkpoint {path} does not exist")
    try:
        if not zipfile.is_zipfile(path):  # torch.save always writes a zip; a text file would reach the unpickler
            raise GanCliError(f"checkpoint {path} is truncated or corrupt: not a complete torch.save file")
        state = torch.load(path, map_location=map_location, weights_only=True)
    except GanCliError:
        raise
    except pickle.UnpicklingError as err:
        raise GanCliError(f"checkpoint {path} was refused: it holds more than tensors ({_unpickling_reason(err)})"
                          ) from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for damaged files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GanCliError(f"checkpoint {path} is truncated or corrupt: {reason[:200]}") from None
    if not isinstance(state, dict) or state.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise GanCliError(f"{path} is not a gan-cli checkpoint (expected format {FORMAT!r})")
    if integrity.KEY in state and state[integrity.KEY] != integrity.digest(state):  # older files have none
        raise GanCliError(f"checkpoint {path} is corrupt: its contents do not match the checksum written with "
                          "them (changed or damaged on disk)")
    check_structure(state, path)
    state = upgrade(state)
    stored_config(state, path)
    return state


def load_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any], node: Any, path: str | Path,
                   name: str) -> None:
    """The checkpoint's optimizer state, with the hyperparameters of the current config: a
    resume with another optim.lr trains with that lr, as the saved config records."""
    check_optimizer_kind(optimizer, saved, path, name)
    try:
        optimizer.load_state_dict(saved)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GanCliError(f"checkpoint {path}: its {name} state does not fit the configured optimizer: {reason}"
                          ) from None
    for key in HYPERPARAMETERS:
        if key not in node:
            continue
        value = tuple(node[key]) if key == "betas" else node[key]
        for group in optimizer.param_groups:
            if key in group and group[key] != value:
                log.info("%s.%s: %s in the checkpoint, %s in the config: training with %s", name, key,
                         group[key], value, value)
                group[key] = value


HYPERPARAMETERS = ("lr", "betas", "weight_decay", "eps", "momentum", "alpha")
KNOWN_OPTIMIZERS = ("Adam", "AdamW", "RMSprop", "SGD", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam")


def hyperparameter_names(kind: Callable[[list[torch.Tensor]], torch.optim.Optimizer]) -> frozenset[str]:
    return frozenset(kind([torch.zeros(1, requires_grad=True)]).defaults)


def saved_optimizer_kind(group_keys: set[str]) -> str:
    """The torch.optim class a saved param group most likely came from: the one whose
    hyperparameter names overlap it most (a checkpoint of another torch version may have a
    few more or fewer, such as `fused`)."""
    def overlap(name: str) -> float:
        names = hyperparameter_names(getattr(torch.optim, name))
        return len(names & group_keys) / len(names | group_keys)
    return max(KNOWN_OPTIMIZERS, key=overlap)


def check_optimizer_kind(optimizer: torch.optim.Optimizer, saved: dict[str, Any], path: str | Path,
                         name: str) -> None:
    """Adam's state loaded into RMSprop loads fine and fails at the first step (`KeyError:
    'square_avg'`): compare the saved hyperparameter names with the configured optimizer's first."""
    groups = saved.get("param_groups") or [{}]
    group_keys, configured = set(groups[0]) - {"params"}, frozenset(optimizer.defaults)
    if group_keys == configured:
        return
    kind = saved_optimizer_kind(group_keys)
    if hyperparameter_names(getattr(torch.optim, kind)) == configured:
        return  # the same hyperparameters (Adam and AdamW, or another torch version's Adam): the state fits
    raise GanCliError(f"checkpoint {path}: {name} was {kind} when it was saved, the config builds "
                      f"{type(optimizer).__name__}: resume with the optimizer it was trained with, or start a "
                      "new run")


class Loadable(Protocol):
    def load_state_dict(self, state_dict: Mapping[str, Any], /) -> Any: ...


def load_weights(module: Loadable, weights: Mapping[str, Any], path: str | Path, what: str) -> None:
    """load_state_dict with an error that names the checkpoint and the mismatched keys."""
    try:
        module.load_state_dict(weights)
    except RuntimeError as err:
        details = " ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise GanCliError(
            f"checkpoint {path}: its {what} does not match the configured model: {details}"
        ) from None
