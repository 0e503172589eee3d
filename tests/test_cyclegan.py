"""task=cyclegan and its parts: image pool, learning-rate schedules, domain transforms, the
trainA/trainB folder layout, networks, translation in gan-sample, bitwise resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_cli.components.schedule import Constant, Cosine, LinearDecay, Schedules
from gan_cli.core.errors import GanCliError
from gan_cli.data.datasets import ImageData
from gan_cli.data.domains import colorize, dilate, erode, from_dataset, invert, load_unpaired_folder
from gan_cli.data.image_pool import ImagePool
from gan_cli.loop.checkpoint import load_checkpoint
from gan_cli.loop.train import train
from gan_cli.models.cyclegan import Discriminator, Generator
from tests.conftest import assert_same_weights, compose_train, run_cli

# A tiny CycleGAN on the fake dataset: domain B is domain A inverted.
TINY_CYCLE = ["task=cyclegan", "dataset=fake", "dataset.num_samples=64", "trainer.device=cpu", "trainer.batch_size=8",
              "trainer.max_steps=4", "trainer.num_threads=1", "model.generator.ngf=4", "model.generator.blocks=1",
              "model.discriminator.ndf=4", "model.discriminator.layers=1", "task.domain_b=invert",
              "task.preview_images=3", "log.every_n_steps=2", "log.sample_every_n_steps=2", "eval.enabled=false",
              "ema.start_step=1"]


# ---------------------------------------------------------------- image pool

def test_pool_returns_fakes_while_filling_then_swaps_with_stored_ones() -> None:
    torch.manual_seed(0)
    pool = ImagePool(size=6)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first) and pool.filled == 4
    second = torch.arange(10.0, 14.0).view(4, 1, 1, 1)
    returned = pool.query(second)  # 2 fill the pool (returned as they are), 2 may be swapped
    assert pool.filled == 6 and torch.equal(returned[:2], second[:2])
    swapped = 0
    for _ in range(20):
        before = pool.images.flatten().tolist()
        new = torch.rand(4, 1, 1, 1) + 100
        returned = pool.query(new)
        # Nothing is lost or made up: what comes back plus what stays is what was there plus the new batch.
        after = returned.flatten().tolist() + pool.images.flatten().tolist()
        assert sorted(after) == sorted(before + new.flatten().tolist())
        swapped += int((returned != new).sum())
    assert 20 < swapped < 60  # about half of the 80 fakes came back as older ones


def test_pool_of_size_zero_passes_through_and_state_round_trips() -> None:
    fakes = torch.randn(3, 1, 2, 2)
    assert torch.equal(ImagePool(0).query(fakes), fakes)
    pool = ImagePool(4)
    pool.query(torch.randn(3, 1, 2, 2))
    restored = ImagePool(4)
    restored.load_state_dict(pool.state_dict())
    assert restored.filled == 3 and torch.equal(restored.images, pool.images)


# ---------------------------------------------------------------- learning-rate schedules

def test_schedule_factors() -> None:
    assert Constant()(0.7) == 1.0
    decay = LinearDecay(start=0.5)
    assert [decay(p) for p in (0.0, 0.5, 0.75, 1.0)] == [1.0, 1.0, 0.5, 0.0]
    cosine = Cosine(final=0.1)
    assert [cosine(p) for p in (0.0, 0.5, 1.0)] == pytest.approx([1.0, 0.55, 0.1])
    with pytest.raises(GanCliError, match="lr_schedule.start"):
        LinearDecay(start=1.0)


def test_schedules_step_every_optimizer_and_resume_takes_the_configured_rate() -> None:
    make = lambda lr: torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)  # noqa: E731
    optimizers = {"g": make(1.0), "d": make(2.0)}
    schedules = Schedules(LinearDecay(0.5), optimizers, total_steps=10)
    for _ in range(8):
        for optimizer in optimizers.values():
            optimizer.step()
        schedules.step()
    assert optimizers["g"].param_groups[0]["lr"] == pytest.approx(0.4)  # (1 - 0.8) / 0.5
    assert optimizers["d"].param_groups[0]["lr"] == pytest.approx(0.8)
    # A resumed run configured with another rate: the config wins, at the same point of the schedule.
    fresh = {"g": make(0.5), "d": make(2.0)}
    resumed = Schedules(LinearDecay(0.5), fresh, total_steps=10)  # train() builds them, then restores
    fresh["g"].load_state_dict(optimizers["g"].state_dict())  # the checkpoint's optimizer holds lr 0.4
    resumed.load_state_dict(schedules.state_dict(), step=8)
    assert fresh["g"].param_groups[0]["lr"] == pytest.approx(0.2)


def test_train_applies_linear_decay_to_both_optimizers(tmp_path: Path) -> None:
    cfg = compose_train([*TINY_CYCLE, "lr_schedule=linear_decay", "lr_schedule.start=0.5", "optim.lr=1e-3"])
    train(cfg, run_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    for name in ("g", "d"):  # after 4 of 4 steps: factor (1 - 4/4) / 0.5 = 0
        assert state["optimizers"][name]["param_groups"][0]["lr"] == pytest.approx(0.0)
    assert state["schedules"] == {"g": {"last_epoch": 4}, "d": {"last_epoch": 4}}


# ---------------------------------------------------------------- domains

def test_transforms_on_a_single_stroke() -> None:
    noise = torch.Generator().manual_seed(0)
    dot = torch.zeros(1, 1, 5, 5, dtype=torch.uint8)
    dot[0, 0, 2, 2] = 200
    thick = dilate(dot, noise)
    assert thick[0, 0, 1:4, 1:4].eq(200).all() and thick.sum() == 9 * 200
    assert torch.equal(erode(thick, noise), dot)
    assert torch.equal(invert(dot, noise), 255 - dot)
    colour = colorize(dot, noise)
    assert colour.shape == (1, 3, 5, 5) and colour.dtype == torch.uint8
    assert not torch.equal(colour[0, :, 2, 2], colour[0, :, 0, 0])  # ink and background differ
    assert colour[0, :, 0, 0].tolist() == colour[0, :, 4, 4].tolist()  # one background colour


def test_domains_from_one_dataset_are_disjoint_halves() -> None:
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 1, 4, 4).contiguous()
    data = ImageData(images, torch.arange(20) % 10, 10)
    domains = from_dataset(data, None, "none", "colorize", seed=3)
    rows_a = set(domains.train_a.images[:, 0, 0, 0].tolist())
    assert len(rows_a) == 10 and domains.train_b.images.shape == (10, 3, 4, 4)
    assert domains.train_a.images.shape[1] == 3  # gray beside colour: both RGB
    assert torch.equal(domains.train_a.labels, domains.train_a.images[:, 0, 0, 0].long() % 10)  # labels follow
    with pytest.raises(GanCliError, match="task.domain_b='blur'"):
        from_dataset(data, None, "none", "blur", seed=3)


def write_pngs(folder: Path, count: int, size: tuple[int, int], colour: int) -> None:
    folder.mkdir(parents=True)
    for index in range(count):
        Image.new("RGB", size, (colour, 255 - colour, 40)).save(folder / f"img_{index}.png")


def make_unpaired(root: Path, with_test: bool = True) -> Path:
    for name, count in (("trainA", 10), ("trainB", 12)) + ((("testA", 3), ("testB", 4)) if with_test else ()):
        write_pngs(root / name, count, (40, 36), 200 if name.endswith("A") else 30)
    return root


def test_folder_layout_with_train_and_test_folders(tmp_path: Path) -> None:
    domains = load_unpaired_folder(root=str(make_unpaired(tmp_path / "h2z")), channels=3, image_size=32)
    shapes = [d.images.shape for d in (domains.train_a, domains.train_b, domains.test_a, domains.test_b)]
    assert shapes == [(10, 3, 32, 32), (12, 3, 32, 32), (3, 3, 32, 32), (4, 3, 32, 32)]
    assert domains.train_a.images[:, 0].float().mean() > 150 > domains.train_b.images[:, 0].float().mean()
    no_test = load_unpaired_folder(root=str(make_unpaired(tmp_path / "other", with_test=False)), channels=1,
                                   image_size=16)
    assert no_test.test_b.images.shape == (12, 1, 16, 16)  # the training images stand in


def test_unpaired_folder_trains_and_a_missing_domain_is_one_line(tmp_path: Path) -> None:
    root = make_unpaired(tmp_path / "h2z")
    folder = ["dataset=unpaired", f"dataset.root={root}", "dataset.image_size=16",
              *[o for o in TINY_CYCLE if not o.startswith(("dataset", "task.domain"))]]
    assert train(compose_train(folder), run_dir=tmp_path / "run")["steps"] == 4
    (root / "trainB" / "img_0.png").unlink()
    for path in (root / "trainB").iterdir():
        path.unlink()
    result = run_cli("gan-train", [*folder, f"hydra.run.dir={tmp_path / 'r2'}"], cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "trainB holds no images" in result.stderr


# ---------------------------------------------------------------- networks

@pytest.mark.parametrize("size, downsamplings", [(28, 2), (32, 2), (64, 2), (16, 1)])
def test_generator_keeps_the_size_and_patchgan_scores_patches(size: int, downsamplings: int) -> None:
    generator = Generator(1, 3, ngf=4, blocks=2, downsamplings=downsamplings)
    images = torch.rand(2, 1, size, size) * 2 - 1
    out = generator(images)
    assert out.shape == (2, 3, size, size) and out.abs().max() <= 1
    logits = Discriminator(3, ndf=4, layers=2)(out)
    assert logits.dim() == 1 and logits.numel() % 2 == 0 and logits.numel() > 2  # several patches per image
    with pytest.raises(GanCliError, match="multiple of"):
        Generator(1, 1, ngf=4, blocks=1, downsamplings=3)(torch.zeros(1, 1, 28, 28))


# ---------------------------------------------------------------- the task in the loop

def test_cyclegan_logs_its_own_statistics_and_a_six_row_grid(tmp_path: Path) -> None:
    metrics = train(compose_train(TINY_CYCLE), run_dir=tmp_path)
    for name in ("loss/g", "loss/cycle", "loss/identity", "loss/d_a", "loss/d_b"):
        assert math.isfinite(metrics[name]), name
    grid = Image.open(tmp_path / "samples" / "step_0000004.png")
    assert grid.size == (3 * 30 + 2, 6 * 30 + 2)  # rows a | G_ab(a) | rec a | b | G_ba(b) | rec b, 28 px + padding
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert set(state["networks"]) == {"g_ab", "g_ba", "d_a", "d_b", "pool_a", "pool_b"}
    assert set(state["averages"]) == {"g_ab", "g_ba"} and set(state["optimizers"]) == {"g", "d"}


def test_cyclegan_resume_is_bitwise(tmp_path: Path) -> None:
    straight = [*TINY_CYCLE, "trainer.max_steps=6", "trainer.ckpt_every_n_steps=3"]
    train(compose_train(straight), run_dir=tmp_path / "straight")
    # Continue from the straight run's step-3 checkpoint: the same run, interrupted there.
    middle = tmp_path / "straight" / "checkpoints" / "step_0000003.pt"
    train(compose_train([*straight, f"trainer.resume={middle}"]), run_dir=tmp_path / "resumed")
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed", 6)


@pytest.mark.slow
def test_eval_scores_both_directions_against_doing_nothing(tmp_path: Path) -> None:
    cfg = compose_train([*TINY_CYCLE, "eval.enabled=true", "eval.num_samples=32", "eval.batch_size=16",
                         "eval.classifier_epochs=1", "eval.kid_subsets=2", "eval.kid_subset_size=8",
                         f"eval.cache_dir={tmp_path / 'cache'}", "task.domain_b=dilate"])
    metrics = train(cfg, run_dir=tmp_path / "run")
    for direction in ("a2b", "b2a"):
        for name in ("fd_classifier", "label_kept", "ink_ratio"):
            assert math.isfinite(metrics[f"metrics/{name}_{direction}"])
            assert math.isfinite(metrics[f"baseline/{name}_{direction}"])
    # Doing nothing: thin images have less ink than thick ones (fake data: mean 129.5 vs 140.6 dilated).
    assert metrics["baseline/ink_ratio_a2b"] == pytest.approx(129.5 / 140.6, abs=0.02)
    assert metrics["baseline/ink_ratio_b2a"] > 1.05
    assert metrics["best_fd_classifier_mean"] <= metrics["metrics/fd_classifier_mean"]
    # The baselines are constants of the run: the Text tab and metrics.json, not one-point charts
    from tests.test_cli import read_tb

    events = read_tb(tmp_path / "run")
    assert not [tag for tag in events.Tags()["scalars"] if tag.startswith("baseline/")]
    assert "baseline/text_summary" in events.Tags()["tensors"]
    (table,) = events.Tensors("baseline/text_summary")
    assert "| baseline/ink_ratio_a2b |" in table.tensor_proto.string_val[0].decode()
    # HParams orders its metric columns by tag (TensorBoard sorts the session's scalar tags): the
    # score best.pt holds comes first, at the best value of the run
    assert sorted(events.Tags()["scalars"])[0] == "best/fd_classifier_mean"
    assert events.Scalars("best/fd_classifier_mean")[-1].value == pytest.approx(metrics["best_fd_classifier_mean"])


def test_gan_sample_translates_a_folder_an_npz_and_the_test_split(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_cli("gan-train", [*TINY_CYCLE, f"hydra.run.dir={run}"], cwd=tmp_path)
    checkpoint = f"checkpoint={run}/checkpoints/last.pt"
    run_cli("gan-sample", [checkpoint, "input=test", "direction=b2a", "num_samples=5", "out=test.npz"], cwd=tmp_path)
    assert np.load(tmp_path / "test.npz")["arr_0"].shape == (5, 28, 28, 1)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("seven", "three"):
        Image.new("L", (56, 56), 90).save(inputs / f"{name}.png")  # resized to the training size
    run_cli("gan-sample", [checkpoint, f"input={inputs}", "out=translated"], cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "translated").iterdir()) == ["seven.png", "three.png"]
    assert Image.open(tmp_path / "translated" / "seven.png").size == (28, 28)
    np.savez(tmp_path / "in.npz", arr_0=np.full((3, 28, 28, 1), 7, dtype=np.uint8))
    run_cli("gan-sample", [checkpoint, f"input={tmp_path / 'in.npz'}", "out=pairs.png", "nrow=2"], cwd=tmp_path)
    assert Image.open(tmp_path / "pairs.png").size == (2 * 30 + 2, 3 * 30 + 2)  # input | output per row
    result = run_cli("gan-sample", [checkpoint, "out=x.png"], cwd=tmp_path, check=False)
    assert result.returncode == 2 and "input=" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_cyclegan_sigkill_then_resume_auto_is_bitwise(tmp_path: Path) -> None:
    """As the image_gan SIGKILL test: a run killed mid-way and resumed ends with the same weights,
    EMA copies and image pools as one that ran through."""
    import signal

    from tests.test_resilience import LONG, start_training, wait_for_checkpoint

    cycle = ["task=cyclegan", "model.generator.blocks=1", "model.discriminator.layers=1", "task.domain_b=invert",
             "ema.start_step=5", "trainer.max_steps=80"]
    run_cli("gan-train", [*LONG, *cycle, f"hydra.run.dir={tmp_path / 'reference'}"], cwd=tmp_path)
    killed = tmp_path / "killed"
    process = start_training(killed, cycle)
    wait_for_checkpoint(killed, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    newest = max(int(p.stem.split("_")[1]) for p in (killed / "checkpoints").glob("step_*.pt"))
    assert 20 <= newest < 80, "the kill must land mid-run"
    run_cli("gan-train", [*LONG, *cycle, f"hydra.run.dir={killed}", "trainer.resume=auto"], cwd=tmp_path)
    assert_same_weights(tmp_path / "reference", killed, 80)
