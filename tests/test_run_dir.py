"""A run's files are never deleted, rewritten or mixed by another run, and what is saved is
checked when it is read back (issue #20: the run dir and integrity items)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gan_cli.core.errors import GanCliError
from gan_cli.loop.checkpoint import CheckpointDir, load_checkpoint
from tests.conftest import TINY_FAKE, run_cli, tmpfs

RUN = [*TINY_FAKE, "trainer.max_steps=4", "trainer.ckpt_every_n_steps=2"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_refused_run_leaves_a_busy_run_dir_exactly_as_it_was(tmp_path: Path) -> None:
    """The first run is still loading its data: only Hydra's files and its lock are there. The
    second run is refused before Hydra writes .hydra/ or the log, and removes nothing."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("first run's config\n")
    (run / ".hydra" / "overrides.yaml").write_text("- first\n")
    (run / "train.log").write_text("first run's log\n")
    lock = os.open(run / ".gan-train.lock", os.O_RDWR | os.O_CREAT)
    os.write(lock, b"4242\n")
    fcntl.flock(lock, fcntl.LOCK_EX)  # the first run holds it
    try:
        before = snapshot(run)
        line = one_error_line(run_cli("gan-train", [*RUN, f"hydra.run.dir={run}"], cwd=tmp_path, check=False))
        assert "in use by PID 4242" in line
        assert snapshot(run) == before
    finally:
        os.close(lock)


def test_a_fresh_run_into_another_runs_checkpoints_is_refused_unless_overwrite(tmp_path: Path) -> None:
    run_cli("gan-train", [*RUN, "hydra.run.dir=run"], cwd=tmp_path)
    before = snapshot(tmp_path / "run")
    line = one_error_line(run_cli("gan-train", [*RUN, "hydra.run.dir=run"], cwd=tmp_path, check=False))
    assert "holds another run's checkpoints" in line and "trainer.resume=auto" in line
    assert snapshot(tmp_path / "run") == before  # not even .hydra/ rewritten
    # asked for: the old run's files move aside, and resume=auto later finds only the new run's
    run_cli("gan-train", [*RUN, "trainer.max_steps=2", "trainer.overwrite=true", "hydra.run.dir=run"], cwd=tmp_path)
    aside = list((tmp_path / "run").glob("replaced-*"))
    old = "checkpoints/step_0000004.pt"
    assert len(aside) == 1 and snapshot(aside[0])[old] == before[old]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.pt", "step_0000002.pt"]
    resumed = run_cli("gan-train", [*RUN, "trainer.max_steps=3", "trainer.resume=auto", "hydra.run.dir=run"],
                      cwd=tmp_path)
    assert "at step 2" in (tmp_path / "run" / "train.log").read_text() and resumed.returncode == 0


def overwrite_tensor_bytes(path: Path) -> None:
    """Overwrite bytes in the middle of the largest tensor record: the zip stays readable."""
    with zipfile.ZipFile(path) as archive:
        record = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        with open(path, "rb") as handle:
            handle.seek(record.header_offset + 26)
            name_length, extra_length = (int.from_bytes(handle.read(2), "little") for _ in range(2))
    start = record.header_offset + 30 + name_length + extra_length + record.file_size // 2
    with open(path, "r+b") as handle:
        handle.seek(start)
        handle.write(b"\x7f" * 64)


def test_overwritten_tensor_bytes_fail_the_checksum_and_auto_falls_back(tmp_path: Path) -> None:
    run_cli("gan-train", [*RUN, "hydra.run.dir=run"], cwd=tmp_path)
    newest = tmp_path / "run" / "checkpoints" / "step_0000004.pt"
    overwrite_tensor_bytes(newest)
    with pytest.raises(GanCliError, match="do not match the checksum"):
        load_checkpoint(newest)
    line = one_error_line(run_cli("gan-sample", [f"checkpoint={newest}", "out=s.png"], cwd=tmp_path, check=False))
    assert "checksum" in line and not (tmp_path / "s.png").exists()
    line = one_error_line(run_cli("gan-train", [*RUN, "trainer.max_steps=6", f"trainer.resume={newest}",
                                                "hydra.run.dir=other"], cwd=tmp_path, check=False))
    assert "checksum" in line
    run_cli("gan-train", [*RUN, "trainer.max_steps=6", "trainer.resume=auto", "hydra.run.dir=run"], cwd=tmp_path)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "skipping checkpoint" in log and "resumed from" in log and "at step 2" in log


