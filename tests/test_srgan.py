"""task=srgan and its parts: LR images on the device, the networks, each loss term, the
content-only warm-up, PSNR/SSIM, VGG19 weights from a file, the HR folder dataset, gan-sample
upscaling, bitwise resume and an end-to-end run with evaluation."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gan_cli.components.perceptual import ClassifierMaps, load_vgg19
from gan_cli.core.config import validate
from gan_cli.core.errors import GanCliError
from gan_cli.data.lowres import bicubic, downsample, random_crops
from gan_cli.evaluate.classifier import SmallCNN
from gan_cli.evaluate.pixels import pixel_scores
from gan_cli.loop.checkpoint import load_checkpoint
from gan_cli.loop.step import build_task, build_updater, train_step
from gan_cli.loop.train import seed_everything, train
from gan_cli.models.srgan import Discriminator, Generator
from gan_cli.tasks.srgan import SrGan
from tests.conftest import assert_same_weights, compose_train, run_cli

# A tiny SRGAN on the fake dataset (28 px HR, 7 px LR).
TINY_SR = ["task=srgan", "dataset=fake", "dataset.num_samples=64", "trainer.device=cpu", "trainer.batch_size=8",
           "trainer.max_steps=4", "trainer.num_threads=1", "model.generator.width=8", "model.generator.blocks=1",
           "model.discriminator.ndf=4", "model.discriminator.stages=2", "model.discriminator.pool=1",
           "model.discriminator.dense=8", "task.perceptual=none", "task.pretrain_steps=0", "task.preview_images=3",
           "log.every_n_steps=2", "log.sample_every_n_steps=2", "eval.enabled=false", "ema.start_step=1",
           "ema.bn_samples=16"]


def make_task(overrides: list[str]) -> SrGan:
    cfg = validate(compose_train([*TINY_SR, *overrides]))
    seed_everything(cfg.trainer.seed)
    task = build_task(cfg, torch.device("cpu"))  # as the loop builds it: the task node's options as keywords
    assert isinstance(task, SrGan)
    return task


# ---------------------------------------------------------------- LR images

def test_downsample_is_antialiased_bicubic() -> None:
    # One bright column in every four, x4 down. Antialiased, each LR pixel averages its 4x4 block:
    # (1 - 1 - 1 - 1) / 4 = -0.5. Plain bicubic at x4 reads taps at distances 1.5, 0.5, 0.5, 1.5 with
    # weights -0.09375, 0.59375, 0.59375, -0.09375 (a = -0.75): -0.09375 - 1.1875 + 0.09375 = -1.1875.
    hr = torch.tensor([1.0, -1, -1, -1]).repeat(8).view(1, 1, 1, 32).expand(2, 1, 32, 32)
    lr = downsample(hr, 4)
    assert lr.shape == (2, 1, 8, 8)
    assert lr[:, :, 2:6, 1:6].sub(-0.5).abs().max() < 1 / 127.5  # uint8-quantized
    aliased = F.interpolate(hr, scale_factor=0.25, mode="bicubic", align_corners=False)
    assert aliased[0, 0, 3, 3].item() == pytest.approx(-1.1875)
    assert downsample(torch.full((1, 3, 12, 16), 0.2), 2).shape == (1, 3, 6, 8)
    assert bicubic(lr, 4).shape == (2, 1, 32, 32) and bicubic(lr, 4).abs().max() <= 1


def test_random_crops_take_each_image_its_own_window() -> None:
    images = torch.arange(4 * 2 * 10 * 12, dtype=torch.float).view(4, 2, 10, 12)
    torch.manual_seed(0)
    crops = random_crops(images, 6)
    assert crops.shape == (4, 2, 6, 6)
    corners = []
    for image, crop in zip(images, crops, strict=True):
        top, left = divmod(int(crop[0, 0, 0] - image[0, 0, 0]), 12)
        assert torch.equal(crop, image[:, top : top + 6, left : left + 6])
        corners.append((top, left))
    assert len(set(corners)) > 1
    square = images[..., :10]
    assert random_crops(square, 10) is square  # the whole image: nothing to crop


# ---------------------------------------------------------------- networks

@pytest.mark.parametrize("scale, size", [(2, 7), (4, 7), (4, 24), (2, 13)])
def test_srresnet_upscales_any_size_and_d_scores_each_image(scale: int, size: int) -> None:
    generator = Generator(channels=3, scale=scale, width=8, blocks=2)
    out = generator(torch.rand(2, 3, size, size + 3) * 2 - 1)
    assert out.shape == (2, 3, scale * size, scale * (size + 3)) and out.abs().max() <= 1
    assert Discriminator(3, ndf=4, stages=2, pool=2, dense=8)(out).shape == (2,)
    with pytest.raises(GanCliError, match="scale=3"):
        Generator(scale=3)


def test_discriminator_is_the_papers_at_96_px_and_works_at_28() -> None:
    paper = Discriminator(3)  # ndf 64, 4 halvings, 6x6 pool: 96 -> 6x6x512 -> Dense(1024)
    assert paper.head[0].in_features == 6 * 6 * 512 and paper(torch.zeros(2, 3, 96, 96)).shape == (2,)
    strides = [m.stride[0] for m in paper.features if isinstance(m, torch.nn.Conv2d)]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 2]
    assert Discriminator(1, ndf=8, stages=4, pool=2, dense=16)(torch.zeros(3, 1, 28, 28)).shape == (3,)


# ---------------------------------------------------------------- losses

def g_total(task: SrGan, step: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The G phase's loss at `step`, with the batch and G's output it was computed from."""
    _, _, handed = task.d_loss(step, 0, None)  # the batch G's phase will use
    total, _, _ = task.g_loss(step, 0, handed)
    return total, handed.hr, task.generator(handed.lr)  # G in training mode: the same output again


