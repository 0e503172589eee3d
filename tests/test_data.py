"""Datasets load through torchvision's real classes and file formats into device tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from gan_cli.core.config import build, validate
from gan_cli.core.errors import GanCliError
from gan_cli.data.datasets import DeviceSampler, ImageData, load_fake
from tests.conftest import compose_train, make_image_folder, make_mnist


def load(overrides: list[str]) -> ImageData:
    return build(validate(compose_train(overrides)).dataset)


def test_mnist_idx_files(mnist_root: Path) -> None:
    data = load([f"dataset.root={mnist_root}", "dataset.download=false"])
    assert data.images.shape == (96, 1, 28, 28) and data.images.dtype == torch.uint8
    assert data.labels.shape == (96,) and data.labels.max() < 10


def test_fashion_mnist_idx_files(tmp_path: Path) -> None:
    root = make_mnist(tmp_path / "data", folder="FashionMNIST", count=40)
    data = load(["dataset=fashion_mnist", f"dataset.root={root}", "dataset.download=false"])
    assert data.images.shape == (40, 1, 28, 28)


def test_cifar10_pickle_batches(cifar_root: Path) -> None:
    data = load(["dataset=cifar10", f"dataset.root={cifar_root}", "dataset.download=false"])
    assert data.images.shape == (100, 3, 32, 32) and data.images.dtype == torch.uint8  # 5 batches x 20


def test_image_folder_resizes_and_labels(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "faces", classes=3, per_class=4, size=(40, 30))
    data = load(["dataset=folder", f"dataset.root={root}", "dataset.image_size=16"])
    assert data.images.shape == (12, 3, 16, 16) and data.num_classes == 3
    assert sorted(data.labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def test_image_folder_grayscale(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", classes=1, per_class=3)
    data = load(["dataset=folder", f"dataset.root={root}", "dataset.image_size=8", "dataset.channels=1"])
    assert data.images.shape == (3, 1, 8, 8)


def test_mnist_resized_for_other_models(mnist_root: Path) -> None:
    data = load([f"dataset.root={mnist_root}", "dataset.download=false", "dataset.image_size=32"])
    assert data.images.shape == (96, 1, 32, 32)


def test_missing_files_say_where_and_how(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(GanCliError, match=r"MNIST/raw.*dataset\.root"):
        load([f"dataset.root={tmp_path / 'empty'}", "dataset.download=false"])


def test_truncated_idx_file_is_a_clear_error(mnist_root: Path) -> None:
    images = mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(GanCliError, match="could not load MNIST"):
        load([f"dataset.root={mnist_root}", "dataset.download=false"])


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", classes=1, per_class=2)
    (root / "class_0" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(GanCliError, match="broken.png"):
        load(["dataset=folder", f"dataset.root={root}", "dataset.image_size=8"])


def test_fake_is_deterministic_and_shaped() -> None:
    first = load_fake(num_samples=20, channels=3, image_size=16, num_classes=4)
    second = load_fake(num_samples=20, channels=3, image_size=16, num_classes=4)
    assert first.images.shape == (20, 3, 16, 16) and torch.equal(first.images, second.images)
    assert first.labels.max() < 4


def test_sampler_batches_are_scaled_permuted_and_reproducible() -> None:
    data = load_fake(num_samples=50, channels=1, image_size=8, num_classes=2)
    sampler = DeviceSampler(data, torch.device("cpu"), batch_size=16, seed=3, hflip=False)
    assert sampler.batches_per_epoch == 3  # the ragged tail is dropped: fixed shapes
    batches = [sampler.batch(i)[0] for i in range(3)]
    assert all(b.shape == (16, 1, 8, 8) and b.min() >= -1 and b.max() <= 1 for b in batches)
    epoch_images = torch.cat(batches)
    assert len({tuple(row.flatten().tolist()) for row in epoch_images}) == 48  # no repeats in an epoch
    again = DeviceSampler(data, torch.device("cpu"), batch_size=16, seed=3, hflip=False)
    assert torch.equal(again.batch(4)[0], sampler.batch(4)[0])  # batch k depends only on (seed, k)
    assert not torch.equal(sampler.batch(0)[0], sampler.batch(3)[0])  # new permutation next epoch


def test_sampler_hflip_flips_some_images() -> None:
    data = load_fake(num_samples=64, channels=3, image_size=8, num_classes=1)
    plain = DeviceSampler(data, torch.device("cpu"), batch_size=64, seed=0, hflip=False).batch(0)[0]
    flipped = DeviceSampler(data, torch.device("cpu"), batch_size=64, seed=0, hflip=True).batch(0)[0]
    same = (plain == flipped).flatten(1).all(1)
    mirrored = (plain.flip(3) == flipped).flatten(1).all(1)
    assert (same | mirrored).all() and 0 < mirrored.sum() < 64


def test_batch_larger_than_dataset_is_rejected() -> None:
    data = load_fake(num_samples=10, channels=1, image_size=8, num_classes=1)
    with pytest.raises(GanCliError, match="trainer.batch_size=32"):
        DeviceSampler(data, torch.device("cpu"), batch_size=32, seed=0, hflip=False)


def test_png_roundtrip_keeps_pixels(tmp_path: Path) -> None:
    root = tmp_path / "one" / "c"
    root.mkdir(parents=True)
    pixels = torch.randint(0, 256, (8, 8, 3), dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save(root / "a.png")
    data = load(["dataset=folder", f"dataset.root={tmp_path / 'one'}", "dataset.image_size=8"])
    assert torch.equal(data.images[0], pixels.permute(2, 0, 1))
