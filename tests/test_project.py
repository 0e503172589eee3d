"""gan-project on tiny checkpoints: the fit improves, masks decide which pixels count, G's own
images are found again, saved latents redraw the same bits in gan-sample, and every bad input is
one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.apps.project import main, project
from gan_cli.core.errors import GanCliError
from gan_cli.evaluate.classifier import SmallCNN
from gan_cli.evaluate.metrics import dataset_key
from gan_cli.loop.train import train
from gan_cli.sampling.sample import sample
from tests.conftest import REPO, TINY_FAKE, compose_train, one_line_error
from tests.test_pix2pix import TINY_P2P
from tests.test_stylegan2 import TINY_SG

FAST = ["device=cpu", "perceptual_weight=0", "starts=2"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An unconditional DCGAN, a conditional StyleGAN2 (EMA from step 0: w_avg reaches the copy
    gan-project loads) and a pix2pix (an image -> image task)."""
    torch.set_num_threads(1)  # tiny models: a second thread on a shared 2-core machine only waits
    root = tmp_path_factory.mktemp("runs")
    runs = {"dcgan": [*TINY_FAKE, "ema.start_step=0"],
            "stylegan2": [*TINY_SG, "model.conditional=true", "dataset.num_classes=10", "ema.start_step=0"],
            "pix2pix": TINY_P2P}
    for name, overrides in runs.items():
        train(compose_train(overrides), run_dir=root / name)
    return {name: root / name / "checkpoints/last.pt" for name in runs}


def run(config: str, function, checkpoint: Path, out: Path, *overrides: str) -> Path:  # type: ignore[no-untyped-def]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config, overrides=[f"checkpoint={checkpoint}", f"out={out}", "device=cpu", *overrides])
    return function(cfg)


def projected(checkpoint: Path, target: Path, out: Path, *overrides: str) -> dict[str, np.ndarray]:
    run("project", project, checkpoint, out, f"target={target}", *FAST, *overrides)
    with np.load(out) as saved:
        return {name: saved[name] for name in saved.files}


def drawn(checkpoint: Path, out: Path, *overrides: str) -> Path:
    return run("sample", sample, checkpoint, out, *overrides)


def targets_of(checkpoint: Path, folder: Path, *overrides: str) -> Path:
    """Images G itself draws (gan-sample seeds=...): targets it can reach."""
    return drawn(checkpoint, folder / "targets.npz", *overrides)


@pytest.mark.parametrize("model, extra", [("dcgan", []), ("stylegan2", ["class=1"])])
def test_projection_lowers_the_loss(checkpoints: dict[str, Path], tmp_path: Path, model: str,
                                   extra: list[str]) -> None:
    """steps=1 leaves the starts as they are (the learning rate ramps up from 0): the loss after
    40 steps must be lower for every target."""
    target = targets_of(checkpoints[model], tmp_path, "seeds=[11,12,13]")
    start = projected(checkpoints[model], target, tmp_path / "start.npz", "steps=1", *extra)
    end = projected(checkpoints[model], target, tmp_path / "end.npz", "steps=40", *extra)
    assert (end["loss"] < start["loss"]).all(), (start["loss"], end["loss"])
    again = projected(checkpoints[model], target, tmp_path / "again.npz", "steps=40", *extra)
    assert np.array_equal(again["latents"], end["latents"])  # same seed, same result


def write_random_classifier(cache: Path, checkpoint: Path) -> None:
    """A fixed random SmallCNN where gan-project looks for the dataset's cached classifier: its
    features exercise the perceptual term without training one (tens of seconds)."""
    from gan_cli.core.trusted import stored_config

    dataset = stored_config(torch.load(checkpoint, weights_only=True), checkpoint).dataset
    path = cache / "gan_cli" / f"{dataset_key(dataset)}_classifier_e4.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save({"model": SmallCNN(dataset.channels, dataset.num_classes).state_dict(), "test_accuracy": 0.0}, path)


