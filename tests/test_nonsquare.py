"""Non-square image sizes (issue #25): `image_size=[H,W]`, height first, from gan-data through the
converted loader, the folder and fake datasets and the z -> image models to sample grids and
evaluation; an integer still means a square, and every bad size is one line naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.apps.data import convert
from gan_cli.apps.data import main as data_main
from gan_cli.core.config import validate
from gan_cli.core.errors import GanCliError
from gan_cli.data.converted import load_converted
from gan_cli.data.datasets import load_fake, load_image_folder
from gan_cli.loop.train import train
from gan_cli.models import dcgan, mlp, resnet, stylegan2
from gan_cli.sampling.sample import sample
from tests.conftest import TINY, compose_train, one_line_error, run_cli

HEIGHT, WIDTH = 12, 16  # the smallest side 12 = 6 * 2: DCGAN's one stage from a 6x8 base
SIZE = f"[{HEIGHT},{WIDTH}]"
MLP = [o for o in TINY if "ngf" not in o and "ndf" not in o] + ["model=mlp", "model.generator.hidden=[16]",
                                                                 "model.discriminator.hidden=[16]"]
STYLEGAN2 = [o for o in TINY if "ngf" not in o and "ndf" not in o] + [
    "model=stylegan2", "model.z_dim=8", "model.w_dim=8", "model.mapping_layers=1", "model.channel_base=56",
    "model.channel_max=8", "trainer.batch_size=8", "model.discriminator.minibatch_std=4"]
MODELS = {"dcgan": ["model=dcgan", *TINY], "mlp": MLP, "stylegan2": STYLEGAN2}


def compose_data(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("data", overrides=overrides)


def gan_data(source: Path, out: Path, *args: str) -> Path:
    return convert(compose_data([f"source={source}", f"out={out}", *args]))


def banded(folder: Path) -> Path:
    """A 32x32 grayscale PNG, black in its top and bottom quarters, white between, and a 50 wide,
    20 high JPEG: neither of the target's shape."""
    folder.mkdir(parents=True)
    pixels = np.full((32, 32), 255, dtype=np.uint8)
    pixels[:8], pixels[24:] = 0, 0
    Image.fromarray(pixels).save(folder / "a_bands.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 50, 3), dtype=np.uint8)).save(folder / "b_wide.jpg")
    return folder


def labelled_folder(root: Path) -> Path:
    """Two class folders of 20 high, 30 wide RGB PNGs (FD's feature classifier needs two classes)."""
    rng = np.random.default_rng(1)
    for label in range(2):
        (root / f"class_{label}").mkdir(parents=True)
        for index in range(16):
            pixels = rng.integers(0, 120 + 100 * label, (20, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class_{label}" / f"{index}.png")
    return root


def test_gan_data_makes_height_by_width_images_in_each_crop_mode(tmp_path: Path) -> None:
    """To 8 high x 16 wide: center scales the square to 16x16 and keeps rows 4..12 (the white
    middle), resize squeezes it (a black band of 2 rows above and below), pad scales it to 8x8
    with black bars left and right."""
    source = banded(tmp_path / "src")
    fitted = {}
    for crop in ("center", "resize", "pad"):
        out = gan_data(source, tmp_path / crop, "image_size=[8,16]", "channels=1", f"crop={crop}", "num_workers=0")
        images = np.load(out / "images.npy")
        assert images.shape == (2, 1, 8, 16) and images.dtype == np.uint8
        assert json.loads((out / "dataset.json").read_text())["size"] == [8, 16]
        fitted[crop] = images[0, 0]
    assert fitted["center"].min() > 230  # no band: Lanczos' ringing only, at the edge rows
    assert fitted["resize"][:2].max() < 20 and fitted["resize"][-2:].max() < 20 and fitted["resize"][3:5].min() > 245
    assert (fitted["pad"][:, :4] == 0).all() and (fitted["pad"][:, 12:] == 0).all()
    assert fitted["pad"][3:5, 4:12].min() > 245 and fitted["pad"][:2, 4:12].max() < 20  # the bands, scaled


def test_gan_data_paired_halves_become_height_by_width_pairs(tmp_path: Path) -> None:
    """layout=paired: each file's A | B halves (20 high, 30 wide each) fitted to 8 x 16 apiece."""
    (tmp_path / "src" / "train").mkdir(parents=True)
    pixels = np.zeros((20, 60), dtype=np.uint8)
    pixels[:, 30:] = 200  # A black, B grey
    Image.fromarray(pixels).save(tmp_path / "src" / "train" / "0.png")
    out = gan_data(tmp_path / "src", tmp_path / "pairs", "layout=paired", "image_size=[8,16]", "channels=1",
                   "num_workers=0")
    images = np.load(out / "train" / "images.npy")
    assert images.shape == (1, 2, 8, 16) and images[0, 0].max() == 0 and images[0, 1].min() == 200
    assert json.loads((out / "train" / "dataset.json").read_text())["size"] == [8, 16]


def test_the_printed_train_command_runs_as_printed(tmp_path: Path) -> None:
    """gan-data's `train with: gan-train ...` line, pasted as it is (the size as one shell word,
    [12,16]), trains: the console scripts parse [H,W] as a user types it."""
    source = labelled_folder(tmp_path / "src")
    printed = run_cli("gan-data", [f"source={source}", f"out={tmp_path / 'data'}", f"image_size={SIZE}",
                                   "channels=1", "num_workers=0"], cwd=tmp_path).stdout
    command = printed.split("train with: ")[1].split()
    assert command[0] == "gan-train" and f"dataset.image_size={SIZE}" in command, printed
    run_cli("gan-train", [*command[1:], *TINY, "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'run'}"],
            cwd=tmp_path)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_an_int_dataset_json_loads_and_a_size_mismatch_says_the_value_to_paste(tmp_path: Path) -> None:
    """A dataset.json as gan-data wrote it before non-square sizes ("size": 16) reads as 16 and as
    [16,16]; a config asking for another size is told the setting to paste."""
    out = tmp_path / "old"
    out.mkdir()
    np.save(out / "images.npy", np.zeros((3, 1, 16, 16), dtype=np.uint8))
    np.save(out / "labels.npy", np.zeros(3, dtype=np.int64))
    (out / "dataset.json").write_text(json.dumps({"format": 1, "count": 3, "channels": 1, "size": 16,
                                                  "classes": [], "source": "old gan-data"}))
    for size in (16, [16, 16]):
        assert load_converted(root=str(out), channels=1, image_size=size, num_classes=0).images.shape == (3, 1, 16, 16)
    wide = gan_data(banded(tmp_path / "src"), tmp_path / "wide", "image_size=[8,16]", "channels=1", "num_workers=0")
    for asked, expected in ((16, "holds 1x8x16 images but the config asks for dataset.channels=1 "
                                 "dataset.image_size=16: set dataset.channels=1 dataset.image_size=[8,16]"),
                            ([16, 8], "dataset.image_size=[16,8]: set dataset.channels=1 dataset.image_size=[8,16]")):
        with pytest.raises(GanCliError) as caught:
            load_converted(root=str(wide), channels=1, image_size=asked, num_classes=0)
        assert expected in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_folder_and_fake_datasets_take_height_by_width(tmp_path: Path) -> None:
    source = tmp_path / "folder" / "only"
    source.mkdir(parents=True)
    pixels = np.full((40, 40), 255, dtype=np.uint8)
    pixels[:10], pixels[30:] = 0, 0  # black top and bottom quarters
    Image.fromarray(pixels).save(source / "0.png")
    data = load_image_folder(root=str(tmp_path / "folder"), channels=1, image_size=[8, 16])
    assert data.images.shape == (1, 1, 8, 16)
    assert data.images.min() > 200 and data.images[..., 1:-1, :].min() > 250  # covered to 16x16, the middle kept
    assert load_fake(num_samples=4, channels=3, image_size=[8, 16], num_classes=2).images.shape == (4, 3, 8, 16)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nonsquare")
    return gan_data(labelled_folder(root / "src"), root / "converted", f"image_size={SIZE}", "channels=1",
                    "num_workers=0")


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_models_train_sample_and_evaluate_on_a_non_square_dataset(tmp_path: Path, converted: Path, model: str,
                                                                  in_memory: str) -> None:
    run = tmp_path / "run"
    metrics = train(compose_train([
        "dataset=converted", f"dataset.root={converted}", "dataset.channels=1", f"dataset.image_size={SIZE}",
        "dataset.num_classes=2", f"dataset.in_memory={in_memory}", "dataset.num_workers=0", *MODELS[model],
        "trainer.max_steps=2", "log.sample_every_n_steps=2", "log.num_samples=4", "eval.enabled=true",
        "eval.num_samples=16", "eval.batch_size=16", "eval.classifier_epochs=1", "eval.kid_subsets=2",
        "eval.kid_subset_size=8", f"eval.cache_dir={tmp_path / 'cache'}"]), run_dir=run)
    assert metrics["steps"] == 2 and np.isfinite(metrics["metrics/fd_classifier"])
    grid = Image.open(run / "samples" / "step_0000002.png")
    assert grid.size == (2 * (WIDTH + 2) + 2, 2 * (HEIGHT + 2) + 2)  # 2x2 cells with 2 px borders
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("sample", overrides=[f"checkpoint={run / 'checkpoints' / 'last.pt'}",
                                           f"out={tmp_path / 's.npz'}", "device=cpu", "num_samples=3"])
    assert np.load(sample(cfg))["arr_0"].shape == (3, HEIGHT, WIDTH, 1)


def test_gan_eval_judges_a_non_square_checkpoint_and_images(tmp_path: Path, converted: Path) -> None:
    """gan-eval checkpoint= draws H x W samples; images= reads an .npz of them (and of another size:
    resized to the dataset's); both against the converted dataset's cached classifier."""
    from gan_cli.evaluate.main import evaluate

    run = tmp_path / "run"
    train(compose_train(["dataset=converted", f"dataset.root={converted}", "dataset.channels=1",
                         f"dataset.image_size={SIZE}", "dataset.num_classes=2", *TINY, "trainer.max_steps=2"]),
          run_dir=run)
    common = ["metrics=[fd,prdc]", "num_samples=16", "num_threads=1", "device=cpu", "classifier_epochs=1",
              "kid_subsets=2", "kid_subset_size=8", f"cache_dir={tmp_path / 'cache'}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        scored = evaluate(compose("evaluate", [f"checkpoint={run / 'checkpoints' / 'last.pt'}", *common]))
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "wide.npz", rng.integers(0, 256, (16, 24, 40, 1), dtype=np.uint8))
        from_npz = evaluate(compose("evaluate", [f"images={tmp_path / 'wide.npz'}", "dataset=converted",
                                                 f"dataset.root={converted}", "dataset.channels=1",
                                                 f"dataset.image_size={SIZE}", "dataset.num_classes=2", *common]))
    assert np.isfinite(scored[0]["fd_classifier"]) and np.isfinite(from_npz[0]["fd_classifier"])
    assert sorted((tmp_path / "cache").glob(f"converted_1x{HEIGHT}x{WIDTH}_*_classifier_e1.pt"))  # no brackets


def test_gan_draw_and_gan_project_refuse_a_non_square_checkpoint_in_one_line(tmp_path: Path) -> None:
    from gan_cli.apps import draw_panels
    from gan_cli.apps.project import project
    from gan_cli.core.config import validate_draw

    train(compose_train(["dataset=fake", "dataset.num_samples=16", f"dataset.image_size={SIZE}", *TINY,
                         "trainer.max_steps=1"]), run_dir=tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    Image.new("L", (WIDTH, HEIGHT), 128).save(tmp_path / "target.png")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        calls = {"gan-project": lambda: project(compose("project", [f"checkpoint={checkpoint}", "device=cpu",
                                                                     f"target={tmp_path / 'target.png'}",
                                                                     f"out={tmp_path / 'p.npz'}"])),
                 "gan-draw": lambda: draw_panels.load(validate_draw(compose("draw", [f"checkpoint={checkpoint}",
                                                                                     "device=cpu"])))}
        for who, call in calls.items():
            with pytest.raises(GanCliError) as caught:
                call()
            assert str(caught.value) == (f"dataset.image_size={SIZE}: {who} supports square sizes only (an integer); "
                                         "[height, width] sizes are supported by task=image_gan (model=dcgan, mlp, "
                                         "resnet, stylegan2), task=text2image, gan-data, gan-sample and gan-eval")
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("model", ["text_dcgan", "text_stylegan2"])
def test_text_to_image_models_train_at_height_by_width(tmp_path: Path, model: str) -> None:
    """task=text2image's networks come from dcgan's and stylegan2's: the preview grid's cells are H x W."""
    from tests.test_text2image import TINY_MODELS, TINY_TEXT

    metrics = train(compose_train([*TINY_TEXT, *TINY_MODELS[model], f"dataset.image_size={SIZE}",
                                   "trainer.max_steps=2"]), run_dir=tmp_path)
    assert metrics["steps"] == 2
    grid = Image.open(tmp_path / "samples" / "step_0000002.png")  # 3 prompts x 3 samples each
    assert grid.size == (3 * (WIDTH + 2) + 2, 3 * (HEIGHT + 2) + 2)


@pytest.mark.parametrize("size, base", [([48, 64], (6, 8)), ([64, 48], (8, 6)), ([28, 56], (7, 14)),
                                        ([64, 128], (4, 8))])
def test_each_model_builds_height_by_width(size: list[int], base: tuple[int, int]) -> None:
    height, width = size
    z = torch.randn(2, 8)
    networks = [
        (dcgan.Generator(z_dim=8, channels=3, image_size=size, ngf=4),
         dcgan.Discriminator(channels=3, image_size=size, ndf=4, num_classes=3)),
        (mlp.Generator(z_dim=8, channels=3, image_size=size, hidden=[8]),
         mlp.Discriminator(channels=3, image_size=size, hidden=[8])),
        (resnet.Generator(z_dim=8, channels=3, image_size=size, ngf=4),
         resnet.Discriminator(channels=3, image_size=size, ndf=4)),
        (stylegan2.Generator(z_dim=8, w_dim=8, channels=3, image_size=size, channel_base=56, channel_max=4,
                             mapping_layers=1),
         stylegan2.Discriminator(channels=3, image_size=size, channel_base=56, channel_max=4, minibatch_std=2)),
    ]
    for generator, discriminator in networks:
        images = generator.eval()(z)
        assert images.shape == (2, 3, height, width), type(generator)
        labels = torch.tensor([0, 2]) if discriminator.num_classes else None
        assert discriminator.eval()(images, labels).shape == (2,), type(discriminator)
    assert networks[0][0].net[0].kernel_size == base  # G's first transposed conv: the base grid


@pytest.mark.parametrize("value, shown", [
    ("[8]", "[8]"), ("[0,16]", "[0,16]"), ("[16,16,3]", "[16,16,3]"), ("abc", "'abc'"), ("[4,16]", "[4,16]"),
    ("null", "None"), ("[16,abc]", "[16, 'abc']"),
])
def test_bad_sizes_are_one_line_naming_the_key(value: str, shown: str) -> None:
    with pytest.raises(GanCliError) as caught:
        validate(compose_train(["dataset=fake", f"dataset.image_size={value}"]))
    assert str(caught.value) == (f"invalid value dataset.image_size={shown}: allowed is an integer >= 8 or "
                                 "[height, width] of integers >= 8"), str(caught.value)


@pytest.mark.parametrize("args, expected", [
    (["image_size=[8]"], "invalid value image_size=[8]: allowed is an integer >= 4 or [height, width] of "
                         "integers >= 4"),
    (["image_size=[0,16]"], "invalid value image_size=[0,16]"),
    (["image_size=abc"], "invalid value image_size='abc'"),
])
def test_bad_gan_data_sizes_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str], args: list[str], expected: str) -> None:
    source = banded(tmp_path / "src")
    err = one_line_error(monkeypatch, capsys, data_main, "gan-data", [f"source={source}", f"out={tmp_path / 'o'}",
                                                                       *args])
    assert expected in err, err
    assert not (tmp_path / "o").exists()


BASIC = ["dataset=fake", "dataset.num_samples=16", "trainer.device=cpu", "trainer.num_threads=1",
         "trainer.max_steps=1", "trainer.batch_size=8", "eval.enabled=false"]


@pytest.mark.parametrize("overrides, expected", [
    (["model=dcgan", "dataset.image_size=[28,30]"], "model dcgan cannot build dataset.image_size=[28,30]: allowed"),
    (["model=dcgan", "dataset.image_size=[16,80]"], "model dcgan cannot build dataset.image_size=[16,80]"),
    (["model=stylegan2", "dataset.image_size=[28,30]"], "model stylegan2 cannot build dataset.image_size=[28,30]"),
    (["task=cyclegan", "dataset.image_size=[16,32]"], "dataset.image_size=[16,32]: task=cyclegan supports square "
                                                      "sizes only (an integer); [height, width] sizes are supported "
                                                      "by task=image_gan"),
    (["task=srgan", "dataset.image_size=[16,32]"], "task=srgan supports square sizes only"),
    (["task=pix2pix", "dataset.image_size=[16,32]"], "supports square sizes only"),
])
def test_sizes_a_model_or_task_cannot_build_are_one_line(tmp_path: Path, overrides: list[str], expected: str) -> None:
    with pytest.raises(GanCliError) as caught:
        train(validate(compose_train([*BASIC, *overrides])), run_dir=tmp_path / "run")
    assert expected in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
    assert "[48,64]" in str(caught.value) or "square sizes only" in str(caught.value)
