"""task=pix2pix in the loop: its losses, TensorBoard tags and grid, bitwise resume, evaluation next
to doing nothing, and gan-sample on a folder, an .npz and the test split (the parts: test_pix2pix_parts.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gan_cli.core.config import validate
from gan_cli.core.errors import GanCliError
from gan_cli.loop.step import build_task
from gan_cli.loop.train import seed_everything, train
from gan_cli.tasks.pix2pix import Pix2Pix
from tests.conftest import assert_same_weights, compose_train, run_cli

TINY_P2P = ["task=pix2pix", "task.transform=mask_bottom", "dataset=fake", "dataset.num_samples=64",
            "trainer.device=cpu", "trainer.batch_size=8", "trainer.max_steps=4", "trainer.num_threads=1",
            "model.generator.ngf=4", "model.discriminator.ndf=4", "model.discriminator.layers=2",
            "task.preview_images=3", "log.every_n_steps=2", "log.sample_every_n_steps=2", "eval.enabled=false",
            "ema.start_step=1", "ema.bn_samples=16"]


def make_task(overrides: list[str]) -> Pix2Pix:
    cfg = validate(compose_train([*TINY_P2P, *overrides]))
    seed_everything(cfg.trainer.seed)
    task = build_task(cfg, torch.device("cpu"))
    assert isinstance(task, Pix2Pix)
    return task


def test_the_inputs_are_the_targets_top_halves() -> None:
    task = make_task([])
    inputs, targets = task.batch(0)
    assert inputs.shape == targets.shape == (8, 1, 28, 28)
    assert torch.equal(inputs[:, :, :14], targets[:, :, :14])  # the top half is given
    assert (inputs[:, :, 14:] == inputs.amin((2, 3), keepdim=True)[:, :, :1]).all()  # the bottom is background


def test_g_loss_is_weighted_adversarial_plus_lambda_l1() -> None:
    task = make_task(["task.lambda_l1=7", "task.adversarial_weight=0.5"])
    _, _, handed = task.d_loss(0, 0, None)
    total, stats, _ = task.g_loss(0, 0, handed)
    outputs = handed.outputs
    adversarial = F.softplus(-task.discriminator(handed.inputs, outputs)).mean()  # BCE's G loss on logits
    expected = 0.5 * adversarial + 7 * F.l1_loss(outputs, handed.targets)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats["loss/l1"].item() == pytest.approx(F.l1_loss(outputs, handed.targets).item(), rel=1e-6)


def test_adversarial_weight_zero_trains_on_l1_alone_and_leaves_d_untouched() -> None:
    task = make_task(["task.adversarial_weight=0", "task.lambda_l1=3"])
    before = {k: v.clone() for k, v in task.discriminator.state_dict().items()}
    d_total, _, handed = task.d_loss(0, 0, None)
    assert handed.outputs is None and d_total.item() == 0  # D's phase runs nothing
    torch.manual_seed(5)  # G runs in G's phase here; the same dropout draws again below
    total, stats, _ = task.g_loss(0, 0, handed)
    torch.manual_seed(5)
    outputs = task.generator(handed.inputs)
    assert total.item() == pytest.approx(3 * F.l1_loss(outputs, handed.targets).item(), rel=1e-6)
    assert stats["loss/g"].item() == 0
    assert all(torch.equal(v, task.discriminator.state_dict()[k]) for k, v in before.items())


def test_bad_task_options_are_one_line() -> None:
    with pytest.raises(GanCliError, match="task.lambda_l1=-1"):
        make_task(["task.lambda_l1=-1"])
    with pytest.raises(GanCliError, match="task.transform"):
        make_task(["task.transform=none"])
    with pytest.raises(GanCliError, match="task.direction='both'"):
        make_task(["task.direction=both"])


def test_pix2pix_trains_logs_input_output_target_rows_and_resumes_bitwise(tmp_path: Path) -> None:
    straight = [*TINY_P2P, "trainer.max_steps=6", "trainer.ckpt_every_n_steps=3"]
    metrics = train(compose_train(straight), run_dir=tmp_path / "straight")
    for name in ("loss/d", "loss/g", "loss/l1"):
        assert math.isfinite(metrics[name]), name
    grid = Image.open(tmp_path / "straight" / "samples" / "step_0000006.png")
    assert grid.size == (3 * 30 + 2, 3 * 30 + 2)  # rows input | output | target, 28 px + padding
    middle = tmp_path / "straight" / "checkpoints" / "step_0000003.pt"
    train(compose_train([*straight, f"trainer.resume={middle}"]), run_dir=tmp_path / "resumed")
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed", 6)


def test_evaluation_scores_outputs_beside_the_input_as_it_is(tmp_path: Path) -> None:
    metrics = train(compose_train([*TINY_P2P, "eval.enabled=true", "eval.num_samples=16", "eval.classifier_epochs=1",
                                   "eval.kid_subset_size=8", "eval.kid_subsets=2"]), run_dir=tmp_path)
    for name in ("fd_classifier", "l1", "psnr", "ssim", "label_kept"):
        assert math.isfinite(metrics[f"metrics/{name}"]), name
        assert math.isfinite(metrics[f"baseline/{name}_input"]), name
    assert metrics["baseline/ssim_input"] < 1  # the masked input is not its target


def test_gan_sample_translates_a_folder_an_npz_and_the_test_split(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_cli("gan-train", [*TINY_P2P, f"hydra.run.dir={run}"], cwd=tmp_path)
    checkpoint = f"checkpoint={run}/checkpoints/last.pt"
    run_cli("gan-sample", [checkpoint, "input=test", "num_samples=5", "out=test.png", "nrow=3"], cwd=tmp_path)
    assert Image.open(tmp_path / "test.png").size == (3 * 30 + 2, 5 * 30 + 2)  # input | output | target per row
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("seven", "three"):
        Image.new("L", (56, 56), 90).save(inputs / f"{name}.png")  # resized to the training size
    run_cli("gan-sample", [checkpoint, f"input={inputs}", "out=completed"], cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "completed").iterdir()) == ["seven.png", "three.png"]
    np.savez(tmp_path / "in.npz", arr_0=np.full((3, 28, 28, 1), 7, dtype=np.uint8))
    run_cli("gan-sample", [checkpoint, f"input={tmp_path / 'in.npz'}", "out=out.npz"], cwd=tmp_path)
    assert np.load(tmp_path / "out.npz")["arr_0"].shape == (3, 28, 28, 1)
    result = run_cli("gan-sample", [checkpoint, "input=test", "direction=b2a", "out=x.png"], cwd=tmp_path, check=False)
    assert result.returncode == 2 and "translates a2b" in result.stderr and "Traceback" not in result.stderr