def test_a_folder_named_like_a_checkpoint_is_refused_before_training(tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoints" / "step_0000001.pt").mkdir(parents=True)
    line = one_error_line(run_cli("gan-train", [*RUN, "trainer.resume=auto", "hydra.run.dir=run"], cwd=tmp_path,
                                  check=False))
    assert "step_0000001.pt is not a checkpoint file" in line
    assert not (tmp_path / "run" / "samples").exists()  # nothing trained
    assert CheckpointDir(tmp_path / "run" / "checkpoints", 3).step_files() == []  # nor loaded, nor rotated


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs just over the run's start-up headroom (1 MiB): the run starts, then its grids,
    TensorBoard events and checkpoints fill it."""
    with tmpfs(tmp_path / "disk", "1200k") as mount:
        yield mount


@pytest.mark.parametrize("ngf", [8, 24])  # the full disk meets a checkpoint (8) or a sample grid (24) first
def test_a_disk_filling_during_a_run_is_one_line_and_leaves_no_partial_file(small_disk: Path, ngf: int) -> None:
    args = [*TINY_FAKE, "trainer.max_steps=400", "trainer.ckpt_every_n_steps=50", "log.sample_every_n_steps=5",
            "log.num_samples=64", f"model.generator.ngf={ngf}", f"hydra.run.dir={small_disk / 'run'}"]
    result = run_cli("gan-train", args, cwd=small_disk.parent, check=False)
    line = one_error_line(result)
    assert "disk full" in line, line
    files = [p for p in (small_disk / "run").rglob("*") if p.is_file()]
    assert not [p for p in files if ".tmp" in p.name]
    for grid in (small_disk / "run" / "samples").glob("*.png"):
        assert grid.read_bytes().endswith(b"IEND\xaeB`\x82")  # complete PNGs only
    for checkpoint in (small_disk / "run" / "checkpoints").glob("step_*.pt"):
        assert torch.load(checkpoint, weights_only=True)["step"] > 0


def fill(disk: Path, leave: int) -> None:
    """Fill the tmpfs until `leave` bytes are free."""
    import shutil

    (disk / "filler").write_bytes(b"\0" * max(shutil.disk_usage(disk).free - leave, 0))


def test_tensorboard_events_on_a_full_disk_are_one_error_and_no_thread_traceback(
        small_disk: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from gan_cli.reporting.logging import Reporter

    reporter = Reporter(small_disk / "run", total_steps=10_000, start_step=0)
    fill(small_disk, 16 << 10)
    values = {f"loss/term_{index}": 1.0 for index in range(50)}  # ~2.5 KB of events a call
    with pytest.raises(GanCliError, match="could not write TensorBoard events in .*: disk full"):
        for step in range(1, 1000):
            reporter.scalars(step, 0, values, show=False)
    reporter.close(failing=True)
    assert "Traceback" not in capfd.readouterr().err  # the writer thread's own failure is not printed


def test_metrics_json_on_a_full_disk_is_one_error_and_no_partial_file(small_disk: Path) -> None:
    from gan_cli.reporting.outputs import replaced

    fill(small_disk, 4 << 10)
    target = small_disk / "metrics.json"
    with pytest.raises(GanCliError, match="could not write the final metrics .*: disk full"):
        with replaced(target, "the final metrics") as path:
            path.write_text("x" * (64 << 10))
    assert not target.exists() and [p.name for p in small_disk.iterdir()] == ["filler"]