@pytest.mark.parametrize("model, extra", [("dcgan", []), ("stylegan2", ["class=2"])])
def test_pixels_outside_the_mask_do_not_count(checkpoints: dict[str, Path], tmp_path: Path, model: str,
                                             extra: list[str]) -> None:
    """Changing the bottom half of the target changes nothing with mask=top_half (pixel and
    perceptual terms both), and changes the result without a mask."""
    write_random_classifier(tmp_path, checkpoints[model])
    options = [*extra, "steps=15", "perceptual_weight=0.5", f"cache_dir={tmp_path / 'gan_cli'}"]
    images = np.load(targets_of(checkpoints[model], tmp_path, "seeds=[5,6]"))["arr_0"]
    changed = images.copy()
    changed[:, 14:] = np.random.default_rng(0).integers(0, 256, changed[:, 14:].shape, dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images)
    np.savez(tmp_path / "b.npz", changed)
    Image.fromarray(np.repeat(np.uint8([255, 0]), 14)[:, None].repeat(28, 1)).save(tmp_path / "top.png")
    results = {}
    for target in ("a", "b"):
        for mask in ("top_half", str(tmp_path / "top.png"), "none"):
            name = f"{target}_{Path(mask).stem}"
            results[name] = projected(checkpoints[model], tmp_path / f"{target}.npz", tmp_path / f"{name}.npz",
                                      f"mask={mask}", *options)["latents"]
    assert np.array_equal(results["a_top_half"], results["b_top_half"])
    assert np.array_equal(results["a_top_half"], results["a_top"])  # the same mask as an image
    assert not np.array_equal(results["a_none"], results["b_none"])


@pytest.mark.parametrize("space", ["z", "w"])
def test_gs_own_image_is_found_again(checkpoints: dict[str, Path], tmp_path: Path, space: str) -> None:
    """Targets G drew from known latents (class 4): the projections are far closer to them than
    G's images of other latents are."""
    images = np.load(targets_of(checkpoints["stylegan2"], tmp_path, "seeds=[21,22,23]", "class=4"))["arr_0"]
    result = projected(checkpoints["stylegan2"], tmp_path / "targets.npz", tmp_path / "p.npz", "class=4",
                       f"space={space}", "starts=4", "steps=150")
    error = np.square(result["arr_0"].astype(float) - images).mean((1, 2, 3))
    others = np.square(np.roll(images, 1, axis=0).astype(float) - images).mean((1, 2, 3))
    assert (error < 0.01 * others).all(), (error, others)


@pytest.mark.parametrize("model, space", [("dcgan", "z"), ("stylegan2", "w"), ("stylegan2", "w_plus")])
def test_latents_round_trip_through_gan_sample(checkpoints: dict[str, Path], tmp_path: Path, model: str,
                                               space: str) -> None:
    target = targets_of(checkpoints[model], tmp_path, "seeds=[1,2,3]")
    result = projected(checkpoints[model], target, tmp_path / "p.npz", f"space={space}", "steps=5")
    again = np.load(drawn(checkpoints[model], tmp_path / "again.npz", f"latents={tmp_path / 'p.npz'}"))
    assert np.array_equal(again["arr_0"], result["arr_0"]) and str(result["space"]) == space
    if model == "stylegan2":  # conditional, every class tried: the kept candidates' classes
        assert np.array_equal(again["arr_1"], result["labels"]) and result["labels"].shape == (3,)
    walk = drawn(checkpoints[model], tmp_path / "walk.gif", f"latents={tmp_path / 'p.npz'}", "interpolate=5",
                 "upscale=1")
    with Image.open(walk) as gif:
        assert gif.n_frames == 5 and np.array_equal(np.asarray(gif.convert("L")), result["arr_0"][0, :, :, 0])