@pytest.mark.parametrize("content, loss", [("mse", F.mse_loss), ("l1", F.l1_loss)])
def test_content_loss_is_the_weighted_pixel_loss(content: str, loss: object) -> None:
    task = make_task([f"task.content={content}", "task.content_weight=2.5", "task.adversarial_weight=0"])
    total, hr, sr = g_total(task)
    assert total.item() == pytest.approx(2.5 * loss(sr, hr).item(), rel=1e-5)


def test_adversarial_term_has_its_weight() -> None:
    task = make_task(["task.content_weight=0", "task.adversarial_weight=0.25"])
    total, _, sr = g_total(task)
    expected = 0.25 * F.softplus(-task.discriminator(sr)).mean()  # BCE's G loss on logits
    assert total.item() == pytest.approx(expected.item(), rel=1e-5) and total.item() > 0


def fake_vgg19(path: Path, layers: int) -> dict[str, torch.Tensor]:
    """A torchvision-vgg19-shaped state dict for the first `layers` feature modules (random weights)."""
    from torchvision.models.vgg import cfgs, make_layers

    state = {f"features.{k}": v for k, v in make_layers(cfgs["E"])[:layers].state_dict().items()}
    torch.save(state, path)
    return state


def test_perceptual_vgg19_from_a_weights_file(tmp_path: Path) -> None:
    weights = tmp_path / "vgg19.pth"
    state = fake_vgg19(weights, 4)  # conv1_1, ReLU, conv1_2, ReLU
    task = make_task(["task.content_weight=0", "task.adversarial_weight=0", "task.perceptual=vgg19",
                      "task.perceptual_weight=3", f"task.vgg19_weights={weights}", "task.vgg19_layers=4"])
    assert torch.equal(task.perceptual.features[2].weight, state["features.2.weight"])
    assert not any(p.requires_grad for p in task.perceptual.parameters())
    total, hr, sr = g_total(task)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # ImageNet's, as torchvision's weights expect
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    phi = lambda x: task.perceptual.features(((x.expand(-1, 3, -1, -1) + 1) / 2 - mean) / std)  # noqa: E731
    assert total.item() == pytest.approx(3 * F.mse_loss(phi(sr), phi(hr)).item(), rel=1e-5)
    total.backward()
    assert task.generator.head[0].weight.grad.abs().sum() > 0  # the term trains G


