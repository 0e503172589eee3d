"""Checkpoints: plain tensors and containers only, so loading never needs to unpickle code.

A checkpoint is a dict with FORMAT, the step, the state_dicts of the task's networks, EMA copies,
optimizers and learning-rate schedules, each a dict by the names the task declares
(`networks["generator"]`, `optimizers["d"]`), the resolved config as YAML, and the RNG states.
Checkpoints of format gan-cli/1 (before tasks: `generator`, `discriminator`, `generator_ema`,
`opt_g`, `opt_d`) are read as the image_gan task's. It is written to a temp file in the same folder,
fsynced and renamed, so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from gan_cli.errors import GanCliError

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
    kind, keys, position, has_gauss, cached = np.random.get_state()
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
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as tmp:
            torch.save({"format": FORMAT, **state}, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


class CheckpointDir:
    """checkpoints/step_NNNNNNN.pt for the newest `keep` saves, and last.pt, a hard link to the
    newest (no second copy on disk). Each file is complete or absent, never half written."""

    def __init__(self, folder: Path, keep: int):
        self.folder, self.keep = folder, keep

    def step_files(self) -> list[Path]:
        return sorted(self.folder.glob("step_*.pt"))

    def save(self, state: dict[str, Any], step: int) -> Path:
        path = self.folder / f"step_{step:07d}.pt"
        try:
            save_checkpoint(path, state)
            link = self.folder / ".last.pt.tmp"
            link.unlink(missing_ok=True)
            os.link(path, link)
            os.replace(link, self.folder / "last.pt")
        except OSError as err:
            raise GanCliError(
                f"could not write checkpoint {path}: {err.strerror or err}; earlier checkpoints in "
                f"{self.folder} are intact"
            ) from None
        for old in self.step_files()[: -self.keep]:
            old.unlink()
        return path

    def save_best(self, state: dict[str, Any]) -> Path:
        """best.pt: the checkpoint with the best FID so far (same atomic write)."""
        path = self.folder / "best.pt"
        try:
            save_checkpoint(path, state)
        except OSError as err:
            raise GanCliError(f"could not write checkpoint {path}: {err.strerror or err}") from None
        return path

    def newest_loadable(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that loads, skipping (and reporting) damaged ones."""
        candidates = [self.folder / "last.pt", *reversed(self.step_files())]
        for path in (p for p in candidates if p.is_file()):
            try:
                return path, load_checkpoint(path)
            except GanCliError as err:
                log.warning("skipping %s", err)
        return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True: a pickle that would run code is refused, not executed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GanCliError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).splitlines()[0]
        raise GanCliError(f"checkpoint {path} was refused: it holds more than tensors ({reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GanCliError(f"checkpoint {path} is truncated or corrupt: {reason}") from None
    if not isinstance(state, dict) or state.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise GanCliError(f"{path} is not a gan-cli checkpoint (expected format {FORMAT!r})")
    return upgrade(state)


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
