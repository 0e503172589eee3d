"""Every task reads its real images through streaming.make_sampler: a converted dataset streamed
from disk trains bitwise the run that holds it in memory (on the CPU), and resumes bitwise."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from gan_cli.data import captions
from gan_cli.data.converted import load_converted
from gan_cli.loop.train import train
from tests.conftest import assert_same_weights, compose_train
from tests.test_srgan import TINY_SR
from tests.test_streaming import digits
from tests.test_text2image import TINY_T2I


def streaming_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("dataset: ")]


# ---------------------------------------------------------------- task=srgan: HR batches stream


def srgan_run(root: Path, *extra: str) -> list[str]:
    tiny = [arg for arg in TINY_SR if not arg.startswith(("dataset=", "dataset."))]  # dataset=fake's
    return [*tiny, "dataset=converted", f"dataset.root={root}", "dataset.channels=1", "dataset.image_size=28",
            "task.pretrain_steps=2", "trainer.max_steps=6", "trainer.ckpt_every_n_steps=3", *extra]


def test_srgan_streams_hr_batches_bitwise_the_in_memory_run_and_resumes_bitwise(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """HR batches from a converted dataset: in memory and streamed (2 workers) train the same
    weights (the LR side is made from each HR batch, the EMA's BatchNorm re-estimation reads the
    memory-mapped rows); a streaming resume from step 3 lands on them too."""
    out = digits(tmp_path)
    with caplog.at_level(logging.INFO, logger="gan_cli"):
        train(compose_train(srgan_run(out, "dataset.in_memory=true")), run_dir=tmp_path / "memory")
        streamed = srgan_run(out, "dataset.in_memory=false", "dataset.num_workers=2")
        train(compose_train(streamed), run_dir=tmp_path / "stream")
        middle = tmp_path / "stream" / "checkpoints" / "step_0000003.pt"
        train(compose_train([*streamed, f"trainer.resume={middle}"]), run_dir=tmp_path / "resumed")
    said = streaming_lines(caplog)
    assert said[0].startswith("dataset: in memory"), said
    assert all(line.startswith("dataset: streaming from disk") for line in said[1:]) and len(said) == 3, said
    assert_same_weights(tmp_path / "memory", tmp_path / "stream", 6)
    assert_same_weights(tmp_path / "stream", tmp_path / "resumed", 6)


# ---------------------------------------------------------------- task=text2image: captions made from labels


def text_run(root: Path, *extra: str) -> list[str]:
    tiny = [arg for arg in TINY_T2I if not arg.startswith(("dataset=", "dataset."))]  # dataset=fake's
    return [*tiny, "dataset=converted", f"dataset.root={root}", "dataset.channels=1", "dataset.image_size=28",
            "dataset.num_classes=10", "dataset.hflip=false", "trainer.max_steps=6", "trainer.ckpt_every_n_steps=3",
            *extra]


def test_text2image_streams_a_converted_labelled_dataset_bitwise_and_resumes_bitwise(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Captions made from a converted MNIST's labels and measured attributes: the in-memory run and
    the streaming run (batches of row numbers picking the captions) train the same weights, and a
    streaming resume lands on them."""
    out = digits(tmp_path)
    with caplog.at_level(logging.INFO, logger="gan_cli"):
        train(compose_train(text_run(out, "dataset.in_memory=true")), run_dir=tmp_path / "memory")
        streamed = text_run(out, "dataset.in_memory=false", "dataset.num_workers=2")
        train(compose_train(streamed), run_dir=tmp_path / "stream")
        middle = tmp_path / "stream" / "checkpoints" / "step_0000003.pt"
        train(compose_train([*streamed, f"trainer.resume={middle}"]), run_dir=tmp_path / "resumed")
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