def test_png_folder_and_gif_outputs(checkpoints: dict[str, Path], tmp_path: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    target = targets_of(checkpoints["dcgan"], tmp_path, "seeds=0-4")
    run("project", project, checkpoints["dcgan"], tmp_path / "grid.png", f"target={target}", *FAST, "steps=8",
        f"gif={tmp_path / 'steps.gif'}", "upscale=1", "mask=left_half")
    with Image.open(tmp_path / "grid.png") as grid:  # 5 targets: 3 columns, 2 x (targets, projections) rows
        assert grid.size == (3 * 30 + 2, 4 * 30 + 2)
    with Image.open(tmp_path / "steps.gif") as gif:
        # a frame per step (8 < 40 frames) and the result; Pillow merges the first two (the first step's
        # learning rate is 0, so the second frame is the first)
        assert gif.n_frames == 8 and gif.size == (3 * 30 + 2, 4 * 30 + 2)
    run("project", project, checkpoints["dcgan"], tmp_path / "pngs", f"target={tmp_path / 'grid.png'}", *FAST,
        "steps=2")  # one 92x122 image, resized (with a note) to 28x28
    assert [p.name for p in (tmp_path / "pngs").iterdir()] == ["000000.png"]
    assert "1 image(s) of 92x122 px resized to the generator's 28x28 px" in caplog.text




def write_lpips(path: Path, net: str, seed: int = 0) -> Path:
    """A state dict in the layout of the lpips package's LPIPS(net=...), with random weights:
    backbone under net.sliceK.I.*, heads as linK.model.1.weight and (a ModuleList of the same
    modules) lins.K.model.1.weight, and the input scaling."""
    import torchvision

    from gan_cli.sampling.lpips import SLICE_ENDS

    torch.manual_seed(seed)
    features = (torchvision.models.vgg16 if net == "vgg" else torchvision.models.alexnet)(weights=None).features
    state: dict[str, torch.Tensor] = {"scaling_layer.shift": torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1),
                                      "scaling_layer.scale": torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)}
    start = 0
    for k, end in enumerate(SLICE_ENDS[net], 1):
        for index in range(start, end):
            for name, value in features[index].state_dict().items():
                state[f"net.slice{k}.{index}.{name}"] = value
        width = [m.out_channels for m in features[:end] if isinstance(m, torch.nn.Conv2d)][-1]
        state[f"lin{k - 1}.model.1.weight"] = state[f"lins.{k - 1}.model.1.weight"] = torch.rand(1, width, 1, 1)
        start = end
    torch.save(state, path)
    return path


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_from_a_weights_file_is_the_perceptual_term(checkpoints: dict[str, Path], tmp_path: Path,
                                                          net: str) -> None:
    """lpips=FILE: the backbone's weights land where torchvision's network has them (its stages are
    torchvision's own slices), each head weighs its stage, and projection with it lowers the loss."""
    import torchvision

    from gan_cli.sampling.lpips import SLICE_ENDS, load_lpips
    from gan_cli.sampling.project_terms import FitLoss

    file = write_lpips(tmp_path / f"lpips_{net}.pt", net)
    lpips = load_lpips(str(file), torch.device("cpu"))
    state = torch.load(file, weights_only=True)
    reference = (torchvision.models.vgg16 if net == "vgg" else torchvision.models.alexnet)(weights=None).features
    reference.load_state_dict({k.split(".", 2)[2]: v for k, v in state.items() if k.startswith("net.")})
    images = torch.rand(2, 1, 28, 28) * 2 - 1
    x = torch.nn.functional.interpolate(images.expand(-1, 3, -1, -1), size=(64, 64), mode="bilinear")
    x = (x - state["scaling_layer.shift"]) / state["scaling_layer.scale"]
    stages = lpips(images)
    assert torch.allclose(stages[-1], reference[: SLICE_ENDS[net][-1]](x), atol=1e-5)
    # LPIPS of two images: the heads' weighted sum; with every head zero, the distance is zero
    target, other = images[:1], images[1:]
    fit = FitLoss(target, torch.ones(1, 1, 28, 28), lpips, pixel_weight=0.0, perceptual_weight=1.0)
    assert fit(other, torch.tensor([0])).item() > 0 and fit(target, torch.tensor([0])).item() == 0
    for head in lpips.heads:
        head.data.zero_()
    assert fit(other, torch.tensor([0])).item() == 0
    target_file = targets_of(checkpoints["dcgan"], tmp_path, "seeds=[11,12]")
    options = ["perceptual_weight=1.0", f"lpips={file}"]
    start = projected(checkpoints["dcgan"], target_file, tmp_path / "start.npz", "steps=1", *options)
    end = projected(checkpoints["dcgan"], target_file, tmp_path / "end.npz", "steps=20", *options)
    assert (end["loss"] < start["loss"]).all(), (start["loss"], end["loss"])


