"""Checkpoints written before tasks existed (format gan-cli/1) still sample and resume, and the
image_gan task trains exactly as the code that wrote them (tests/fixtures/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gan_cli.checkpoint import load_checkpoint
from gan_cli.train import train
from tests.conftest import compose_train, run_cli

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY = FIXTURES / "legacy_v1_dcgan.pt"
# The command the fixture was made with (tests/fixtures/README.md).
LEGACY_RUN = ["dataset=fake", "dataset.num_samples=64", "trainer.device=cpu", "trainer.batch_size=16",
              "trainer.max_steps=3", "model.z_dim=8", "model.generator.ngf=4", "model.discriminator.ndf=4",
              "eval.enabled=false", "trainer.num_threads=1", "ema.start_step=1", "ema.decay=0.5", "ema.bn_samples=64"]


def test_legacy_checkpoint_reads_as_the_image_gan_layout() -> None:
    raw = torch.load(LEGACY, weights_only=True)
    assert raw["format"] == "gan-cli/1" and "generator" in raw  # the fixture really is the old layout
    state = load_checkpoint(LEGACY)
    assert set(state["networks"]) == {"generator", "discriminator"} and set(state["optimizers"]) == {"g", "d"}
    assert torch.equal(state["averages"]["generator"]["net.0.weight"], raw["generator_ema"]["net.0.weight"])


def test_legacy_checkpoint_draws_the_same_samples_as_the_old_code(tmp_path: Path) -> None:
    run_cli("gan-sample", [f"checkpoint={LEGACY}", "num_samples=4", "seed=3", "out=s.npz"], cwd=tmp_path)
    expected = np.load(FIXTURES / "legacy_v1_dcgan_samples_seed3.npy")
    assert np.array_equal(np.load(tmp_path / "s.npz")["arr_0"], expected)


def test_the_image_gan_task_trains_bitwise_like_the_code_that_wrote_the_fixture(tmp_path: Path) -> None:
    train(compose_train(LEGACY_RUN), run_dir=tmp_path)
    old, new = load_checkpoint(LEGACY), load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    for kind in ("networks", "averages"):
        for name, weights in old[kind].items():
            assert all(torch.equal(value, new[kind][name][key]) for key, value in weights.items()), (kind, name)


def test_legacy_checkpoint_resumes(tmp_path: Path) -> None:
    metrics = train(compose_train([*LEGACY_RUN, "trainer.max_steps=5", f"trainer.resume={LEGACY}"]), run_dir=tmp_path)
    assert metrics["steps"] == 5 and metrics["images_seen"] == 5 * 16
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["format"] == "gan-cli/2"
