"""gan-sample's latent tools: seeds, truncation, walks and style-mixing grids, on tiny StyleGAN2
and DCGAN checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.core.errors import GanCliError
from gan_cli.loop.train import train
from gan_cli.sampling.latent_tools import parse_seeds, walk_positions
from gan_cli.sampling.sample import sample
from tests.conftest import TINY_FAKE, compose_train, run_cli
from tests.test_stylegan2 import TINY_SG


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A conditional tiny StyleGAN2 (EMA from step 0, so w_avg reaches the EMA copy) and a DCGAN."""
    root = tmp_path_factory.mktemp("runs")
    runs = {"stylegan2": [*TINY_SG, "model.conditional=true", "dataset.num_classes=10", "ema.start_step=0"],
            "dcgan": TINY_FAKE}
    for name, overrides in runs.items():
        train(compose_train(overrides), run_dir=root / name)
    return {name: root / name / "checkpoints/last.pt" for name in runs}


def draw(checkpoint: Path, out: Path, *overrides: str) -> Path:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("sample", overrides=[f"checkpoint={checkpoint}", f"out={out}", "device=cpu", *overrides])
    return sample(cfg)


def npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    data = np.load(path)
    return data["arr_0"], data["arr_1"] if "arr_1" in data else None


def test_seed_specs() -> None:
    assert list(parse_seeds("0-3") or []) == [0, 1, 2, 3] and parse_seeds([5, 1]) == [5, 1] and parse_seeds(7) == [7]
    assert parse_seeds(None) is None
    for bad in ("3-", "a", [], [1.5], -1):
        with pytest.raises(GanCliError, match="seeds="):
            parse_seeds(bad)
    assert walk_positions(3, 5) == [(0, 0.0), (0, 0.5), (1, 0.0), (1, 0.5), (1, 1.0)]


@pytest.mark.parametrize("model", ["stylegan2", "dcgan"])
def test_each_seed_draws_the_same_image_whatever_the_batch(checkpoints: dict[str, Path], tmp_path: Path,
                                                           model: str) -> None:
    one_by_one, one_by_one_labels = npz(draw(checkpoints[model], tmp_path / "a.npz", "seeds=0-5", "batch_size=1"))
    batched, labels = npz(draw(checkpoints[model], tmp_path / "b.npz", "seeds=0-5", "batch_size=4"))
    alone, alone_labels = npz(draw(checkpoints[model], tmp_path / "c.npz", "seeds=[3]"))
    assert len(batched) == 6 and np.array_equal(one_by_one, batched) and np.array_equal(alone[0], batched[3])
    if model == "stylegan2":  # conditional: the labels come from the seeds and land in arr_1
        assert labels is not None and np.array_equal(labels, one_by_one_labels) and alone_labels[0] == labels[3]
        assert not np.array_equal(batched[0], batched[1])


