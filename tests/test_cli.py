"""gan-train and gan-sample as a user runs them: subprocesses in a scratch directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, TINY_FAKE, run_cli

TAGS = {"loss/d", "loss/g", "prob/real", "prob/fake", "perf/img_per_sec"}


def only_run_dir(root: Path) -> Path:
    runs = [p.parent for p in root.glob("outputs/*/*/metrics.json")]
    assert len(runs) == 1, runs
    return runs[0]


def read_tb(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_train_on_fake_writes_every_artifact(tmp_path: Path) -> None:
    run_cli("gan-train", TINY_FAKE, cwd=tmp_path)
    run_dir = only_run_dir(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["images_seen"] == 64 and metrics["device"] == "cpu"
    assert all(np.isfinite(metrics[k]) for k in ("loss/d", "loss/g", "img_per_sec", "train_seconds"))
    events = read_tb(run_dir)
    assert TAGS <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss/d")] == [2, 4]
    assert [e.step for e in events.Images("samples")] == [0, 2, 4]  # the slider starts at the untrained G
    assert [e.step for e in events.Images("real")] == [0]  # training images to compare with, once
    assert "config/text_summary" in events.PluginTagToContent("text")  # the resolved config, Text tab
    assert not [tag for tag in events.Tags()["scalars"] if tag.startswith("final/")]  # no one-dot charts
    assert events.PluginTagToContent("hparams")  # the HParams tab has this run's config and metrics
    assert "estimated training time" in (run_dir / "train.log").read_text()
    grid = Image.open(run_dir / "samples" / "step_0000004.png")
    assert grid.size[0] > 28 * 4  # a 4x4 grid of 28 px images with padding
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] == 4 and {"networks", "averages", "optimizers", "rng", "config"} <= set(checkpoint)
    assert set(checkpoint["networks"]) == {"generator", "discriminator"} and set(checkpoint["optimizers"]) == {"g", "d"}
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "train.log").is_file()
    assert "device: cpu" in (run_dir / "train.log").read_text()


def test_train_on_synthetic_mnist_files(tmp_path: Path, mnist_root: Path) -> None:
    mlp_sizes = [o for o in TINY if "ngf" not in o and "ndf" not in o]
    run_cli("gan-train", [f"dataset.root={mnist_root}", "dataset.download=false", "model=mlp", *mlp_sizes],
            cwd=tmp_path)
    metrics = json.loads((only_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["steps"] == 4 and np.isfinite(metrics["loss/g"])


@pytest.mark.slow  # > 30 s on the 2-core test machine under load
def test_resume_continues_the_step_count(tmp_path: Path) -> None:
    first = tmp_path / "first"
    run_cli("gan-train", [*TINY_FAKE, f"hydra.run.dir={first}"], cwd=tmp_path)
    second = tmp_path / "second"
    run_cli("gan-train", [*TINY_FAKE, "trainer.max_steps=8", f"trainer.resume={first}/checkpoints/last.pt",
                          f"hydra.run.dir={second}"], cwd=tmp_path)
    assert json.loads((second / "metrics.json").read_text())["steps"] == 8
    assert [e.step for e in read_tb(second).Scalars("loss/d")] == [6, 8]
    assert torch.load(second / "checkpoints" / "last.pt", weights_only=True)["step"] == 8


@pytest.mark.slow  # > 30 s on the 2-core test machine under load
def test_gan_sample_npz_png_and_folder(tmp_path: Path) -> None:
    run_cli("gan-train", [*TINY_FAKE, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    run_cli("gan-sample", [f"checkpoint={checkpoint}", "num_samples=10", "out=s.npz"], cwd=tmp_path)
    array = np.load(tmp_path / "s.npz")["arr_0"]
    assert array.shape == (10, 28, 28, 1) and array.dtype == np.uint8
    run_cli("gan-sample", [f"checkpoint={checkpoint}", "num_samples=10", "out=grid.png", "nrow=5"], cwd=tmp_path)
    assert Image.open(tmp_path / "grid.png").size == (5 * 30 + 2, 2 * 30 + 2)
    run_cli("gan-sample", [f"checkpoint={checkpoint}", "num_samples=3", "out=pngs"], cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    run_cli("gan-sample", [f"checkpoint={checkpoint}", "num_samples=10", "out=again.npz", "batch_size=3"],
            cwd=tmp_path)
    assert np.array_equal(np.load(tmp_path / "again.npz")["arr_0"], array)  # same seed, same images
    assert not (tmp_path / "outputs" / "multirun").exists()


@pytest.mark.parametrize(
    "script, args, expected",
    [
        ("gan-train", ["trainer.batch_size=0"], "trainer.batch_size=0"),
        ("gan-train", ["optim.lr=-1e-3"], "invalid value optim.lr=-0.001"),
        ("gan-train", ["optim.lrr=1e-3"], "unknown key optim.lrr: did you mean optim.lr?"),
        ("gan-train", ["+optim.lrr=1e-3"], "unknown key optim.lrr: did you mean optim.lr?"),
        ("gan-train", ["dataset=fake", "+dataset.num_sample=3"], "did you mean dataset.num_samples?"),
        ("gan-train", ["+optim.lr=1e-3"], "optim.lr is already in the config: set it without the +"),
        ("gan-sample", [], "checkpoint= is required: the checkpoint to draw from, e.g. gan-sample checkpoint="),
        ("gan-sample", ["checkpoint=x.pt", "num_sample=3"], "unknown key num_sample: did you mean num_samples?"),
        ("gan-train", ["trainer.device=tpu"], "trainer.device"),
        ("gan-train", ["dataset.root=/no/such/dir", "dataset.download=false"], "dataset.root"),
        ("gan-sample", ["checkpoint=/no/such.pt"], "/no/such.pt does not exist"),
        ("gan-sample", ["checkpoint=x.pt", "num_samples=0"], "num_samples"),
        ("gan-sample", ["checkpoint=x.pt", "out=a.jpg"], "unknown extension '.jpg'"),
        ("gan-sample", ["checkpoint=x.pt", "out=a.gif"], "out='a.gif' is an animation: set interpolate=N"),
        ("gan-sample", ["checkpoint=x.pt", "interpolate=8"], "interpolate=8 writes an animation: set out=walk.gif"),
        ("gan-sample", ["checkpoint=x.pt", "interpolate=1", "out=a.gif"], "invalid value interpolate=1"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path: Path, script: str, args: list[str], expected: str) -> None:
    result = run_cli(script, args, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not (tmp_path / "outputs").exists()  # a run that failed before training leaves no folder


def test_typo_in_a_component_key_is_reported(tmp_path: Path) -> None:
    result = run_cli("gan-train", [*TINY_FAKE, "+model.generator.ngff=3"], cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: unknown key model.generator.ngff: did you mean model.generator.ngf?"


def test_a_key_the_component_takes_can_be_added(tmp_path: Path) -> None:
    """`+optim.g.amsgrad=true` is an argument of torch.optim.Adam: not a typo."""
    run_cli("gan-train", [*TINY_FAKE, "+optim.g.amsgrad=true", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_offline_download_says_no_network_and_cleans_up(tmp_path: Path) -> None:
    # A proxy on a closed local port: the download fails at once, with or without a network.
    proxy = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    result = run_cli("gan-train", ["dataset.root=data"], cwd=tmp_path, env=proxy, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: could not download MNIST into") and "no network" in line
    assert "GAN_CLI_DATA_ROOT" in line and "dataset.download=false" in line and "download=true" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no empty data/MNIST/raw, no run folder


def test_help_pages_describe_each_command(tmp_path: Path) -> None:
    train_help = run_cli("gan-train", ["--help"], cwd=tmp_path).stdout
    assert "gan-train: train a GAN" in train_help and "loss: bce, hinge, lsgan, wgan, wgan_gp" in train_help
    assert "powered by Hydra" not in train_help and train_help.count("gan-train ") >= 4  # three examples
    sample_help = run_cli("gan-sample", ["--help"], cwd=tmp_path).stdout
    assert "gan-sample: draw images" in sample_help and "checkpoint" in sample_help
    assert "loss:" not in sample_help and "dataset:" not in sample_help  # not the training groups


def test_two_job_multirun_gets_two_run_dirs(tmp_path: Path) -> None:
    run_cli("gan-train", ["-m", *TINY_FAKE, "optim.lr=1e-4,2e-4"], cwd=tmp_path)
    jobs = sorted(tmp_path.glob("outputs/multirun/*/*/*/metrics.json"))
    assert len(jobs) == 2
    for job in jobs:
        assert list((job.parent / "optim.lr=0.0001" if job.parent.name == "0" else job.parent / "optim.lr=0.0002")
                    .glob("events.out.tfevents.*"))  # <job>/<overrides>/ in a multirun
    assert [job.parent.name for job in jobs] == ["0", "1"]
    overrides = [(job.parent / ".hydra" / "overrides.yaml").read_text() for job in jobs]
    assert "optim.lr=0.0001" in overrides[0] and "optim.lr=0.0002" in overrides[1]


@pytest.mark.slow  # > 30 s on the 2-core test machine under load
def test_gan_sample_class_option_for_conditional_models(tmp_path: Path) -> None:
    run_cli("gan-train", [*TINY_FAKE, "model.conditional=true", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    run_cli("gan-sample", [f"checkpoint={checkpoint}", "num_samples=20", "class=all", "out=all.png"], cwd=tmp_path)
    assert Image.open(tmp_path / "all.png").size == (2 * 30 + 2, 10 * 30 + 2)  # one row per class
    run_cli("gan-sample", [f"checkpoint={checkpoint}", "num_samples=4", "class=3", "out=three.npz"], cwd=tmp_path)
    assert np.load(tmp_path / "three.npz")["arr_0"].shape == (4, 28, 28, 1)
    bad = run_cli("gan-sample", [f"checkpoint={checkpoint}", "class=12"], cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "class=12" in bad.stderr and "0..9" in bad.stderr