def test_vgg19_weights_problems_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(GanCliError, match="needs task.vgg19_weights=PATH"):
        load_vgg19(None, 36)
    with pytest.raises(GanCliError, match="no such file"):
        load_vgg19(str(tmp_path / "missing.pth"), 36)
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(GanCliError, match="not a PyTorch weights file"):
        load_vgg19(str(tmp_path / "text.pth"), 4)
    torch.save({"features.0.weight": torch.zeros(3, 3, 3, 3)}, tmp_path / "wrong.pth")
    with pytest.raises(GanCliError, match="not a torchvision VGG19 state dict"):
        load_vgg19(str(tmp_path / "wrong.pth"), 4)


def test_classifier_perceptual_features_are_its_conv_maps() -> None:
    model = SmallCNN(1, 10).eval()
    maps = ClassifierMaps(model)
    images = torch.rand(2, 1, 28, 28) * 2 - 1
    assert maps(images).shape == (2, 128, 4, 4)
    pooled = maps(images).mean((2, 3))  # the classifier's own pooling of these maps
    assert torch.allclose(model.embed(pooled), model.features((images + 1) * 127.5), atol=1e-4)


# ---------------------------------------------------------------- warm-up

def test_warm_up_trains_g_on_content_alone_and_leaves_d_untouched() -> None:
    task = make_task(["task.pretrain_steps=2"])
    updater = build_updater(task.cfg, torch.device("cpu"))
    d_before, g_before = copy.deepcopy(task.discriminator.state_dict()), copy.deepcopy(task.generator.state_dict())
    names = list(task.stat_names)
    for step in range(2):
        stats = dict(zip(names, train_step(task, step, updater).tolist(), strict=True))
        assert stats["loss/d"] == stats["loss/g"] == 0 and stats["loss/content"] > 0
    assert all(torch.equal(v, task.discriminator.state_dict()[k]) for k, v in d_before.items())
    assert not torch.equal(g_before["head.0.weight"], task.generator.state_dict()["head.0.weight"])
    stats = dict(zip(names, train_step(task, 2, updater).tolist(), strict=True))  # SRGAN from here
    assert stats["loss/d"] > 0 and stats["loss/g"] > 0
    assert not torch.equal(d_before["features.0.weight"], task.discriminator.state_dict()["features.0.weight"])


# ---------------------------------------------------------------- metrics

def test_psnr_and_ssim_against_hand_computed_values() -> None:
    target = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    images = target.clone()
    images[0] = 51  # 0.2 everywhere: MSE 0.04, PSNR 10 log10(1 / 0.04) = 13.979 dB
    images[1, :, :4] = 10  # half the pixels at 10/255: MSE (10/255)^2 / 2, PSNR 20 log10(25.5) + 10 log10(2)
    scores = pixel_scores(images, target, batch=1)
    expected = [10 * math.log10(1 / 0.04), 20 * math.log10(25.5) + 10 * math.log10(2)]
    assert scores["psnr"] == pytest.approx(sum(expected) / 2, abs=1e-3)
    assert scores["mse"] == pytest.approx((0.04 + (10 / 255) ** 2 / 2) / 2, rel=1e-5)
    same = torch.randint(0, 256, (3, 1, 16, 16), dtype=torch.uint8)
    assert pixel_scores(same, same, batch=2)["ssim"] == pytest.approx(1.0)
    assert pixel_scores(255 - same, same, batch=2)["ssim"] < 0


# ---------------------------------------------------------------- the task in the loop

def test_srgan_trains_logs_a_four_row_grid_and_resumes_bitwise(tmp_path: Path) -> None:
    straight = [*TINY_SR, "task.pretrain_steps=2", "trainer.max_steps=6", "trainer.ckpt_every_n_steps=3"]
    metrics = train(compose_train(straight), run_dir=tmp_path / "straight")
    for name in ("loss/d", "loss/g", "loss/content", "loss/perceptual"):
        assert math.isfinite(metrics[name]), name
    grid = Image.open(tmp_path / "straight" / "samples" / "step_0000006.png")
    assert grid.size == (3 * 30 + 2, 4 * 30 + 2)  # rows LR | bicubic | SR | HR, 28 px + padding
    middle = tmp_path / "straight" / "checkpoints" / "step_0000003.pt"
    train(compose_train([*straight, f"trainer.resume={middle}"]), run_dir=tmp_path / "resumed")
    expected = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    assert set(expected["networks"]) == {"generator", "discriminator"} and set(expected["optimizers"]) == {"g", "d"}
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed", 6)


