"""Shared fixtures: the real conf/ composed with small overrides, and synthetic datasets
written in the real on-disk formats (MNIST idx, CIFAR-10 pickle batches, ImageFolder)."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from gan_cli.apps.cli import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# A tiny DCGAN/MLP and a few steps: every subprocess run below finishes in seconds on a CPU.
TINY = [
    "trainer.device=cpu",
    "trainer.batch_size=16",
    "trainer.max_steps=4",
    "log.every_n_steps=2",
    "log.sample_every_n_steps=2",
    "log.num_samples=16",
    "model.generator.ngf=8",
    "model.discriminator.ndf=8",
    "eval.enabled=false",  # FID/KID has its own tests (test_metrics.py, test_train.py)
    # Tiny models gain nothing from a second thread, and two OpenMP threads on a busy 2-core
    # machine stall at every parallel region (measured: 0.85 s instead of 6 ms per step).
    "trainer.num_threads=1",
]
IMAGE_TO_IMAGE_MODELS = ("cyclegan", "srgan", "pix2pix")  # model options whose G takes images, not z
# model options whose G takes z and a caption embedding (task=text2image)
TEXT_TO_IMAGE_MODELS = ("text_dcgan", "text_stylegan2")
NOT_Z_TO_IMAGE_MODELS = (*IMAGE_TO_IMAGE_MODELS, *TEXT_TO_IMAGE_MODELS)  # left out of the z (+ label) -> image tests

TINY_FAKE = ["dataset=fake", "dataset.num_samples=64", *TINY]


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The feature classifiers tests train on random images go to a cache of the session's own
    (inherited by the CLI subprocesses), never the user's ~/.cache/gan_cli."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))


# Components tests train with (`loss._target_=tests.test_resilience.ExplodingLoss`) and whose checkpoints
# they load: registered as conf/'s options are, as a checkpoint naming an unregistered class is refused.
TEST_COMPONENTS = {"loss": ["tests.test_resilience.ExplodingLoss", "tests.test_resilience.PreemptingLoss",
                            "tests.test_hostile.InfiniteBatchNormLoss", "tests.test_sweep.CtrlC"],
                   "ema": ["tests.test_hostile.BrokenEMA"]}


@pytest.fixture(autouse=True, scope="session")
def registered_test_components() -> None:
    from gan_cli.core.schema_check import register

    for position, targets in TEST_COMPONENTS.items():
        for target in targets:
            register(position, target)


def forged(state: dict) -> dict:
    """An edited checkpoint as someone crafting one would write it: with a checksum recomputed for
    its new contents, so that what a test reaches is the check it is about, not the checksum."""
    from gan_cli.core import integrity

    content = {key: value for key, value in state.items() if key != integrity.KEY}
    return {**content, integrity.KEY: integrity.digest(content)}


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real small disk (a tmpfs of `size`, e.g. 64k) mounted at `folder`: a full disk is ENOSPC
    from the kernel, not a mock. The test is skipped where mounting is not permitted."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def compose_train(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


@pytest.fixture
def compose_cfg() -> Callable[[list[str]], DictConfig]:
    return compose_train


def run_cli(script: str, args: list[str], cwd: Path, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run an installed console script (gan-train, gan-sample) as a user would."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run([str(BIN / script), *args], cwd=cwd, env=full_env, capture_output=True,
                            text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's idx format: magic (0, 0, 0x08 = ubyte, ndim), big-endian int32 dims, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist(root: Path, folder: str = "MNIST", count: int = 96) -> Path:
    """root/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, as torchvision expects."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, (count,)))
    return root


def make_cifar10(root: Path, per_batch: int = 20) -> Path:
    """root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}: pickled dicts."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, per_batch).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                            "truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return root


def make_image_folder(root: Path, classes: int = 2, per_class: int = 6, size: tuple[int, int] = (40, 30)) -> Path:
    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    return make_mnist(tmp_path / "data")


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # torchvision's CIFAR10 checks the md5 of each real batch file; synthetic batches cannot
    # match, so only that check is bypassed. Unpickling and reshaping run as for real files.
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    return make_cifar10(tmp_path / "data")


def assert_same_weights(expected_run: Path, resumed_run: Path, step: int) -> None:
    """The two runs' last.pt hold the same step and bitwise the same weights of every network and
    EMA copy (buffers included): how every resume test says "the same run"."""
    import torch

    from gan_cli.loop.checkpoint import load_checkpoint

    expected = load_checkpoint(expected_run / "checkpoints" / "last.pt")
    resumed = load_checkpoint(resumed_run / "checkpoints" / "last.pt")
    assert resumed["step"] == expected["step"] == step
    for kind in ("networks", "averages"):
        for name, weights in expected[kind].items():
            for key, value in weights.items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, resumed[kind][name][key]), f"{kind}.{name}.{key}"


def one_line_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], main: Callable[[], object],
                   script: str, args: list[str]) -> str:
    """An app's Hydra entry point (`main`) as a user runs `script`: exit 2 and one `error:` line on stderr."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:  # Hydra's console handler writes to this test's captured stdout: not to outlive it
        root.handlers[:], root.level = handlers, level
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err
