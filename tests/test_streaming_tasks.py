"""Every task reads its real images through streaming.make_sampler: a converted dataset streamed
from disk trains bitwise the run that holds it in memory (on the CPU), and resumes bitwise."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_cli.apps.data import convert
from gan_cli.core.errors import GanCliError
from gan_cli.data import captions
from gan_cli.data.converted import OnDiskData, load_converted
from gan_cli.data.domains import Domains
from gan_cli.data.paired import Pairs, load_aligned_folder
from gan_cli.loop.train import train
from tests.conftest import TINY, assert_same_weights, compose_train
from tests.test_cyclegan import TINY_CYCLE, make_unpaired
from tests.test_pix2pix import TINY_P2P
from tests.test_srgan import TINY_SR
from tests.test_streaming import compose_data, digits
from tests.test_text2image import PROMPTS, TINY_T2I


def streaming_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("dataset: ")]


def streamed_and_resumed(tmp_path: Path, streamed: list[str]) -> None:
    """A 6-step streaming run into tmp_path/stream, and its resume from step 3 into tmp_path/resumed."""
    train(compose_train(streamed), run_dir=tmp_path / "stream")
    middle = tmp_path / "stream" / "checkpoints" / "step_0000003.pt"
    train(compose_train([*streamed, f"trainer.resume={middle}"]), run_dir=tmp_path / "resumed")


# ---------------------------------------------------------------- task=srgan: HR batches stream


def srgan_run(root: Path, *extra: str) -> list[str]:
    tiny = [arg for arg in TINY_SR if not arg.startswith(("dataset=", "dataset."))]  # dataset=fake's
    return [*tiny, "dataset=converted", f"dataset.root={root}", "dataset.channels=1", "dataset.image_size=28",
            "task.pretrain_steps=2", "trainer.max_steps=6", "trainer.ckpt_every_n_steps=3", *extra]


# ---------------------------------------------------------------- task=text2image: captions made from labels


def text_run(root: Path, *extra: str) -> list[str]:
    tiny = [arg for arg in TINY_T2I if not arg.startswith(("dataset=", "dataset."))]  # dataset=fake's
    return [*tiny, "dataset=converted", f"dataset.root={root}", "dataset.channels=1", "dataset.image_size=28",
            "dataset.num_classes=10", "dataset.hflip=false", "trainer.max_steps=6", "trainer.ckpt_every_n_steps=3",
            *extra]


@pytest.mark.parametrize("run", [srgan_run, text_run], ids=["srgan", "text2image"])
def test_a_converted_dataset_streams_bitwise_the_in_memory_run_and_resumes_bitwise(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, run: Callable[..., list[str]]) -> None:
    """srgan: HR batches (the LR side made from each HR batch, the EMA's BatchNorm re-estimation
    reading the memory-mapped rows); text2image: captions made from a converted MNIST's labels and
    measured attributes (batches of row numbers picking the captions). In memory and streamed
    (2 workers) train the same weights, and a streaming resume from step 3 lands on them too."""
    out = digits(tmp_path)
    with caplog.at_level(logging.INFO, logger="gan_cli"):
        train(compose_train(run(out, "dataset.in_memory=true")), run_dir=tmp_path / "memory")
        streamed = run(out, "dataset.in_memory=false", "dataset.num_workers=2")
        streamed_and_resumed(tmp_path, streamed)
    said = streaming_lines(caplog)
    assert said[0].startswith("dataset: in memory"), said
    assert all(line.startswith("dataset: streaming from disk") for line in said[1:]) and len(said) == 3, said
    assert_same_weights(tmp_path / "memory", tmp_path / "stream", 6)
    assert_same_weights(tmp_path / "stream", tmp_path / "resumed", 6)


def test_made_captions_measure_a_mapped_dataset_a_chunk_at_a_time(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The ink and slant of every image are measured MEASURED_ROWS images at a time (a converted
    dataset larger than memory is never read whole, nor its float copy made), each image's numbers
    the ones measured on all the images at once."""
    data = load_converted(root=str(digits(tmp_path, count=40)), channels=1, image_size=28, num_classes=10)
    reads: list[int] = []
    real_ink = captions.ink
    monkeypatch.setattr(captions, "ink", lambda images: reads.append(images.shape[0]) or real_ink(images))
    monkeypatch.setattr(captions, "MEASURED_ROWS", 16)
    amount, slant = captions.measured(data.images)
    assert reads == [16, 16, 8]
    assert torch.equal(amount, real_ink(data.images)) and torch.equal(slant, captions.shear(data.images))
    thickness, slanted = captions.attributes(data, 0.15)
    assert thickness.shape == slanted.shape == (40,) and reads[3:] == [16, 16, 8]