@pytest.mark.parametrize("args, expected", [
    ([], "target= is required"),
    (["target=nowhere.png"], "target=nowhere.png does not exist"),
    (["target=T", "mask=diagonal"], "mask=diagonal: allowed are none, top_half"),
    (["target=T", "mask=SMALL"], "is 10x10 px; the generator draws 28x28 px images"),
    (["target=T", "space=w"], "space=w: this generator (dcgan) has no mapping network"),
    (["target=T", "class=3"], "class=3: this generator is unconditional"),
    (["target=T", "out=p.jpg"], "unknown extension '.jpg'"),
    (["target=T", "stpes=10"], "unknown key stpes: did you mean steps?"),
    (["target=T", "pixel_weight=0"], "nothing to fit"),
    (["target=T", "starts=0"], "invalid value starts=0"),
    (["target=T", "checkpoint=P2P"], "is a Pix2Pix (an image -> image task)"),
    (["target=T", "perceptual_weight=1", "lpips=nowhere.pt"], "lpips=nowhere.pt does not exist"),
    (["target=T", "perceptual_weight=1", "lpips=T"], "targets.npz is not a torch.save file of tensors"),
    (["target=T", "perceptual_weight=1", "lpips=NOTLPIPS"], "is not a state dict of lpips.LPIPS(net='vgg' or 'alex')"),
])
def test_each_error_is_one_line(checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str], args: list[str], expected: str) -> None:
    Image.new("L", (10, 10)).save(tmp_path / "small.png")
    target = targets_of(checkpoints["dcgan"], tmp_path, "seeds=[1]")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "not_lpips.pt")
    swap = {"T": str(target), "SMALL": str(tmp_path / "small.png"), "P2P": str(checkpoints["pix2pix"]),
            "NOTLPIPS": str(tmp_path / "not_lpips.pt")}
    args = [arg.split("=")[0] + "=" + swap.get(arg.split("=")[1], arg.split("=")[1]) for arg in args]
    given = [f"checkpoint={checkpoints['dcgan']}", f"out={tmp_path / 'p.npz'}", "perceptual_weight=0",
             "pixel_weight=1", "device=cpu"]
    keys = {arg.split("=")[0] for arg in args}
    err = one_line_error(monkeypatch, capsys, main, "gan-project",
                         [*(g for g in given if g.split("=")[0] not in keys), *args])
    assert expected in err and not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("model, args, expected", [
    ("dcgan", ["seeds=[1,2]"], "seeds=[1, 2] does not go with latents="),
    ("dcgan", ["truncation=0.5"], "truncation=0.5 does not go with latents="),
    ("stylegan2", [], "this generator takes (N, 8) in space z"),  # the DCGAN's z (2, 100)
    ("dcgan", ["latents=TARGETS"], "holds no `latents` array"),
])
def test_bad_latents_for_gan_sample(checkpoints: dict[str, Path], tmp_path: Path, model: str, args: list[str],
                                    expected: str) -> None:
    target = targets_of(checkpoints["dcgan"], tmp_path, "seeds=[1,2]")
    projected(checkpoints["dcgan"], target, tmp_path / "p.npz", "steps=1")
    overrides = [f"latents={tmp_path / 'p.npz'}", *(arg.replace("TARGETS", str(target)) for arg in args)]
    with pytest.raises(GanCliError) as error:
        drawn(checkpoints[model], tmp_path / "x.npz", *overrides)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_module_runs_as_the_console_script(tmp_path: Path) -> None:
    """`python -m gan_cli.apps.project`, what the gan-project script calls, from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run([sys.executable, "-m", "gan_cli.apps.project", "target=x.png"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: checkpoint= is required")
    assert len(result.stderr.strip().splitlines()) == 1
