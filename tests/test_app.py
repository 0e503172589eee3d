"""gan-draw on tiny checkpoints: strokes become a target and a mask, their projections agree with
them better than G's random samples, every panel returns images of the right shape, CLI errors
are one line, and one end-to-end run in a real headless browser (Chromium through Playwright)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gan_cli.apps import draw_panels
from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.apps.draw import build_app, flattened, main
from gan_cli.core.config import validate_draw
from gan_cli.loop.train import train
from gan_cli.tasks.base import Translator
from tests.conftest import REPO, TINY_FAKE, compose_train, one_line_error
from tests.test_cyclegan import TINY_CYCLE
from tests.test_pix2pix import TINY_P2P
from tests.test_srgan import TINY_SR

FAST = ["device=cpu", "candidates=3", "starts=2", "steps=30"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An unconditional DCGAN (z -> image) and the image -> image families."""
    torch.set_num_threads(1)  # tiny models: a second thread on a shared 2-core machine only waits
    root = tmp_path_factory.mktemp("runs")
    runs = {"dcgan": [*TINY_FAKE, "ema.start_step=0"], "pix2pix": TINY_P2P, "cyclegan": TINY_CYCLE, "srgan": TINY_SR}
    for name, overrides in runs.items():
        train(compose_train(overrides), run_dir=root / name)
    return {name: root / name / "checkpoints/last.pt" for name in runs}