def write_pngs(folder: Path, sizes: list[tuple[int, int]], mode: str = "L") -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index, (width, height) in enumerate(sizes):
        shape = (height, width) if mode == "L" else (height, width, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"img_{index}.png")


@pytest.mark.slow
def test_gan_train_then_gan_sample_upscales_a_folder_an_npz_and_the_test_split(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_cli("gan-train", [*TINY_SR, f"hydra.run.dir={run}"], cwd=tmp_path)  # end to end, as a user runs it
    assert (run / "metrics.json").is_file() and (run / "samples" / "step_0000004.png").is_file()
    checkpoint = f"checkpoint={run}/checkpoints/last.pt"
    write_pngs(tmp_path / "small", [(12, 10), (12, 10)])
    run_cli("gan-sample", [checkpoint, f"input={tmp_path / 'small'}", "out=big"], cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == ["img_0.png", "img_1.png"]
    assert Image.open(tmp_path / "big" / "img_0.png").size == (48, 40)  # x4, any size
    np.savez(tmp_path / "lr.npz", arr_0=np.full((3, 9, 5, 1), 100, dtype=np.uint8))
    run_cli("gan-sample", [checkpoint, f"input={tmp_path / 'lr.npz'}", "out=big.npz"], cwd=tmp_path)
    assert np.load(tmp_path / "big.npz")["arr_0"].shape == (3, 36, 20, 1)
    run_cli("gan-sample", [checkpoint, "input=test", "num_samples=5", "out=rows.png"], cwd=tmp_path)
    assert Image.open(tmp_path / "rows.png").size == (5 * 30 + 2, 4 * 30 + 2)  # LR | bicubic | SR | HR
    write_pngs(tmp_path / "mixed", [(12, 10), (8, 8)])
    for args, message in (([], "input="), ([f"input={tmp_path / 'mixed'}"], "one call reads images of one size")):
        result = run_cli("gan-sample", [checkpoint, *args, "out=x.png"], cwd=tmp_path, check=False)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_hr_folder_trains_on_random_crops_of_any_size_images(tmp_path: Path) -> None:
    write_pngs(tmp_path / "hr", [(40, 36), (50, 33), (36, 60)] * 4, mode="RGB")
    folder = ["dataset=hr_folder", f"dataset.root={tmp_path / 'hr'}", "dataset.image_size=32", "task.hr_size=16",
              "trainer.batch_size=4", *[o for o in TINY_SR if not o.startswith(("dataset", "trainer.batch_size"))]]
    metrics = train(compose_train(folder), run_dir=tmp_path / "run")
    assert metrics["steps"] == 4
    assert Image.open(tmp_path / "run" / "samples" / "step_0000004.png").size == (3 * 18 + 2, 4 * 18 + 2)
    result = run_cli("gan-train", [*folder, "task.hr_size=18", f"hydra.run.dir={tmp_path / 'r2'}"], cwd=tmp_path,
                     check=False)
    assert result.returncode == 2 and "task.hr_size=18" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_eval_scores_sr_and_bicubic_and_perceptual_uses_the_cached_classifier(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cfg = compose_train([*TINY_SR, "task.perceptual=classifier", "eval.enabled=true", "eval.num_samples=32",
                         "eval.batch_size=16", "eval.classifier_epochs=1", "eval.kid_subsets=2",
                         "eval.kid_subset_size=8", f"eval.cache_dir={cache}"])
    metrics = train(cfg, run_dir=tmp_path / "run")
    for name in ("psnr", "ssim", "mse", "fd_classifier", "kd_classifier", "accuracy"):
        assert math.isfinite(metrics[f"metrics/{name}"]) and math.isfinite(metrics[f"metrics/{name}_bicubic"])
    assert metrics["loss/perceptual"] > 0
    assert len(list(cache.glob("*_classifier_e1.pt"))) == 1  # one classifier: the loss's and the metrics'
    assert metrics["best_fd_classifier"] <= metrics["metrics/fd_classifier"]
