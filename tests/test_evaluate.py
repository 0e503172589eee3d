"""gan-eval: known answers on synthetic feature sets and images, and the four modes end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_cli.data.datasets import ImageData, load_fake
from gan_cli.evaluate import measures, usefulness
from tests.conftest import REPO, TINY_FAKE, run_cli


def clusters(per_class: int, classes: list[int], seed: int, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Features around 10 fixed, well separated centres; (N, dim) and each row's class. Low `dim`: with
    k = 3, precision and recall of two draws of one distribution approach 1 only when N >> 2^dim."""
    centres = torch.randn(10, dim, generator=torch.Generator().manual_seed(123)) * 10
    noise = torch.Generator().manual_seed(seed)
    labels = torch.tensor(classes).repeat_interleave(per_class)
    return centres[labels] + torch.randn(len(labels), dim, generator=noise), labels


def test_identical_sets_score_one_and_fd_zero() -> None:
    real, _ = clusters(50, list(range(10)), seed=0)
    pr, dc = measures.precision_recall(real, real.clone()), measures.density_coverage(real, real.clone())
    assert pr == {"precision": 1.0, "recall": 1.0} and dc["coverage"] == 1.0
    assert dc["density"] == pytest.approx(6 / 5, abs=0.01)  # each in its own ball and its 5 neighbours': (k+1)/k
    assert abs(measures.frechet_distance(real, real.clone())) < 1e-3


def test_same_distribution_scores_near_one() -> None:
    real, _ = clusters(100, list(range(10)), seed=0)
    fake, _ = clusters(100, list(range(10)), seed=1)
    values = {**measures.precision_recall(real, fake), **measures.density_coverage(real, fake)}
    assert min(values["precision"], values["recall"], values["coverage"]) > 0.85, values
    assert 0.8 < values["density"] < 1.2, values
    assert measures.frechet_distance(real, fake) < 1.0


def test_missing_half_the_classes_loses_recall_and_coverage() -> None:
    real, real_labels = clusters(100, list(range(10)), seed=0)
    fake, fake_labels = clusters(200, [0, 1, 2, 3, 4], seed=1)
    values = {**measures.precision_recall(real, fake), **measures.density_coverage(real, fake)}
    assert values["precision"] > 0.85
    assert 0.4 < values["recall"] < 0.6 and 0.4 < values["coverage"] < 0.6, values
    shares = measures.class_shares(fake_labels, 10)
    assert shares[:5] == pytest.approx([0.2] * 5) and shares[5:] == [0.0] * 5
    per_class = measures.fd_per_class(real, real_labels, fake, fake_labels, 10)
    assert all(value < 2.0 for value in per_class[:5]) and all(np.isnan(per_class[5:]))


def test_exact_copies_are_memorized_and_new_images_are_not() -> None:
    train = load_fake(num_samples=400, channels=1, image_size=28, num_classes=10).images
    new = load_fake(num_samples=100, channels=1, image_size=28, num_classes=10, seed=99).images
    copies = measures.memorization(train[:100], train, quantile=0.01, probe=400)
    assert copies.share == 1.0 and copies.threshold > 0
    assert float(copies.distances.max()) < copies.threshold / 10
    assert measures.memorization(new, train, quantile=0.01, probe=400).share < 0.1


def test_classic_augmentation_keeps_shape_and_range() -> None:
    images = load_fake(num_samples=8, channels=1, image_size=28, num_classes=2).images
    moved = usefulness.random_affine(images, torch.Generator().manual_seed(0))
    assert moved.shape == images.shape and moved.dtype == torch.uint8 and not torch.equal(moved, images)


