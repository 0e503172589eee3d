"""train(cfg) called directly, as tests and sweeps do."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gan_cli.train import train
from tests.conftest import TINY_FAKE, compose_train


@pytest.mark.parametrize("model", ["mlp", "dcgan"])
def test_train_returns_finite_metrics(tmp_path: Path, model: str) -> None:
    overrides = [o for o in TINY_FAKE if model == "dcgan" or "ngf" not in o and "ndf" not in o]
    metrics = train(compose_train([*overrides, f"model={model}"]), run_dir=tmp_path)
    assert metrics["steps"] == 4
    assert all(math.isfinite(metrics[k]) for k in ("loss/d", "loss/g", "prob/real", "prob/fake"))


def test_same_seed_same_weights(tmp_path: Path) -> None:
    cfg = compose_train([*TINY_FAKE, "trainer.seed=7"])
    train(cfg, run_dir=tmp_path / "a")
    train(cfg, run_dir=tmp_path / "b")
    first = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["generator"]
    second = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["generator"]
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_d_steps_draws_that_many_real_batches(tmp_path: Path) -> None:
    metrics = train(compose_train([*TINY_FAKE, "trainer.d_steps=2"]), run_dir=tmp_path)
    assert metrics["images_seen"] == 4 * 2 * 16


def test_epochs_bound_the_run_when_max_steps_is_off(tmp_path: Path) -> None:
    cfg = compose_train([*TINY_FAKE, "trainer.max_steps=null", "trainer.epochs=2"])
    assert train(cfg, run_dir=tmp_path)["steps"] == 2 * (64 // 16)


def test_bf16_autocast_trains(tmp_path: Path) -> None:
    metrics = train(compose_train([*TINY_FAKE, "trainer.precision=bf16"]), run_dir=tmp_path)
    assert math.isfinite(metrics["loss/d"])


def test_resume_rejects_a_checkpoint_of_another_model(tmp_path: Path) -> None:
    from gan_cli.errors import GanCliError

    train(compose_train(TINY_FAKE), run_dir=tmp_path / "a")
    other = [o for o in TINY_FAKE if "ngf" not in o] + ["model.generator.ngf=16",
                                                        f"trainer.resume={tmp_path}/a/checkpoints/last.pt"]
    with pytest.raises(GanCliError, match="generator does not match"):
        train(compose_train(other), run_dir=tmp_path / "b")