def draw_cfg(checkpoint: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return validate_draw(compose("draw", overrides=[f"checkpoint={checkpoint}", *FAST, *overrides]))


def sketch_of(checkpoint: Path, *overrides: str) -> draw_panels.Sketch:
    panel = draw_panels.load(draw_cfg(checkpoint, *overrides))
    assert isinstance(panel, draw_panels.Sketch)
    return panel


def bar_layer() -> np.ndarray:
    """A 280 px canvas layer with one white vertical stroke (a "1"), transparent elsewhere: rows
    4..23 and columns 13..14 of a 28 px generator's grid."""
    layer = np.zeros((280, 280, 4), np.uint8)
    layer[40:240, 130:150] = 255
    return layer


def test_strokes_become_a_target_and_a_mask() -> None:
    target, mask = draw_panels.strokes(bar_layer(), 1, 28, background=0.25)
    assert target.shape == (1, 1, 28, 28) and mask.shape == (1, 1, 28, 28)
    drawn = mask == 1
    assert drawn[0, 0, 4:24, 13:15].all() and drawn.sum() == 40  # 20 rows x 2 columns of the 28 px grid
    assert (target[drawn[:, :1]] == 255).all() and (target[~drawn[:, :1]] == 0).all()
    assert (mask[~drawn] == 0.25).all()
    colour = bar_layer()
    colour[..., :3] = (255, 0, 0)  # a red stroke: its luma on a grey G
    assert draw_panels.strokes(colour, 1, 28)[0].max() == 76
    two = flattened([bar_layer(), np.zeros((280, 280, 4), np.uint8)], 280)
    assert np.array_equal(two, bar_layer())  # an empty layer over the strokes changes nothing


def test_projected_candidates_agree_with_the_stroke_better_than_samples(checkpoints: dict[str, Path]) -> None:
    sketch = sketch_of(checkpoints["dcgan"])
    target, mask = draw_panels.strokes(bar_layer(), 1, 28, sketch.cfg.background)
    found = draw_panels.candidates(sketch, target, mask)
    assert found.images.shape == (3, 1, 28, 28) and found.images.dtype == torch.uint8
    assert (found.loss[:-1] <= found.loss[1:]).all()  # best first
    drawn = (mask == 1).expand(-1, 1, -1, -1)[0]

    def stroke_error(images: torch.Tensor) -> torch.Tensor:  # (N,) mean squared error on the drawn pixels
        return (images.float() - target.float()).square()[:, drawn].mean(1)

    random = draw_panels.samples(sketch, 0, 32, None, 1.0)
    assert stroke_error(found.images).max() < stroke_error(random).mean(), (stroke_error(found.images),
                                                                             stroke_error(random).mean())
    frames = draw_panels.walk(sketch, found.latents, 0, 2, 5)
    assert frames.shape == (5, 1, 28, 28)
    assert torch.equal(frames[0], found.images[0]) and torch.equal(frames[-1], found.images[2])


def test_each_panel_returns_images_of_the_right_shape(checkpoints: dict[str, Path]) -> None:
    sketch = sketch_of(checkpoints["dcgan"])
    shown = draw_panels.pictures(draw_panels.samples(sketch, 3, 4, None, 1.0), scale=5)
    assert len(shown) == 4 and shown[0].shape == (140, 140, 3) and shown[0].dtype == np.uint8
    build_app(draw_cfg(checkpoints["dcgan"]), sketch)  # the page lays out without serving


@pytest.mark.parametrize("family, size, out", [("pix2pix", 28, 28), ("cyclegan", 28, 28), ("srgan", None, 4 * 40)])
def test_image_to_image_panels_return_their_outputs(checkpoints: dict[str, Path], family: str, size: int | None,
                                                    out: int) -> None:
    """Any input (size, RGB or grey) is brought to the generator's channels and training size
    (SRGAN: any size, upscaled 4x)."""
    translator = draw_panels.load(draw_cfg(checkpoints[family]))
    assert isinstance(translator, Translator) and (translator.channels, translator.size) == (1, size)
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert draw_panels.translated(translator, image).shape == (out, out, 3)
    assert draw_panels.translated(translator, image[..., 0]).shape == (out, out, 3)  # grey in
    build_app(draw_cfg(checkpoints[family]), translator)




def unknown_task(checkpoint: Path, out: Path) -> Path:
    """The checkpoint with its config naming a task gan-cli does not have."""
    from gan_cli.core import integrity

    state = torch.load(checkpoint, weights_only=True)
    config = yaml.safe_load(state["config"])
    config["task"]["_target_"] = "somewhere.else.PaintTask"
    state["config"] = yaml.safe_dump(config)
    state.pop(integrity.KEY, None)
    torch.save(state, out)
    return out


@pytest.mark.parametrize("args, expected", [
    (["checkpoint=nowhere.pt"], "checkpoint nowhere.pt does not exist"),
    (["chekpoint=C"], "unknown key chekpoint: did you mean checkpoint?"),
    (["checkpoint=C", "port=0"], "invalid value port=0"),
    (["checkpoint=C", "pixel_weight=0"], "nothing to fit"),
    (["checkpoint=UNKNOWN"], "was refused"),
])
def test_each_error_is_one_line(checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str], args: list[str], expected: str) -> None:
    swap = {"C": str(checkpoints["dcgan"])}
    if "checkpoint=UNKNOWN" in args:
        swap["UNKNOWN"] = str(unknown_task(checkpoints["dcgan"], tmp_path / "unknown.pt"))
    args = [arg.split("=")[0] + "=" + swap.get(arg.split("=")[1], arg.split("=")[1]) for arg in args]
    err = one_line_error(monkeypatch, capsys, main, "gan-draw", [*args, "device=cpu"])
    assert expected in err, err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def browser() -> str:
    """Chromium for the end-to-end test, or the test is skipped with one line saying why."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
    path = next(filter(None, (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome"))),
                None)
    if path is None:
        pytest.skip("no Chromium found: apt-get install -y chromium (the README's 'gan-draw' section)")
    return path


@pytest.mark.slow
def test_drawing_a_stroke_in_a_browser_shows_candidates(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """The real app in a subprocess, a headless Chromium: draw a stroke, press Project, see the
    candidates in the gallery."""
    from playwright.sync_api import sync_playwright

    executable, port = browser(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "-m", "gan_cli.apps.draw", f"checkpoint={checkpoints['dcgan']}", f"port={port}",
               *FAST]
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        url, started = None, time.monotonic()
        assert server.stdout is not None
        while url is None and time.monotonic() - started < 120:
            line = server.stdout.readline()
            if not line and server.poll() is not None:
                pytest.fail(f"gan-draw exited with {server.returncode}")
            url = next(iter(re.findall(r"gan-draw: open (\S+)", line)), None)
        assert url == f"http://127.0.0.1:{port}/"
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            page = chromium.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url, wait_until="load", timeout=60_000)
            canvas = page.locator("#strokes canvas").first
            canvas.wait_for(timeout=60_000)
            box = canvas.bounding_box()
            assert box is not None
            x, top = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.2
            page.mouse.move(x, top)
            page.mouse.down()
            page.mouse.move(x, box["y"] + box["height"] * 0.8, steps=15)  # a vertical stroke
            page.mouse.up()
            page.click("#project")
            page.wait_for_function("document.querySelectorAll('#candidates img').length >= 3", timeout=120_000)
            assert page.locator("#candidates img").count() == 3
            chromium.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_help_page_and_the_module_as_the_console_script(tmp_path: Path) -> None:
    """`python -m gan_cli.apps.draw`, what the gan-draw script calls: its --help, and a missing
    checkpoint as one line, exit 2."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "-m", "gan_cli.apps.draw"]
    page = subprocess.run([*command, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "gan-draw: a local web app" in page.stdout and "powered by Hydra" not in page.stdout
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: checkpoint= is required")
    assert len(result.stderr.strip().splitlines()) == 1