def gan_eval(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """gan-eval as `python -m gan_cli.evaluate` (the console script needs a reinstall)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "gan_cli.evaluate", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"gan-eval {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


FAKE = ["dataset=fake", "dataset.num_samples=600", "classifier_epochs=1", "num_threads=1", "device=cpu",
        "usefulness.steps=60", "usefulness.seeds=[0]", "usefulness.percents=[10]"]


def write_npz(path: Path, data: ImageData) -> Path:
    np.savez(path, data.images.permute(0, 2, 3, 1).numpy(), data.labels.numpy())
    return path


@pytest.mark.slow
def test_images_mode_known_answers(tmp_path: Path) -> None:
    """The training images themselves as "samples": near-perfect scores, all memorized, CAS near
    the classifier's accuracy; the classes 0-4 of them alone: recall and coverage fall, the class
    shares show the missing classes."""
    train = load_fake(num_samples=600, channels=1, image_size=28, num_classes=10)
    common = [*FAKE, f"cache_dir={tmp_path / 'cache'}"]
    gan_eval([f"images={write_npz(tmp_path / 'real.npz', train)}", *common, f"out={tmp_path / 'real.json'}"],
             tmp_path)
    real = json.loads((tmp_path / "real.json").read_text())
    assert real["precision"] == real["recall"] == real["coverage"] == 1.0 and abs(real["fd_classifier"]) < 1e-3
    assert real["memorized"] == 1.0 and real["as_asked"] > 0.95
    assert abs(real["cas"] - real["classifier_accuracy"]) < 0.1, (real["cas"], real["classifier_accuracy"])
    assert set(real["augment_gain"]) == {"10"} and "acc_classic_k10" in real
    assert (tmp_path / "real_copies.png").is_file()

    half = train.labels < 5
    half_set = ImageData(train.images[half], train.labels[half], 10)
    gan_eval([f"images={write_npz(tmp_path / 'half.npz', half_set)}", *common, "metrics=[fd,prdc,classes]",
              f"out={tmp_path / 'half.json'}"], tmp_path)
    values = json.loads((tmp_path / "half.json").read_text())
    assert values["recall"] < 0.7 and values["coverage"] < 0.7 and values["precision"] > 0.9
    assert all(share == 0.0 for share in values["class_shares"][5:]) and sum(values["class_shares"][:5]) > 0.99
    assert values["fd_per_class"][5:] == [None] * 5  # NaN in JSON is null: no samples of those classes


@pytest.mark.slow
def test_checkpoint_run_sweep_and_class_folders(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_cli("gan-train", [*TINY_FAKE, "model.conditional=true", "trainer.ckpt_every_n_steps=2",
                          "trainer.keep_checkpoints=5", f"hydra.run.dir={run}"], cwd=tmp_path)
    common = ["metrics=[fd,prdc,classes,memorization]", "num_samples=100", "num_threads=1", "device=cpu",
              "classifier_epochs=1", f"cache_dir={tmp_path / 'cache'}"]
    gan_eval([f"checkpoint={run / 'checkpoints' / 'last.pt'}", *common, f"out={tmp_path / 'one.json'}"], tmp_path)
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["step"] == 4 and one["num_images"] == 100 and 0 <= one["as_asked"] <= 1
    assert {"fd_classifier", "precision", "recall", "density", "coverage", "class_shares", "memorized"} <= set(one)

    # run=: every kept checkpoint, eval/* curves in the run's TensorBoard
    gan_eval([f"run={run}", *common, f"out={tmp_path / 'curves.json'}"], tmp_path)
    assert [row["step"] for row in json.loads((tmp_path / "curves.json").read_text())] == [2, 4]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = [EventAccumulator(str(path)).Reload() for path in run.glob("events.out.tfevents.*.gan-eval")]
    assert len(events) == 1 and [e.step for e in events[0].Scalars("eval/fd_classifier")] == [2, 4]

    # sweep=: the last.pt of every job folder, one table and eval.csv
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        (sweep / job).mkdir(parents=True)
        (sweep / job / "checkpoints").symlink_to(run / "checkpoints")
    printed = gan_eval([f"sweep={sweep}", *common], tmp_path).stdout
    lines = (sweep / "eval.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("job,overrides,name,step") and "fd_classifier" in lines[0]
    assert "gan-eval sweep=" in printed

    # gan-sample layout=classes: an ImageFolder tree that gan-eval reads back with its classes
    run_cli("gan-sample", [f"checkpoint={run / 'checkpoints' / 'last.pt'}", "num_samples=40", "class=all",
                           f"out={tmp_path / 'digits'}", "layout=classes", "device=cpu"], cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == sorted(str(c) for c in range(10))
    assert len(list((tmp_path / "digits" / "3").glob("*.png"))) == 4
    gan_eval([f"images={tmp_path / 'digits'}", "dataset=fake", *common, f"out={tmp_path / 'folder.json'}"], tmp_path)
    assert "as_asked" in json.loads((tmp_path / "folder.json").read_text())


def test_help_page_and_one_mode_required(tmp_path: Path) -> None:
    page = gan_eval(["--help"], tmp_path).stdout
    assert "gan-eval: judge a trained generator" in page and "augment_gain" in page and "powered by Hydra" not in page
    result = gan_eval(["num_threads=1"], tmp_path, check=False)
    assert result.returncode == 2 and "set exactly one of" in result.stderr
    assert "metrics" in gan_eval(["images=x.npz", "metrics=[fd,nope]"], tmp_path, check=False).stderr


def test_nearest_neighbour_passes_advance_one_progress_bar(caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """precision/recall and density/coverage run 4 passes over the reals and 3 over the samples
    (the count judge.prdc's bar expects); off a terminal a short task logs nothing, a long one its quarters."""
    from gan_cli.reporting.progress import TaskProgress

    real, _ = clusters(30, list(range(10)), seed=0)
    fake, _ = clusters(20, list(range(10)), seed=1)
    with caplog.at_level("INFO", logger="gan_cli"), TaskProgress("prdc", 4 * 300 + 3 * 200) as progress:
        measures.precision_recall(real, fake, 3, progress)
        measures.density_coverage(real, fake, 5, progress)
    assert progress.done == progress.total and not caplog.records  # quick: quiet
    monkeypatch.setattr(TaskProgress, "QUIET_SECONDS", 0.0)  # as if each step took long
    with caplog.at_level("INFO", logger="gan_cli"), TaskProgress("slow", 8) as slow:
        for _ in range(8):
            slow.advance()
    assert [record.getMessage().split(":")[0] for record in caplog.records] == ["slow"] * 3  # at 2, 4 and 6 of 8
