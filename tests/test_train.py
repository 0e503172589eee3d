"""train(cfg) called directly, as tests and sweeps do."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gan_cli.core.config import validate
from gan_cli.core.errors import GanCliError
from gan_cli.loop.step import build_task
from gan_cli.loop.train import train
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
    first = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["networks"]["generator"]
    second = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["networks"]["generator"]
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_d_steps_below_one_is_refused_where_image_gan_reads_it() -> None:
    with pytest.raises(GanCliError, match=r"task\.d_steps=0: allowed is an integer >= 1"):
        build_task(validate(compose_train([*TINY_FAKE, "task.d_steps=0"])), torch.device("cpu"))


def test_d_steps_draws_that_many_real_batches(tmp_path: Path) -> None:
    metrics = train(compose_train([*TINY_FAKE, "task.d_steps=2"]), run_dir=tmp_path)
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
    grid = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["networks"]["generator"]
    assert grid["net.0.weight"].shape[0] == 100  # z_dim 100 -> first transposed conv


def test_folder_at_64_pixels_trains(tmp_path: Path) -> None:
    from tests.conftest import make_image_folder

    root = make_image_folder(tmp_path / "imgs", classes=2, per_class=8, size=(70, 80))
    cfg = compose_train(["dataset=folder", f"dataset.root={root}", *[o for o in TINY_FAKE if "dataset" not in o]])
    assert train(cfg, run_dir=tmp_path / "run")["steps"] == 4


def test_fid_and_kid_in_the_loop_keep_best_pt(tmp_path: Path) -> None:
    cfg = compose_train([*TINY_FAKE, "eval.enabled=true", "eval.every_n_steps=2", "eval.num_samples=64",
                         "eval.batch_size=32", "eval.kid_subset_size=16", "eval.kid_subsets=5",
                         "eval.classifier_epochs=1", f"eval.cache_dir={tmp_path / 'cache'}"])
    metrics = train(cfg, run_dir=tmp_path / "run")
    # Classifier features: named for what they are, not FID/KID (those are Inception's).
    assert math.isfinite(metrics["metrics/fd_classifier"]) and math.isfinite(metrics["metrics/kd_classifier"])
    assert "metrics/fid" not in metrics and metrics["best_fd_classifier"] <= metrics["metrics/fd_classifier"]
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert best["step"] in (2, 4)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["metrics/fd_classifier"] == metrics["metrics/fd_classifier"] and "perf/eval_seconds" in saved


def test_conditional_grid_has_one_row_per_class(tmp_path: Path) -> None:
    from PIL import Image

    cfg = compose_train([*TINY_FAKE, "model.conditional=true", "dataset.num_classes=4", "log.num_samples=8"])
    train(cfg, run_dir=tmp_path)
    grid = Image.open(tmp_path / "samples" / "step_0000004.png")
    assert grid.size == (2 * 30 + 2, 4 * 30 + 2)  # 4 classes x 2 samples, 28 px + 2 px padding


def test_on_nan_skip_drops_the_bad_updates_and_finishes(tmp_path: Path) -> None:
    cfg = compose_train([*TINY_FAKE, "trainer.on_nan=skip", "trainer.max_steps=6",
                         "loss._target_=tests.test_resilience.ExplodingLoss"])
    metrics = train(cfg, run_dir=tmp_path)
    assert metrics["steps"] == 6 and metrics["skipped_steps"] >= 1
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert all(v.isfinite().all() for v in state["networks"]["discriminator"].values() if v.is_floating_point())


def test_a_resumed_run_replaces_best_pt_only_with_a_better_score(tmp_path: Path) -> None:
    """best.pt is the best of the whole run: the score it holds travels in every checkpoint, so the
    first evaluation after a resume does not overwrite it with a worse one."""
    evaluated = [*TINY_FAKE, "eval.enabled=true", "eval.every_n_steps=2", "eval.num_samples=64", "eval.batch_size=32",
                 "eval.kid_subset_size=16", "eval.kid_subsets=5", "eval.classifier_epochs=1",
                 f"eval.cache_dir={tmp_path / 'cache'}"]
    first = train(compose_train(evaluated), run_dir=tmp_path / "run")
    best_pt = tmp_path / "run" / "checkpoints" / "best.pt"
    kept = best_pt.read_bytes()
    assert torch.load(best_pt, weights_only=True)["best"] == first["best_fd_classifier"]
    # the resumed part trains G with an absurd learning rate: its samples get worse, not better
    wrecked = train(compose_train([*evaluated, "trainer.max_steps=6", "trainer.resume=auto", "optim.g.lr=5.0"]),
                    run_dir=tmp_path / "run")
    assert wrecked["metrics/fd_classifier"] > first["best_fd_classifier"]
    assert wrecked["best_fd_classifier"] == first["best_fd_classifier"] and best_pt.read_bytes() == kept
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["best"] == first["best_fd_classifier"]
