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


def test_cifar10_dcgan_trains_with_no_other_change(tmp_path: Path, cifar_root: Path) -> None:
    cfg = compose_train(["dataset=cifar10", "model=dcgan", f"dataset.root={cifar_root}", "dataset.download=false",
                         *[o for o in TINY_FAKE if not o.startswith("dataset")]])
    metrics = train(cfg, run_dir=tmp_path)
    assert metrics["steps"] == 4 and math.isfinite(metrics["loss/g"])
    grid = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["generator"]
    assert grid["net.0.weight"].shape[0] == 100  # z_dim 100 -> first transposed conv


def test_folder_at_64_pixels_trains(tmp_path: Path) -> None:
    from tests.conftest import make_image_folder

    root = make_image_folder(tmp_path / "imgs", classes=2, per_class=8, size=(70, 80))
    cfg = compose_train(["dataset=folder", f"dataset.root={root}", *[o for o in TINY_FAKE if "dataset" not in o]])
    assert train(cfg, run_dir=tmp_path / "run")["steps"] == 4
