"""gan-data and `dataset=converted` (issue #25): the conversion of a folder of real PNG/JPEG files and
of a torchvision dataset, its crop policies and unreadable files; training that streams from disk
(DataLoader workers) ends bitwise where the same run in memory does, `auto` streams when the images
exceed the memory budget, and a streaming run killed with SIGKILL resumes bitwise. Every bad input
is one line."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.apps.data import convert, main
from gan_cli.core.config import validate
from gan_cli.core.errors import GanCliError
from gan_cli.data import convert as conversion
from gan_cli.data.converted import load_converted
from gan_cli.data.datasets import DeviceSampler
from gan_cli.data.streaming import StreamingSampler, make_sampler
from gan_cli.loop.checkpoint import CheckpointDir, load_checkpoint
from gan_cli.loop.train import train
from tests.conftest import (
    BIN,
    REPO,
    TINY,
    assert_same_weights,
    compose_train,
    make_image_folder,
    make_mnist,
    one_line_error,
    run_cli,
)


def compose_data(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("data", overrides=overrides)


def gan_data(source: Path | str, out: Path, *args: str) -> Path:
    return convert(compose_data([f"source={source}", f"out={out}", *args]))


def digits(tmp_path: Path, count: int = 96) -> Path:
    """A synthetic MNIST converted at its own size (1x28x28): what the training tests read."""
    root = make_mnist(tmp_path / "mnist", count=count)
    return gan_data("mnist", tmp_path / "digits", f"root={root}", "image_size=28", "channels=1")


def converted_run(root: Path, *extra: str) -> list[str]:
    return ["dataset=converted", f"dataset.root={root}", "dataset.channels=1", "dataset.image_size=28", *TINY,
            "trainer.max_steps=8", *extra]


# ---- gan-data ----


def test_a_folder_of_png_and_jpeg_files_becomes_labelled_arrays(tmp_path: Path) -> None:
    source = tmp_path / "pets"
    rng = np.random.default_rng(1)
    for name, suffix, count in (("cats", ".jpg", 3), ("dogs", ".png", 4)):
        (source / name / "nested").mkdir(parents=True)
        for index in range(count):
            pixels = rng.integers(0, 256, (30 + index, 50, 3), dtype=np.uint8)
            where = source / name / ("nested" if index == 0 else "") / f"{index}{suffix}"
            Image.fromarray(pixels).save(where)
    (source / "dogs" / "notes.txt").write_text("not an image, not counted")
    out = gan_data(source, tmp_path / "pets16", "image_size=16")
    info = json.loads((out / "dataset.json").read_text())
    assert info == {"format": 1, "count": 7, "channels": 3, "size": 16, "classes": ["cats", "dogs"],
                    "source": str(source.resolve())}
    images, labels = np.load(out / "images.npy"), np.load(out / "labels.npy")
    assert images.shape == (7, 3, 16, 16) and images.dtype == np.uint8 and images.std() > 20
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 1] and labels.dtype == np.int64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pets", "pets16"]  # nothing else left beside it


def test_a_flat_folder_is_one_unlabelled_class(tmp_path: Path) -> None:
    source = tmp_path / "flat"
    source.mkdir()
    for index in range(3):
        Image.new("L", (12, 12), 40 * index).save(source / f"{index}.png")
    out = gan_data(source, tmp_path / "out", "image_size=12", "channels=1")
    assert json.loads((out / "dataset.json").read_text())["classes"] == []
    assert np.load(out / "images.npy")[:, 0, 0, 0].tolist() == [0, 40, 80]  # same size: the pixels as they are
    data = load_converted(root=str(out), channels=1, image_size=12, num_classes=0)
    assert data.num_classes == 0 and data.labels.tolist() == [0, 0, 0]


def test_crop_policies_center_resize_and_pad(tmp_path: Path) -> None:
    """A 64x16 white image with a black stripe on its left eighth, to 8x8: center keeps the white
    middle, resize squeezes the stripe into the first column, pad adds black bars above and below."""
    source = tmp_path / "wide"
    source.mkdir()
    pixels = np.full((16, 64), 255, dtype=np.uint8)
    pixels[:, :8] = 0
    Image.fromarray(pixels).save(source / "wide.png")
    fitted = {crop: np.load(gan_data(source, tmp_path / crop, "image_size=8", "channels=1", f"crop={crop}")
                            / "images.npy")[0, 0] for crop in conversion.CROPS}
    assert fitted["center"].min() > 245
    assert fitted["resize"][:, 0].max() < 60 and fitted["resize"][:, 4:].min() > 245
    assert (fitted["pad"][:3] == 0).all() and (fitted["pad"][5:] == 0).all() and fitted["pad"][3:5, 4:].min() > 200


def corrupt_tree(tmp_path: Path) -> Path:
    source = make_image_folder(tmp_path / "src", classes=2, per_class=3, size=(20, 20))
    (source / "class_1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return source


def test_an_unreadable_file_is_skipped_with_a_warning_and_counted(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Decoded by 2 worker processes (in order), the same bytes as decoded in this process."""
    source = corrupt_tree(tmp_path)
    with caplog.at_level(logging.WARNING, logger="gan_cli"):
        out = gan_data(source, tmp_path / "out", "image_size=8", "num_workers=2")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "broken.png" in warnings[0] and "\n" not in warnings[0]
    assert warnings[1] == "1 of 7 images were unreadable and left out"
    assert np.load(out / "images.npy").shape == (6, 3, 8, 8)
    assert np.load(out / "labels.npy").tolist() == [0, 0, 0, 1, 1, 1]
    alone = gan_data(source, tmp_path / "alone", "image_size=8", "num_workers=0")
    for name in ("images.npy", "labels.npy"):
        assert (alone / name).read_bytes() == (out / name).read_bytes()