# ---------------------------------------------------------------- task=text2image: a converted captioned folder


def captioned_folder(root: Path, count: int = 24) -> Path:
    """`count` 16x16 RGB images (at the size trained: no resampling either way) and captions.jsonl,
    one or two captions per image in the words of TINY_T2I's prompts."""
    root.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for index in range(count):
        name = f"{index:02d}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / name)
        lines += [{"file": name, "text": PROMPTS[index % 3]}] + ([{"file": name, "text": "a thin seven"}] * (index % 2))
    (root / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def test_a_converted_captioned_folder_streams_into_the_run_dataset_captioned_trains(tmp_path: Path) -> None:
    """gan-data captions=captions.jsonl stores each image's captions by row (captions.jsonl beside
    the arrays); task=text2image streaming it trains bitwise the run dataset=captioned trains on the
    folder itself."""
    folder = captioned_folder(tmp_path / "birds")
    out = convert(compose_data([f"source={folder}", f"out={tmp_path / 'birds16'}", "image_size=16", "channels=3",
                                "captions=captions.jsonl", "num_workers=0"]))
    stored = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert stored[:3] == [{"row": 0, "text": PROMPTS[0]}, {"row": 1, "text": PROMPTS[1]},
                          {"row": 1, "text": "a thin seven"}]
    tiny = [arg for arg in TINY_T2I if not arg.startswith(("dataset=", "dataset."))]
    same = [*tiny, f"dataset.root={folder}", "dataset.channels=3", "dataset.image_size=16", "dataset.hflip=false",
            "dataset.num_classes=0"]
    train(compose_train(["dataset=captioned", *same]), run_dir=tmp_path / "folder")
    streamed = ["dataset=converted", *same, f"dataset.root={out}", "dataset.in_memory=false", "dataset.num_workers=2"]
    train(compose_train(streamed), run_dir=tmp_path / "converted")
    assert_same_weights(tmp_path / "folder", tmp_path / "converted", 4)


def test_captions_stay_with_their_images_when_a_file_is_skipped(tmp_path: Path) -> None:
    folder = captioned_folder(tmp_path / "birds", count=4)
    (folder / "01.png").write_bytes(b"not a png")  # row 1 is then image 02's
    out = convert(compose_data([f"source={folder}", f"out={tmp_path / 'out'}", "image_size=16",
                                "captions=captions.jsonl", "num_workers=0"]))
    data = load_converted(root=str(out), channels=3, image_size=16, num_classes=0)
    assert data.captions == [[PROMPTS[0]], [PROMPTS[2]], [PROMPTS[0], "a thin seven"]]


@pytest.mark.parametrize("args, expected", [
    (["source=mnist", "captions=captions.jsonl"], r"^captions=captions.jsonl reads a folder of captioned images, but "
                                                  r"source='mnist' is not a folder"),
    (["captions=none.jsonl"], r"^source='.*' has no captions: add none.jsonl"),
])
def test_bad_captioned_conversions_are_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    folder = captioned_folder(tmp_path / "birds", count=2)
    (folder / "captions.jsonl").unlink()
    with pytest.raises(GanCliError, match=expected):
        convert(compose_data([f"source={folder}", f"out={tmp_path / 'out'}", *args]))
    assert not (tmp_path / "out").exists()


def test_a_damaged_captions_file_is_one_line(tmp_path: Path) -> None:
    out = convert(compose_data([f"source={captioned_folder(tmp_path / 'birds', count=3)}", f"out={tmp_path / 'out'}",
                                "image_size=16", "captions=captions.jsonl", "num_workers=0"]))
    (out / "captions.jsonl").write_text('{"row": 0, "text": "a two"}\n')
    with pytest.raises(GanCliError, match=r"captions.jsonl: image row 1 has no caption \(2 rows have none\): "
                                          "convert the dataset again with gan-data$"):
        load_converted(root=str(out), channels=3, image_size=16, num_classes=0)


# ---------------------------------------------------------------- task=cyclegan: two converted domains


def test_gan_data_layout_unpaired_writes_a_converted_dataset_per_domain(tmp_path: Path) -> None:
    """trainA, trainB, testA, testB each become out/<name> (a converted dataset) and dataset=converted
    loads them as CycleGAN's domains, memory-mapped; without test folders the training ones stand in."""
    out = convert(compose_data([f"source={make_unpaired(tmp_path / 'h2z')}", f"out={tmp_path / 'h2z16'}",
                                "layout=unpaired", "image_size=16", "num_workers=0"]))
    domains = load_converted(root=str(out), channels=3, image_size=16, num_classes=0)
    assert isinstance(domains, Domains) and isinstance(domains.train_a, OnDiskData)
    shapes = [d.images.shape for d in (domains.train_a, domains.train_b, domains.test_a, domains.test_b)]
    assert shapes == [(10, 3, 16, 16), (12, 3, 16, 16), (3, 3, 16, 16), (4, 3, 16, 16)]
    assert domains.train_a.images[:, 0].float().mean() > 150 > domains.train_b.images[:, 0].float().mean()
    again = convert(compose_data([f"source={make_unpaired(tmp_path / 'other', with_test=False)}", f"out={out}",
                                  "layout=unpaired", "image_size=16", "num_workers=0"]))  # replaces the first
    no_test = load_converted(root=str(again), channels=3, image_size=16, num_classes=0)
    assert isinstance(no_test, Domains) and no_test.test_b is no_test.train_b
    assert sorted(p.name for p in again.iterdir()) == ["layout.json", "trainA", "trainB"]


def test_bad_unpaired_conversions_are_one_line(tmp_path: Path) -> None:
    root = make_unpaired(tmp_path / "h2z", with_test=False)
    for path in (root / "trainB").iterdir():
        path.unlink()
    (root / "trainB").rmdir()
    with pytest.raises(GanCliError, match=r"^layout=unpaired needs source/trainA and source/trainB .*trainB is not "
                                          r"a folder$"):
        convert(compose_data([f"source={root}", f"out={tmp_path / 'out'}", "layout=unpaired"]))
    with pytest.raises(GanCliError, match=r"^layout=unpaired reads a folder"):
        convert(compose_data(["source=mnist", f"out={tmp_path / 'out'}", "layout=unpaired"]))
    with pytest.raises(GanCliError, match=r"^invalid value layout='pairs': allowed is images, unpaired or paired$"):
        convert(compose_data([f"source={root}", f"out={tmp_path / 'out'}", "layout=pairs"]))
    assert not (tmp_path / "out").exists()


def test_cyclegan_streams_two_converted_domains_bitwise_the_in_memory_run_and_resumes_bitwise(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = convert(compose_data([f"source={make_unpaired(tmp_path / 'h2z')}", f"out={tmp_path / 'h2z16'}",
                                "layout=unpaired", "image_size=16", "num_workers=0"]))
    tiny = [arg for arg in TINY_CYCLE if not arg.startswith(("dataset", "task.domain"))]
    run = [*tiny, "dataset=converted", f"dataset.root={out}", "dataset.image_size=16", "trainer.batch_size=4",
           "trainer.max_steps=6", "trainer.ckpt_every_n_steps=3"]
    with caplog.at_level(logging.INFO, logger="gan_cli"):
        train(compose_train([*run, "dataset.in_memory=true"]), run_dir=tmp_path / "memory")
        streamed = [*run, "dataset.in_memory=false", "dataset.num_workers=2"]
        streamed_and_resumed(tmp_path, streamed)
    said = streaming_lines(caplog)
    assert [line.split(":")[1] for line in said] == [" in memory"] * 2 + [" streaming from disk"] * 4, said
    assert_same_weights(tmp_path / "memory", tmp_path / "stream", 6)
    assert_same_weights(tmp_path / "stream", tmp_path / "resumed", 6)


# ---------------------------------------------------------------- task=pix2pix: converted pairs


def side_by_side(folder: Path, count: int, size: int = 16) -> Path:
    """`count` RGB files A | B, each half size x size (the size trained: no resampling either way)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (size, 2 * size, 3), dtype=np.uint8)).save(folder / f"{index:03d}.png")
    return folder.parent


def test_gan_data_layout_paired_stores_a_and_b_joined_for_both_layouts(tmp_path: Path) -> None:
    """pix2pix's A | B files and trainA/trainB of the same names both become out/train (and test),
    A's channels then B's; dataset=converted reads them as the folder options read the folders."""
    root = side_by_side(tmp_path / "facades" / "train", 6)
    side_by_side(tmp_path / "facades" / "val", 2)
    out = convert(compose_data([f"source={root}", f"out={tmp_path / 'f16'}", "layout=paired", "image_size=16",
                                "num_workers=0"]))
    pairs = load_converted(root=str(out), channels=3, image_size=16, num_classes=0)
    folder = load_aligned_folder(root=str(root), image_size=16, channels=3)
    assert isinstance(pairs, Pairs) and isinstance(pairs.stored, OnDiskData) and pairs.stored.images.shape[1] == 6
    for name in ("train_a", "train_b", "test_a", "test_b"):
        assert torch.equal(getattr(pairs, name), getattr(folder, name)), name
    matched = tmp_path / "day2night"
    for split, side in (("trainA", 0), ("trainB", 1)):
        (matched / split).mkdir(parents=True)
        for index in range(3):
            Image.open(root / "train" / f"{index:03d}.png").crop((16 * side, 0, 16 * side + 16, 16)).save(
                matched / split / f"{index:03d}.png")
    again = convert(compose_data([f"source={matched}", f"out={tmp_path / 'd16'}", "layout=paired", "image_size=16",
                                  "num_workers=0"]))
    two = load_converted(root=str(again), channels=3, image_size=16, num_classes=0)
    assert isinstance(two, Pairs) and torch.equal(two.train_b, folder.train_b[:3]) and two.test_a is not None
    assert torch.equal(two.test_a, folder.train_a[:3])  # no testA/testB: the training pairs
    with pytest.raises(GanCliError, match=r"holds pairs of 3-channel images but the config asks for "
                                          r"dataset.channels=1: set dataset.channels=3$"):
        load_converted(root=str(again), channels=1, image_size=16, num_classes=0)
    with pytest.raises(GanCliError, match=r"^layout=paired needs source/train .* has neither$"):
        convert(compose_data([f"source={matched / 'trainA'}", f"out={tmp_path / 'x'}", "layout=paired"]))


@pytest.mark.parametrize("direction", ["a2b", "b2a"])
def test_pix2pix_streams_converted_pairs_bitwise_the_aligned_folder_run(tmp_path: Path, direction: str,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Pairs streamed from a layout=paired conversion train bitwise what dataset=aligned trains on
    the folder itself (flips alike on both halves), in either direction; a streaming resume too."""
    root = side_by_side(tmp_path / "facades" / "train", 12)
    out = convert(compose_data([f"source={root}", f"out={tmp_path / 'f16'}", "layout=paired", "image_size=16",
                                "num_workers=0"]))
    tiny = [arg for arg in TINY_P2P if not arg.startswith(("dataset", "task.transform"))]
    same = [*tiny, "dataset.image_size=16", "dataset.hflip=true", f"task.direction={direction}",
            "trainer.batch_size=4", "trainer.max_steps=6", "trainer.ckpt_every_n_steps=3"]
    train(compose_train(["dataset=aligned", f"dataset.root={root}", *same]), run_dir=tmp_path / "folder")
    streamed = ["dataset=converted", f"dataset.root={out}", *same, "dataset.in_memory=false", "dataset.num_workers=2"]
    with caplog.at_level(logging.INFO, logger="gan_cli"):
        streamed_and_resumed(tmp_path, streamed)
    assert [line.split(":")[1] for line in streaming_lines(caplog)] == [" streaming from disk"] * 2
    assert_same_weights(tmp_path / "folder", tmp_path / "stream", 6)
    assert_same_weights(tmp_path / "stream", tmp_path / "resumed", 6)


# ---------------------------------------------------------------- a layout folder under the wrong task


@pytest.mark.parametrize(("layout", "task", "owner"), [
    ("unpaired", "image_gan", "task=cyclegan"), ("unpaired", "pix2pix", "task=cyclegan"),
    ("paired", "image_gan", "task=pix2pix"), ("paired", "cyclegan", "task=pix2pix"),
    ("paired", "srgan", "task=pix2pix")])
def test_a_layout_folder_under_another_task_names_the_task_it_is_for(tmp_path: Path, layout: str, task: str,
                                                                    owner: str) -> None:
    source = make_unpaired(tmp_path / "h2z") if layout == "unpaired" else side_by_side(tmp_path / "f" / "train", 6)
    out = convert(compose_data([f"source={source}", f"out={tmp_path / 'out'}", f"layout={layout}",
                                "image_size=16", "num_workers=0"]))
    tiny = {"image_gan": TINY, "pix2pix": TINY_P2P, "cyclegan": TINY_CYCLE, "srgan": TINY_SR}[task]
    run = [*(a for a in tiny if not a.startswith(("dataset", "task.domain", "task.transform"))), f"task={task}",
           "dataset=converted", f"dataset.root={out}", "dataset.image_size=16", "trainer.batch_size=2"]
    with pytest.raises(GanCliError, match=rf"(holds|made) \w+ \(what {owner} trains on\)") as err:
        train(compose_train(run), run_dir=tmp_path / "run")
    assert "\n" not in str(err.value) and owner in str(err.value)
