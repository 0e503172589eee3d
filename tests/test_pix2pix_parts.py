"""pix2pix's parts: paired data (the aligned A|B layout, trainA/trainB with matching names, pairs made
by a transform of any dataset), the paired transforms, the U-Net generator and the conditional
PatchGAN, and their config options composed from the real conf/."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from gan_cli.core.config import build
from gan_cli.core.errors import GanCliError
from gan_cli.data.datasets import ImageData, load_torchvision
from gan_cli.data.paired import (
    PAIR_TRANSFORMS,
    blur,
    downsample,
    edges,
    load_aligned_folder,
    load_matched_folders,
    mask_bottom,
    pair_transform_for,
    pairs_from_dataset,
)
from gan_cli.models.cyclegan import Discriminator
from gan_cli.models.pix2pix import PatchDiscriminator, UNetGenerator
from tests.conftest import compose_train, make_mnist

NOISE = torch.Generator().manual_seed(0)


# ---------------------------------------------------------------- the aligned layout (A | B in one file)

def write_side_by_side(folder: Path, count: int, left: int, right: int, suffix: str = ".png") -> None:
    """`count` 16x8 images: the left 8x8 half grey level `left` + index, the right `right` + index."""
    folder.mkdir(parents=True)
    for index in range(count):
        image = Image.new("L", (16, 8), left + index)
        image.paste(right + index, (8, 0, 16, 8))
        image.convert("RGB").save(folder / f"{index:03d}{suffix}")


def test_aligned_halves_land_in_a_and_b_and_b2a_swaps(tmp_path: Path) -> None:
    write_side_by_side(tmp_path / "train", 3, left=20, right=200)
    pairs = load_aligned_folder(root=str(tmp_path), image_size=8, channels=1)
    assert pairs.train_a.shape == pairs.train_b.shape == (3, 1, 8, 8) and pairs.train_a.dtype == torch.uint8
    assert pairs.train_a[:, 0, 0, 0].tolist() == [20, 21, 22] and pairs.train_a.amax() == 22  # no right pixel
    assert pairs.train_b[:, 0, 0, 0].tolist() == [200, 201, 202] and pairs.train_b.amin() == 200
    assert torch.equal(pairs.test_a, pairs.train_a) and pairs.train_labels is None  # no test/ nor val/
    swapped = load_aligned_folder(root=str(tmp_path), image_size=4, channels=3, direction="b2a")
    assert swapped.train_a.shape == (3, 3, 4, 4) and swapped.train_a[:, 0, 0, 0].tolist() == [200, 201, 202]
    with pytest.raises(GanCliError, match="dataset.direction='ab'.*a2b, b2a"):
        load_aligned_folder(root=str(tmp_path), image_size=8, channels=1, direction="ab")


def test_aligned_test_split_falls_back_to_val_then_train(tmp_path: Path) -> None:
    write_side_by_side(tmp_path / "train", 2, left=20, right=200)
    write_side_by_side(tmp_path / "val", 4, left=60, right=160, suffix=".jpg")
    with_val = load_aligned_folder(root=str(tmp_path), image_size=8, channels=1)
    assert with_val.test_a.shape[0] == 4 and (with_val.test_a[:, 0, 4, 4].float() - 60).abs().max() < 8  # JPEG
    write_side_by_side(tmp_path / "test", 5, left=90, right=120)
    with_test = load_aligned_folder(root=str(tmp_path), image_size=8, channels=1)
    assert with_test.test_a.shape[0] == 5 and with_test.test_b[:, 0, 0, 0].tolist() == [120, 121, 122, 123, 124]
    with pytest.raises(GanCliError, match="needs root/train"):
        load_aligned_folder(root=str(tmp_path / "nowhere"), image_size=8, channels=1)


# ---------------------------------------------------------------- trainA/trainB with matching names

def write_matched(root: Path, names: dict[str, int], split: str = "train") -> None:
    """A image `name` grey level v, its B partner 255 - v; written in reverse order of names."""
    for side in "AB":
        (root / f"{split}{side}").mkdir(parents=True, exist_ok=True)
    for name, value in sorted(names.items(), reverse=True):
        Image.new("L", (12, 10), value).save(root / f"{split}A" / name)
        Image.new("L", (12, 10), 255 - value).save(root / f"{split}B" / name)


def test_matched_folders_pair_files_by_name(tmp_path: Path) -> None:
    write_matched(tmp_path, {"c.png": 30, "a.png": 10, "b.png": 20})
    pairs = load_matched_folders(root=str(tmp_path), image_size=8, channels=1)
    assert pairs.train_a.shape == (3, 1, 8, 8)
    assert (pairs.train_a.int() + pairs.train_b.int()).eq(255).all()  # every A beside its own B
    assert torch.equal(pairs.test_b, pairs.train_b)  # no testA/testB: the training pairs
    write_matched(tmp_path, {"t.png": 99}, split="test")
    swapped = load_matched_folders(root=str(tmp_path), image_size=8, channels=3, direction="b2a")
    assert swapped.test_a.shape == (1, 3, 8, 8) and swapped.test_a.eq(255 - 99).all()


def test_a_file_without_its_partner_is_one_line_naming_it(tmp_path: Path) -> None:
    write_matched(tmp_path, {"a.png": 10})
    Image.new("L", (12, 10), 5).save(tmp_path / "trainA" / "x.png")
    with pytest.raises(GanCliError) as err:
        load_matched_folders(root=str(tmp_path), image_size=8, channels=1)
    assert str(err.value) == ("trainB has no 'x.png' (the partner of trainA/x.png): paired folders need the same "
                              "file names in both")
    (tmp_path / "trainA" / "x.png").rename(tmp_path / "trainB" / "y.png")
    with pytest.raises(GanCliError, match=r"^trainA has no 'y.png' \(the partner of trainB/y.png\)"):
        load_matched_folders(root=str(tmp_path), image_size=8, channels=1)


# ---------------------------------------------------------------- paired transforms

def test_mask_bottom_sets_exactly_the_bottom_rows_to_each_images_darkest_value() -> None:
    images = torch.randint(10, 250, (3, 2, 28, 28), dtype=torch.uint8)
    masked = mask_bottom(images, NOISE)
    assert masked.dtype == torch.uint8 and masked.shape == images.shape
    assert torch.equal(masked[:, :, :14], images[:, :, :14])  # rows 0-13 kept
    darkest = images.amin(dim=(1, 2, 3))
    assert torch.equal(masked[:, :, 14:], darkest.view(3, 1, 1, 1).expand(3, 2, 14, 28))  # rows 14-27 background


def test_edges_are_zero_on_a_constant_image_and_bright_on_a_step() -> None:
    constant = torch.full((2, 3, 16, 16), 170, dtype=torch.uint8)
    assert edges(constant, NOISE).eq(0).all()  # also at the border (replicate padding)
    step = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    step[..., 8:] = 255
    edge_map = edges(step, NOISE)
    assert edge_map.dtype == torch.uint8 and edge_map.shape == (1, 1, 16, 16)
    assert edge_map[..., 7:9].eq(255).all() and edge_map[..., :6].eq(0).all() and edge_map[..., 10:].eq(0).all()


def test_blur_keeps_a_constant_image_and_smooths_noise() -> None:
    constant = torch.full((2, 3, 28, 28), 77, dtype=torch.uint8)
    assert torch.equal(blur(constant, NOISE), constant)
    noisy = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    blurred = blur(noisy, NOISE)
    assert blurred.dtype == torch.uint8 and blurred.shape == noisy.shape
    assert blurred.float().std() < 0.5 * noisy.float().std()
    assert abs(blurred.float().mean() - noisy.float().mean()) < 3  # taps sum to 1


def test_downsample_keeps_block_constant_images_and_blocks_the_rest() -> None:
    blocks = torch.randint(0, 256, (2, 3, 7, 7), dtype=torch.uint8)
    blocky = blocks.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # (2, 3, 28, 28), 4x4 blocks
    assert torch.equal(downsample(blocky, NOISE), blocky)
    noisy = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8)
    down = downsample(noisy, NOISE)
    assert down.dtype == torch.uint8 and down.shape == noisy.shape and not torch.equal(down, noisy)
    assert down[0, 0, :4, :4].unique().numel() == 1  # one value per 4x4 block
    assert down[0, 0, 0, 0] == noisy[0, 0, :4, :4].float().mean().round()  # area average


def test_unknown_transform_is_one_line_listing_the_allowed_ones() -> None:
    with pytest.raises(GanCliError) as err:
        pair_transform_for("sharpen")
    assert str(err.value) == ("invalid value task.transform='sharpen': allowed are mask_bottom, edges, blur, "
                              "downsample, dilate, erode, invert, colorize")
    data = ImageData(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), 0)
    with pytest.raises(GanCliError, match="task.direction='both'"):
        pairs_from_dataset(data, None, "blur", direction="both")


def test_pairs_from_mnist_keep_the_image_as_target_and_the_labels(tmp_path: Path) -> None:
    mnist = dict(dataset_class="torchvision.datasets.MNIST", root=str(make_mnist(tmp_path)), download=False,
                 channels=1, image_size=28, num_classes=10)
    train, test = load_torchvision(**mnist), load_torchvision(**mnist, train=False)
    pairs = pairs_from_dataset(train, test, "mask_bottom")
    assert torch.equal(pairs.train_b, train.images) and torch.equal(pairs.test_b, test.images)
    assert torch.equal(pairs.train_a, mask_bottom(train.images, NOISE))
    assert torch.equal(pairs.train_labels, train.labels) and pairs.num_classes == 10  # type: ignore[arg-type]
    coloured = pairs_from_dataset(train, None, "colorize", direction="b2a", seed=1)
    assert coloured.train_a.shape == (96, 1, 28, 28) and coloured.channels_b == 3  # colour is the target now
    assert torch.equal(coloured.test_a, train.images)  # no test split: the training pairs
    joined = coloured.joined("test")
    assert joined.images.shape == (96, 4, 28, 28) and torch.equal(joined.images[:, 1:], coloured.test_b)
    unlabelled = ImageData(train.images, torch.zeros(96, dtype=torch.long), 0)
    assert pairs_from_dataset(unlabelled, None, "edges").train_labels is None
    assert set(PAIR_TRANSFORMS) >= {"dilate", "erode", "invert", "colorize"}


# ---------------------------------------------------------------- networks

@pytest.mark.parametrize("size, ngf", [(28, 4), (32, 4), (64, 4), (256, 1)])
def test_unet_keeps_the_size_and_maps_channels(size: int, ngf: int) -> None:
    generator = UNetGenerator(1, 3, ngf=ngf, image_size=size)
    out = generator(torch.rand(2, 1, size, size) * 2 - 1)
    assert out.shape == (2, 3, size, size) and out.abs().max() <= 1
    assert generator.size == (32 if size == 28 else size)  # 28 is padded to 32 inside forward
    with pytest.raises(GanCliError, match="larger than the U-Net"):
        generator(torch.zeros(1, 1, 2 * size, 2 * size))


def test_skip_connections_carry_fine_detail_past_a_dead_bottleneck() -> None:
    torch.manual_seed(0)
    generator = UNetGenerator(1, 1, ngf=4, image_size=32, dropout_at_test=False).eval()
    innermost = generator.encoder[-1][1]
    torch.nn.init.zeros_(innermost.weight)  # the 1x1 bottleneck now ignores its input
    torch.nn.init.zeros_(innermost.bias)
    images = torch.rand(1, 1, 32, 32) * 2 - 1
    detailed = images.clone()
    detailed[..., 10, 10] = -detailed[..., 10, 10]  # one pixel of fine detail
    with torch.no_grad():
        change = (generator(detailed) - generator(images)).abs()[0, 0]
    assert change[8:13, 8:13].max() > 1e-3  # only the skips can carry it
    assert change[8:13, 8:13].max() > 100 * change[20:, 20:].max()  # mostly the shallow ones: it stays local


def test_dropout_is_the_noise_at_test_time_unless_turned_off() -> None:
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    stochastic = UNetGenerator(1, 1, ngf=4, image_size=32).eval()
    deterministic = UNetGenerator(1, 1, ngf=4, image_size=32, dropout_at_test=False).eval()
    with torch.no_grad():
        assert not torch.equal(stochastic(images), stochastic(images))
        assert torch.equal(deterministic(images), deterministic(images))


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_patchgan_scores_patches_of_input_and_output_together(layers: int) -> None:
    inputs, outputs = torch.rand(2, 1, 32, 32), torch.rand(2, 3, 32, 32)
    discriminator = PatchDiscriminator(1, 3, ndf=4, layers=layers, norm="instance")
    logits = discriminator(inputs, outputs)
    # The same patch grid as CycleGAN's PatchGAN on the 4 concatenated channels: flattened (B * patches,)
    assert logits.shape == Discriminator(4, ndf=4, layers=layers)(torch.cat([inputs, outputs], 1)).shape
    assert logits.dim() == 1 and logits.numel() % 2 == 0 and logits.numel() >= 2
    assert not torch.equal(discriminator(torch.rand(2, 1, 32, 32), outputs), logits)  # conditional on the input
    with pytest.raises(GanCliError, match="norm='group'"):
        PatchDiscriminator(1, 3, norm="group")


def test_config_options_build_the_networks_and_the_pairs(tmp_path: Path) -> None:
    write_side_by_side(tmp_path / "train", 2, left=20, right=200)
    cfg = compose_train(["model=pix2pix", "dataset=aligned", f"dataset.root={tmp_path}", "dataset.image_size=28",
                         "model.generator.ngf=2", "model.discriminator.ndf=2"])
    pairs = build(cfg.dataset)
    assert pairs.train_a.shape == (2, 3, 28, 28) and pairs.train_a[:, 0, 0, 0].tolist() == [20, 21]
    generator = build(cfg.model.generator, channels_in=pairs.channels_a, channels_out=pairs.channels_b)
    discriminator = build(cfg.model.discriminator, channels_in=pairs.channels_a, channels_out=pairs.channels_b)
    fake = generator(pairs.train_a.float() / 127.5 - 1)
    assert fake.shape == (2, 3, 28, 28) and discriminator(pairs.train_a.float(), fake).dim() == 1
    matched = compose_train(["dataset=paired", f"dataset.root={tmp_path}"])
    with pytest.raises(GanCliError, match="trainA is not a folder"):
        build(matched.dataset)