def test_on_error_stop_is_one_line_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    source = corrupt_tree(tmp_path)
    err = one_line_error(monkeypatch, capsys, main, "gan-data",
                         [f"source={source}", f"out={tmp_path / 'out'}", "on_error=stop"])
    assert "broken.png" in err and "on_error=skip" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no dataset, no hidden half of one


def test_an_interrupted_conversion_leaves_the_old_dataset_and_no_half_one(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_image_folder(tmp_path / "src", classes=1, per_class=4, size=(8, 8))
    out = gan_data(source, tmp_path / "out", "image_size=8")
    before = (out / "images.npy").read_bytes()
    real_fit, calls = conversion.fit, []

    def interrupted_fit(*args: object) -> np.ndarray:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C (or a kill) half-way
        return real_fit(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(conversion, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        gan_data(source, tmp_path / "out", "image_size=4", "num_workers=0")  # the patched fit runs here
    assert (out / "images.npy").read_bytes() == before and json.loads((out / "dataset.json").read_text())["size"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_a_synthetic_mnist_converts_pixel_for_pixel(tmp_path: Path) -> None:
    out = digits(tmp_path)
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    expected = np.frombuffer((raw / "train-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8).reshape(96, 28, 28)
    labels = np.frombuffer((raw / "train-labels-idx1-ubyte").read_bytes()[8:], dtype=np.uint8)
    assert np.array_equal(np.load(out / "images.npy")[:, 0], expected)
    assert np.array_equal(np.load(out / "labels.npy"), labels.astype(np.int64))
    info = json.loads((out / "dataset.json").read_text())
    assert info["count"] == 96 and info["classes"][:2] == ["0 - zero", "1 - one"] and len(info["classes"]) == 10


def test_a_synthetic_cifar10_converts_in_order(tmp_path: Path, cifar_root: Path) -> None:
    """CIFAR-10's pickled batches (3x32x32), to 16 px grayscale: 100 training images, in order."""
    import pickle

    out = gan_data("cifar10", tmp_path / "c16", f"root={cifar_root}", "image_size=16", "channels=1")
    batch = pickle.loads((cifar_root / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    info = json.loads((out / "dataset.json").read_text())
    assert info["count"] == 100 and info["classes"] == [str(i) for i in range(10)]  # names come with an instance
    assert np.load(out / "images.npy").shape == (100, 1, 16, 16)
    assert np.load(out / "labels.npy")[:20].tolist() == batch["labels"]


@pytest.mark.parametrize("args, expected", [
    (["crop=square"], "invalid value crop='square': allowed is center, resize or pad"),
    (["image_size=2"], "invalid value image_size=2: allowed is an integer >= 4"),
    (["on_error=ignore"], "invalid value on_error='ignore': allowed is skip or stop"),
    (["num_workers=-2"], "invalid value num_workers=-2: allowed is null (min(4, CPUs)) or an integer >= 0"),
    (["source=imagenet"], "source='imagenet' is neither a folder nor a known dataset: allowed is a folder of "
                          "images or mnist, fashion_mnist, cifar10"),
    (["source=null"], "source= is required"),
    (["source=cifar10", "root=nowhere"], "source=cifar10: no readable CIFAR10 files in "),
    (["out=taken"], "exists and is not a gan-data dataset"),
])
def test_bad_gan_data_options_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], args: list[str], expected: str) -> None:
    source = make_image_folder(tmp_path / "src", classes=1, per_class=2, size=(8, 8))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "thesis.tex").write_text("precious")
    monkeypatch.chdir(tmp_path)
    defaults = {"source": str(source), "out": str(tmp_path / "out")}
    given = dict(arg.split("=", 1) for arg in args)
    argv = [f"{k}={v}" for k, v in {**defaults, **given}.items() if v != "null"]
    err = one_line_error(monkeypatch, capsys, main, "gan-data", argv)
    assert expected in err, err
    assert not (tmp_path / "out").exists() and (tmp_path / "taken" / "thesis.tex").read_text() == "precious"


def test_the_module_runs_as_the_console_script(tmp_path: Path) -> None:
    """`python -m gan_cli.apps.data`, what the gan-data script calls (gan_cli.start:data)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    source = make_image_folder(tmp_path / "src", classes=2, per_class=2, size=(10, 10))
    command = [sys.executable, "-m", "gan_cli.apps.data", f"source={source}", "out=converted", "image_size=8"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train with: gan-train dataset=converted" in result.stdout
    assert np.load(tmp_path / "converted" / "images.npy").shape == (4, 3, 8, 8)
    assert 'gan-data = "gan_cli.start:data"' in (REPO / "pyproject.toml").read_text()


# ---- dataset=converted ----


def test_streaming_batches_are_the_in_memory_batches(tmp_path: Path) -> None:
    """On the CPU, batch k of the streaming sampler (2 workers) is DeviceSampler's batch k, across
    epochs, with flips, for each rank of two; a jump (resume) lands on the same batch too."""
    out = digits(tmp_path, count=40)
    data = load_converted(root=str(out), channels=1, image_size=28, num_classes=10, num_workers=2)
    cpu = torch.device("cpu")
    for rank in (0, 1):
        memory = DeviceSampler(data.loaded(), cpu, 6, seed=3, hflip=True, rank=rank, world_size=2)
        stream = StreamingSampler(data, cpu, 6, seed=3, hflip=True, rank=rank, world_size=2, num_workers=2)
        assert stream.batches_per_epoch == memory.batches_per_epoch == 3
        assert torch.equal(stream.images, memory.images) and torch.equal(stream.labels, memory.labels)
        for index in [*range(7), 11, 12, 2]:
            (a, a_labels), (b, b_labels) = memory.batch(index), stream.batch(index)
            assert torch.equal(a, b) and torch.equal(a_labels, b_labels), (rank, index)


def test_streaming_training_is_bitwise_the_in_memory_training(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    out = digits(tmp_path)
    with caplog.at_level(logging.INFO, logger="gan_cli"):
        train(compose_train(converted_run(out, "dataset.in_memory=true")), run_dir=tmp_path / "memory")
        train(compose_train(converted_run(out, "dataset.in_memory=false", "dataset.num_workers=2")),
              run_dir=tmp_path / "stream")
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dataset: ")]
    assert said[0].startswith("dataset: in memory") and said[1].startswith("dataset: streaming from disk"), said
    assert_same_weights(tmp_path / "memory", tmp_path / "stream", 8)


def test_a_converted_mnist_streams_into_the_run_dataset_mnist_trains(tmp_path: Path) -> None:
    """gan-data changes no pixel and no label of MNIST: streaming the converted copy (flips off, as
    dataset=mnist has them) trains bitwise the run that dataset=mnist trains."""
    out = digits(tmp_path)
    train(compose_train(["dataset=mnist", f"dataset.root={tmp_path / 'mnist'}", "dataset.download=false", *TINY]),
          run_dir=tmp_path / "mnist_run")
    streamed = converted_run(out, "dataset.in_memory=false", "dataset.num_workers=0", "dataset.hflip=false",
                             "dataset.num_classes=10", "trainer.max_steps=4")
    train(compose_train(streamed), run_dir=tmp_path / "converted")
    assert_same_weights(tmp_path / "mnist_run", tmp_path / "converted", 4)


def test_auto_streams_when_the_images_exceed_the_budget(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = load_converted(root=str(digits(tmp_path)), channels=1, image_size=28, num_classes=10,
                          memory_budget_gb=1e-6, num_workers=0)  # 1 KB: smaller than 96 digits (75 KB)
    cpu = torch.device("cpu")
    with caplog.at_level(logging.INFO, logger="gan_cli"):
        assert isinstance(make_sampler(data, cpu, 16, 0, False), StreamingSampler)
        data.memory_budget_gb = 1.0
        assert isinstance(make_sampler(data, cpu, 16, 0, False), DeviceSampler)
        data.memory_budget_gb = None  # the default: half of this machine's available memory
        assert isinstance(make_sampler(data, cpu, 16, 0, False), DeviceSampler)
    lines = [r.getMessage() for r in caplog.records]
    assert "dataset: streaming from disk" in lines[0] and "does not fit in the 1.0 KB budget" in lines[0]
    assert "dataset.memory_budget_gb=1e-06" in lines[0]
    assert "dataset: in memory" in lines[1] and "fits in the 1.0 GB budget" in lines[1]
    assert "50% of the free memory of cpu" in lines[2]


# Long enough (120 steps) that a kill lands mid-run; streaming because 96 digits exceed the budget.
LONG = [*TINY, "trainer.max_steps=120", "trainer.epochs=100", "trainer.ckpt_every_n_steps=10",
        "log.every_n_steps=10", "log.sample_every_n_steps=100", "trainer.seed=5", "dataset.memory_budget_gb=0.00001",
        "dataset.num_workers=2"]


@pytest.mark.slow  # two runs and a resume: > 30 s on the 2-core test machine under load
def test_sigkill_then_resume_auto_while_streaming_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    out = digits(tmp_path)
    args = ["dataset=converted", f"dataset.root={out}", "dataset.channels=1", "dataset.image_size=28", *LONG]
    reference = tmp_path / "reference"
    run_cli("gan-train", [*args, f"hydra.run.dir={reference}", "dataset.in_memory=true"], cwd=tmp_path)

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen([str(BIN / "gan-train"), *args, f"hydra.run.dir={killed}"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(int(p.stem.split("_")[1]) >= 20 for p in (killed / "checkpoints").glob("step_*.pt")):
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = CheckpointDir(killed / "checkpoints", 3).newest_loadable()[1]["step"]
    assert 20 <= interrupted_at < 120, "the kill must land mid-run"

    run_cli("gan-train", [*args, f"hydra.run.dir={killed}", "trainer.resume=auto"], cwd=tmp_path)
    log = (killed / "train.log").read_text()
    assert log.count("dataset: streaming from disk") == 2 and "does not fit in the 10.0 KB budget" in log
    assert load_checkpoint(killed / "checkpoints" / "last.pt")["step"] == 120
    assert_same_weights(reference, killed, 120)


@pytest.mark.slow  # a run stopped mid-way: > 15 s on the 2-core test machine under load
def test_ctrl_c_to_the_process_group_stops_a_streaming_run_and_its_workers(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the DataLoader workers too: the run still finishes its step,
    saves and exits 130, and no worker outlives it."""
    out = digits(tmp_path)
    args = ["dataset=converted", f"dataset.root={out}", "dataset.channels=1", "dataset.image_size=28", *LONG,
            "trainer.max_steps=400", "dataset.in_memory=false"]
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen([str(BIN / "gan-train"), *args, f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("step_*.pt")):
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    assert "stopped by SIGINT at step" in (run_dir / "train.log").read_text()
    deadline = time.monotonic() + 10
    with pytest.raises(ProcessLookupError):  # the whole group is gone: no worker left behind
        while time.monotonic() < deadline:
            os.killpg(process.pid, 0)
            time.sleep(0.1)


# ---- dataset=converted: bad input, one line ----


def damaged(out: Path, how: str) -> None:
    info = json.loads((out / "dataset.json").read_text())
    if how == "missing":
        (out / "dataset.json").unlink()
    elif how == "not json":
        (out / "dataset.json").write_text("{format: 1")
    elif how == "version":
        (out / "dataset.json").write_text(json.dumps({**info, "format": 99}))
    elif how == "count":
        (out / "dataset.json").write_text(json.dumps({**info, "count": info["count"] + 1}))
    elif how == "truncated":
        (out / "images.npy").write_bytes((out / "images.npy").read_bytes()[:500])


@pytest.mark.parametrize("how, expected", [
    ("missing", "has no dataset.json: it is not a gan-data dataset"),
    ("not json", "is not readable JSON"),
    ("version", "has format 99; this gan-cli reads format 1"),
    ("count", "holds uint8 (96, 1, 28, 28) but dataset.json says uint8 (97, 1, 28, 28)"),
    ("truncated", "cannot read"),
])
def test_a_damaged_converted_dataset_is_one_line(tmp_path: Path, how: str, expected: str) -> None:
    out = digits(tmp_path)
    damaged(out, how)
    with pytest.raises(GanCliError) as caught:
        train(validate(compose_train(converted_run(out))), run_dir=tmp_path / "run")
    assert expected in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


@pytest.mark.parametrize("override, expected", [
    ("dataset.in_memory=maybe", "invalid value dataset.in_memory='maybe': allowed is auto, true or false"),
    ("dataset.memory_budget_gb=0", "invalid value dataset.memory_budget_gb=0: allowed is null"),
    ("dataset.num_workers=-1", "invalid value dataset.num_workers=-1: allowed is null (min(4, CPUs))"),
    ("dataset.image_size=32", "holds 1x28x28 images but the config asks for dataset.channels=1 "
                              "dataset.image_size=32: set dataset.channels=1 dataset.image_size=28"),
    ("dataset.num_classes=3", "dataset.num_classes=3 but"),
])
def test_bad_converted_settings_are_one_line(tmp_path: Path, override: str, expected: str) -> None:
    out = digits(tmp_path)
    with pytest.raises(GanCliError) as caught:
        train(validate(compose_train([*converted_run(out), override])), run_dir=tmp_path / "run")
    assert expected in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