def test_truncation_zero_draws_the_class_average_image(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """Conditional G: psi 0 draws class 2's mean w (truncation_center), whatever the seed."""
    images, _ = npz(draw(checkpoints["stylegan2"], tmp_path / "t.npz", "seeds=0-3", "truncation=0", "class=2"))
    assert all(np.array_equal(images[0], image) for image in images[1:])
    state = torch.load(checkpoints["stylegan2"], weights_only=True)
    from gan_cli.data.datasets import to_uint8
    from gan_cli.models.stylegan2 import Generator

    generator = Generator(z_dim=8, w_dim=8, channel_base=56, channel_max=8, mapping_layers=1, num_classes=10)
    generator.load_state_dict(state["averages"]["generator"])
    assert generator.w_avg.abs().sum() > 0
    ws = generator.eval().truncation_center(torch.tensor([2]))[:, None].expand(1, generator.num_ws, -1)
    expected = to_uint8(generator.synthesis(ws)).permute(0, 2, 3, 1).detach().numpy()
    assert np.abs(images[0].astype(int) - expected[0].astype(int)).max() <= 1
    varied, _ = npz(draw(checkpoints["stylegan2"], tmp_path / "v.npz", "seeds=0-3", "truncation=0.7", "class=2"))
    assert not np.array_equal(varied[0], varied[1])


@pytest.mark.parametrize("model", ["stylegan2", "dcgan"])
def test_walk_gif_has_the_frames_asked_for(checkpoints: dict[str, Path], tmp_path: Path, model: str) -> None:
    out = draw(checkpoints[model], tmp_path / "walk.gif", "seeds=[1,2,3]", "interpolate=7", "fps=5", "upscale=1")
    with Image.open(out) as gif:
        assert gif.n_frames == 7 and gif.size == (28, 28) and gif.info["duration"] == 200
    first, _ = npz(draw(checkpoints[model], tmp_path / "s.npz", "seeds=[1,3]"))
    with Image.open(out) as gif:  # the walk starts at seed 1's image and ends at seed 3's
        start = np.asarray(gif.convert("L"))
        gif.seek(6)
        end = np.asarray(gif.convert("L"))
    assert np.abs(start.astype(int) - first[0, :, :, 0]).max() <= 1
    assert np.abs(end.astype(int) - first[1, :, :, 0]).max() <= 1


def test_mixing_grid_takes_the_chosen_layers_from_the_columns(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    rows, columns = "seeds=[1,2]", "mix_seeds=[5,6,7]"
    cells, _ = npz(draw(checkpoints["stylegan2"], tmp_path / "all.npz", rows, columns, "mix=[coarse,middle,fine]"))
    plain, _ = npz(draw(checkpoints["stylegan2"], tmp_path / "plain.npz", "seeds=[5,6,7]"))
    assert cells.shape[0] == 6 and np.array_equal(cells[3:], plain)  # every layer from the column: its image
    coarse, _ = npz(draw(checkpoints["stylegan2"], tmp_path / "coarse.npz", rows, columns, "mix=coarse"))
    assert not np.array_equal(coarse, cells)
    grid = draw(checkpoints["stylegan2"], tmp_path / "grid.png", rows, columns, "mix=fine")
    with Image.open(grid) as image:  # (1 + 2) rows x (1 + 3) columns of 28 px with 2 px padding
        assert image.size == (4 * 30 + 2, 3 * 30 + 2)
        corner = np.asarray(image.convert("L"))[2:30, 2:30]
        assert corner.max() == 0  # the empty corner is background, not a white square


@pytest.mark.parametrize("args, expected", [
    (["truncation=0.7"], "truncation=0.7: this generator (dcgan) has no mapping network"),
    (["seeds=[1,2]", "mix=coarse", "mix_seeds=[3]"], "mix=coarse: this generator (dcgan)"),
])
def test_stylegan_only_options_on_dcgan_are_one_line_errors(checkpoints: dict[str, Path], tmp_path: Path,
                                                            args: list[str], expected: str) -> None:
    result = run_cli("gan-sample", [f"checkpoint={checkpoints['dcgan']}", *args], cwd=tmp_path, check=False)
    assert result.returncode == 2 and result.stderr.strip() == f"error: {result.stderr.strip()[7:]}"
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, expected", [
    (["mix=coarse"], "mix=coarse needs seeds= (the rows) and mix_seeds="),
    (["seeds=[1,2]", "mix=big", "mix_seeds=[3]"], "mix=big: allowed are coarse, middle, fine"),
    (["seeds=[1,2]", "mix_seeds=[3]"], "mix_seeds=[3] is for style-mixing grids"),
    (["seeds=[1]", "interpolate=4", "out=w.gif"], "interpolate=4 walks between seeds: give two or more"),
    (["seeds=[1,2]", "interpolate=4", "out=w.mp4"], "writing .mp4 needs PyAV"),
])
def test_bad_sample_combinations(checkpoints: dict[str, Path], tmp_path: Path, args: list[str], expected: str) -> None:
    if "out=w.mp4" in args:
        try:
            import av  # noqa: F401
            pytest.skip("PyAV is installed: .mp4 works")
        except ImportError:
            pass
    overrides = [a for a in args if not a.startswith("out=")]
    out = next((a[4:] for a in args if a.startswith("out=")), "x.png")
    with pytest.raises(GanCliError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]").replace(".", r"\.")):
        draw(checkpoints["stylegan2"], tmp_path / out, *overrides)


def test_help_page_lists_the_latent_tools(tmp_path: Path) -> None:
    page = run_cli("gan-sample", ["--help"], cwd=tmp_path).stdout
    assert all(f"\n  {key} " in page for key in ("seeds", "truncation", "interpolate", "fps", "mix", "mix_seeds"))
