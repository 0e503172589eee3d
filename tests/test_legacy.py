"""Checkpoints written before tasks existed (format gan-cli/1) still sample and resume, and the
image_gan task trains exactly as the code that wrote them (tests/fixtures/README.md).

Float kernels differ in the last bits between CPU kinds (oneDNN and ATen pick AVX2 or AVX-512 code
paths) and torch releases, so "exactly" is bitwise only on the kind that wrote the fixtures
(tests/fixtures/legacy_v1_dcgan.cpu.json); elsewhere within tolerances far below what any change
of the training code moves (see WEIGHT_ATOL and the sample test).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_cli.loop.checkpoint import load_checkpoint
from gan_cli.loop.train import train
from tests.conftest import compose_train, run_cli

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY = FIXTURES / "legacy_v1_dcgan.pt"
WRITTEN_ON = json.loads((FIXTURES / "legacy_v1_dcgan.cpu.json").read_text())
# Off the fixture's CPU kind: weights after the 3 steps may differ by this much. Measured between an
# AVX2 and an AVX-512 CPU (torch 2.14.1): at most 7.5e-9 (1-2 ulp of weights ~0.07). Each Adam step
# moves every weight by up to lr = 2e-4, so a change to the step (its order, a loss, a seed, an
# update skipped) moves weights ~1e-4: 1e-6 is 130x the kernel noise and 200x below one step.
WEIGHT_ATOL = 1e-6
# The command the fixture was made with (tests/fixtures/README.md).
LEGACY_RUN = ["dataset=fake", "dataset.num_samples=64", "trainer.device=cpu", "trainer.batch_size=16",
              "trainer.max_steps=3", "model.z_dim=8", "model.generator.ngf=4", "model.discriminator.ndf=4",
              "eval.enabled=false", "trainer.num_threads=1", "ema.start_step=1", "ema.decay=0.5", "ema.bn_samples=64"]


def same_cpu_kind() -> bool:
    """True on the CPU kind and torch release that wrote the fixtures: compare bitwise there."""
    return (torch.backends.cpu.get_cpu_capability() == WRITTEN_ON["cpu_capability"]
            and torch.__version__.split("+")[0] == WRITTEN_ON["torch"])


def test_legacy_checkpoint_reads_as_the_image_gan_layout() -> None:
    raw = torch.load(LEGACY, weights_only=True)
    assert raw["format"] == "gan-cli/1" and "generator" in raw  # the fixture really is the old layout
    state = load_checkpoint(LEGACY)
    assert set(state["networks"]) == {"generator", "discriminator"} and set(state["optimizers"]) == {"g", "d"}
    assert torch.equal(state["averages"]["generator"]["net.0.weight"], raw["generator_ema"]["net.0.weight"])


def test_legacy_checkpoint_draws_the_same_samples_as_the_old_code(tmp_path: Path) -> None:
    run_cli("gan-sample", [f"checkpoint={LEGACY}", "num_samples=4", "seed=3", "out=s.npz"], cwd=tmp_path)
    expected = np.load(FIXTURES / "legacy_v1_dcgan_samples_seed3.npy").astype(np.int16)
    drawn = np.load(tmp_path / "s.npz")["arr_0"].astype(np.int16)
    if same_cpu_kind():
        assert np.array_equal(drawn, expected)
    else:  # a last-bit difference may tip a pixel over a rounding edge of the uint8 quantization:
        # +-1 on a few pixels; other weights, latents or layers change most pixels by many levels
        off = np.abs(drawn - expected)
        assert drawn.shape == expected.shape and off.max() <= 1 and (off > 0).mean() <= 0.01


def test_the_image_gan_task_trains_bitwise_like_the_code_that_wrote_the_fixture(tmp_path: Path) -> None:
    train(compose_train(LEGACY_RUN), run_dir=tmp_path)
    old, new = load_checkpoint(LEGACY), load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    atol = 0.0 if same_cpu_kind() else WEIGHT_ATOL
    for kind in ("networks", "averages"):
        for name, weights in old[kind].items():
            for key, value in weights.items():
                got = new[kind][name][key]
                close = (torch.equal(value, got) if not value.is_floating_point() or atol == 0
                         else torch.allclose(value, got, rtol=0.0, atol=atol))
                assert close, (kind, name, key, (value.double() - got.double()).abs().max().item())


def test_the_tolerance_catches_a_changed_step(tmp_path: Path) -> None:
    """WEIGHT_ATOL is tight enough to see a real change: the same 3 steps with D's lr 1% off
    (one optimizer hyperparameter, nothing else) moves D's weights by more than 10x it (measured on
    an AVX-512 CPU: 1.2e-4; a 0.1% change still moved them 2.6e-5)."""
    train(compose_train([*LEGACY_RUN, "optim.d.lr=2.02e-4"]), run_dir=tmp_path)
    old, new = load_checkpoint(LEGACY), load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    moved = max((value - new["networks"]["discriminator"][key]).abs().max().item()
                for key, value in old["networks"]["discriminator"].items() if value.is_floating_point())
    assert moved > 10 * WEIGHT_ATOL


def test_legacy_checkpoint_resumes(tmp_path: Path) -> None:
    metrics = train(compose_train([*LEGACY_RUN, "trainer.max_steps=5", f"trainer.resume={LEGACY}"]), run_dir=tmp_path)
    assert metrics["steps"] == 5 and metrics["images_seen"] == 5 * 16
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["format"] == "gan-cli/2"


# gan-cli/2 checkpoints written before the whole stored config was checked (tests/fixtures/README.md).
V2_BASE = ["dataset=fake", "dataset.num_samples=32", "trainer.device=cpu", "trainer.batch_size=4", "eval.enabled=false",
           "trainer.num_threads=1", "log.num_samples=4"]
V2_RUNS = {
    "image_gan": ["model.z_dim=8", "model.generator.ngf=4", "model.discriminator.ndf=4"],
    "srgan": ["task=srgan", "model.generator.width=4", "model.generator.blocks=1", "model.discriminator.ndf=4",
              "model.discriminator.stages=1", "model.discriminator.pool=1", "model.discriminator.dense=8",
              "task.perceptual_weight=0", "task.preview_images=2"],
    "cyclegan": ["task=cyclegan", "model.generator.ngf=4", "model.generator.blocks=1",
                 "model.generator.downsamplings=1", "model.discriminator.ndf=4", "model.discriminator.layers=1",
                 "task.domain_b=invert", "task.preview_images=2", "task.pool_size=2"],
}


@pytest.mark.parametrize("version", ["v2", "v3"])
@pytest.mark.parametrize("task", sorted(V2_RUNS))
def test_checkpoints_of_every_task_from_earlier_layouts_sample_and_resume(tmp_path: Path, task: str,
                                                                          version: str) -> None:
    """v2: before the whole stored config was checked; v3: before the modules moved into packages
    and each family's options under `task:` (SRGAN's `sr:`, image_gan's `trainer.d_steps`)."""
    from omegaconf import OmegaConf
    from PIL import Image

    from gan_cli.sampling.sample import sample

    checkpoint = FIXTURES / f"{version}_{task}.pt"
    (tmp_path / "images").mkdir()
    Image.new("L", (7, 7)).save(tmp_path / "images" / "a.png")
    for source in [None] if task == "image_gan" else ["test", str(tmp_path / "images")]:
        spec = {"checkpoint": str(checkpoint), "input": source, "out": str(tmp_path / "s.png"), "num_samples": 2,
                "class": None}
        assert sample(OmegaConf.create(spec)).is_file()
    resumed = train(compose_train([*V2_BASE, *V2_RUNS[task], "trainer.max_steps=2", f"trainer.resume={checkpoint}"]),
                    run_dir=tmp_path / "run")
    assert resumed["steps"] == 2


def test_options_of_earlier_layouts_move_under_their_task() -> None:
    from gan_cli.core.trusted import stored_config

    image_gan = stored_config(load_checkpoint(FIXTURES / "v3_image_gan.pt"), "v3_image_gan.pt")
    assert image_gan.task.d_steps == 2 and "d_steps" not in image_gan.trainer
    assert image_gan.loss._target_ == "gan_cli.components.losses.NonSaturatingLoss"  # was gan_cli.losses
    srgan = stored_config(load_checkpoint(FIXTURES / "v3_srgan.pt"), "v3_srgan.pt")
    assert "sr" not in srgan and srgan.task.scale == 4 and srgan.task.perceptual_weight == 0
    cyclegan = stored_config(load_checkpoint(FIXTURES / "v3_cyclegan.pt"), "v3_cyclegan.pt")
    assert "sr" not in cyclegan and "d_steps" not in cyclegan.task  # d_steps was image_gan's alone
