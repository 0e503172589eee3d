"""Never lose a run: kills, signals, corrupt checkpoints, NaN, full disks and bad files."""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from gan_cli.components.losses import NonSaturatingLoss
from gan_cli.core.errors import GanCliError
from gan_cli.loop import checkpoint as checkpoint_module
from gan_cli.loop.checkpoint import CheckpointDir, load_checkpoint
from gan_cli.loop.train import TrainingDiverged, train
from tests.conftest import BIN, TINY, TINY_FAKE, compose_train, make_image_folder, run_cli

# Long enough (200 steps) that a kill lands mid-run, tiny enough to take a few seconds.
LONG = [*TINY_FAKE, "trainer.epochs=100", "trainer.max_steps=200", "trainer.ckpt_every_n_steps=10",
        "log.every_n_steps=10", "log.sample_every_n_steps=100", "trainer.seed=5"]


def start_training(run_dir: Path, extra: list[str] = ()) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([str(BIN / "gan-train"), *LONG, f"hydra.run.dir={run_dir}", *extra], cwd=run_dir.parent,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen[str], at_least: int = 20) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if any(int(p.stem.split("_")[1]) >= at_least for p in (run_dir / "checkpoints").glob("step_*.pt")):
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint >= {at_least} appeared; exit {process.poll()}: {process.stderr.read()}")


def weights(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path)
    return {f"{net}.{k}": v for net in ("generator", "discriminator") for k, v in state["networks"][net].items()}


@pytest.mark.slow  # > 30 s on the 2-core test machine under load
def test_sigkill_then_resume_auto_matches_uninterrupted_run_bitwise(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    run_cli("gan-train", [*LONG, f"hydra.run.dir={reference}"], cwd=tmp_path)

    killed = tmp_path / "killed"
    process = start_training(killed)
    wait_for_checkpoint(killed, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # the highest step: a kill between a step file's rename and last.pt's relink leaves last.pt one behind
    interrupted_at = CheckpointDir(killed / "checkpoints", 3).newest_loadable()[1]["step"]
    assert 20 <= interrupted_at < 200, "the kill must land mid-run"

    run_cli("gan-train", [*LONG, f"hydra.run.dir={killed}", "trainer.resume=auto"], cwd=tmp_path)
    expected, resumed = weights(reference / "checkpoints" / "last.pt"), weights(killed / "checkpoints" / "last.pt")
    assert load_checkpoint(killed / "checkpoints" / "last.pt")["step"] == 200
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected), "resume is not bitwise exact"


@pytest.mark.slow  # > 30 s on the 2-core test machine under load
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_checkpoints_and_exits(tmp_path: Path, signum: int, code: int) -> None:
    """Ctrl-C is a user stopping the run, not an error (no `error:` line; exit 130 as a shell
    expects, which `make train` takes as success); SIGTERM exits 143. Either way the log
    (train.log too) says where the checkpoint is and the command that continues the run, the
    grid and metrics.json are written at the stop step, and that command continues from it."""
    run_dir = tmp_path / "run"
    process = start_training(run_dir)
    wait_for_checkpoint(run_dir, process, at_least=10)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    name = signal.Signals(signum).name
    assert len(errors) == (0 if signum == signal.SIGINT else 1) and "Traceback" not in stderr
    said = [line for line in (run_dir / "train.log").read_text().splitlines() if f"stopped by {name} at step" in line]
    assert len(said) == 1 and "continue with: gan-train " in said[0]
    assert f"trainer.resume=auto hydra.run.dir={run_dir}" in said[0]
    stopped_at = int(said[0].split("at step ")[1].split(";")[0])
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == stopped_at
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == stopped_at and metrics["stopped_by"] == name
    assert (run_dir / "samples" / f"step_{stopped_at:07d}.png").is_file()
    if signum != signal.SIGINT:
        return  # the same command for both: run it once
    command = shlex.split(said[0].split("continue with: ")[1])
    run_cli(command[0], command[1:], cwd=run_dir.parent)
    log = (run_dir / "train.log").read_text()
    assert any("resumed from" in line and line.endswith(f"at step {stopped_at}") for line in log.splitlines())
    assert f"training steps {stopped_at + 1}..200" in log  # continued from the stop step, in the same folder
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 200


def test_keeps_the_last_k_checkpoints_and_last_pt_is_the_newest(tmp_path: Path) -> None:
    train(compose_train([*TINY_FAKE, "trainer.max_steps=10", "trainer.ckpt_every_n_steps=2",
                         "trainer.keep_checkpoints=2"]), run_dir=tmp_path)
    folder = tmp_path / "checkpoints"
    assert [p.name for p in CheckpointDir(folder, 2).step_files()] == ["step_0000008.pt", "step_0000010.pt"]
    assert os.path.samefile(folder / "last.pt", folder / "step_0000010.pt")
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*"))


def test_resume_auto_skips_a_damaged_newest_checkpoint(tmp_path: Path) -> None:
    train(compose_train([*TINY_FAKE, "trainer.ckpt_every_n_steps=2"]), run_dir=tmp_path)
    folder = tmp_path / "checkpoints"
    (folder / "last.pt").unlink()
    (folder / "step_0000004.pt").write_bytes(b"garbage")
    metrics = train(compose_train([*TINY_FAKE, "trainer.max_steps=6", "trainer.resume=auto"]), run_dir=tmp_path)
    assert metrics["steps"] == 6 and load_checkpoint(folder / "last.pt")["step"] == 6


def test_resume_auto_in_a_fresh_dir_starts_from_zero(tmp_path: Path) -> None:
    assert train(compose_train([*TINY_FAKE, "trainer.resume=auto"]), run_dir=tmp_path)["steps"] == 4


class ExplodingLoss(NonSaturatingLoss):
    """Finite for the first `after` discriminator losses, NaN afterwards."""

    def __init__(self, after: int = 5):
        self.calls, self.after = 0, after

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().d_loss(real_logits, fake_logits) * (float("nan") if self.calls > self.after else 1.0)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = compose_train([*TINY_FAKE, "trainer.max_steps=12", "trainer.ckpt_every_n_steps=2",
                         "loss._target_=tests.test_resilience.ExplodingLoss"])
    with pytest.raises(TrainingDiverged, match=r"loss/d is nan in steps 5\.\.6"):
        train(cfg, run_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 4
    assert all(v.isfinite().all() for v in state["networks"]["generator"].values() if v.is_floating_point())


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train(compose_train(TINY_FAKE), run_dir=tmp_path)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    real_write = os.write

    def disk_full(fd: int, data: bytes) -> int:  # the first write of a file under tmp_path lands in part
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            return real_write(fd, data)
        if os.lseek(fd, 0, os.SEEK_CUR) == 0:
            return real_write(fd, bytes(data[:100]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.os, "write", disk_full)
    with pytest.raises(GanCliError, match=r"could not write checkpoint .*step_0000006.pt: disk full \(No space left "
                                          r"on device\); the partial file was removed, kept last.pt, step_0000004.pt"):
        train(compose_train([*TINY_FAKE, "trainer.max_steps=6", "trainer.resume=auto"]), run_dir=tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_bad_checkpoints_are_refused_with_the_file_named(tmp_path: Path) -> None:
    train(compose_train(TINY_FAKE), run_dir=tmp_path / "run")
    good = tmp_path / "run" / "checkpoints" / "last.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(GanCliError, match="truncated.pt is truncated or corrupt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(GanCliError, match="foreign.pt is not a gan-cli checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(GanCliError, match="nothing.pt does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"format": "gan-cli/1", "payload": RunsCode(marker)}, evil)
    with pytest.raises(GanCliError, match="evil.pt was refused"):
        load_checkpoint(evil)
    assert not marker.exists()
    result = run_cli("gan-sample", [f"checkpoint={evil}"], cwd=tmp_path, check=False)
    assert result.returncode == 2 and "refused" in result.stderr and not marker.exists()


def test_resume_with_another_model_names_the_keys(tmp_path: Path) -> None:
    train(compose_train(TINY_FAKE), run_dir=tmp_path / "a")
    with pytest.raises(GanCliError, match=r"model\.generator\.ngf: 8 -> 16"):
        train(compose_train([*TINY_FAKE, "model.generator.ngf=16",
                             f"trainer.resume={tmp_path}/a/checkpoints/last.pt"]), run_dir=tmp_path / "b")


def test_resume_from_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(GanCliError, match="does not exist"):
        train(compose_train([*TINY_FAKE, f"trainer.resume={tmp_path}/none.pt"]), run_dir=tmp_path)


@pytest.mark.slow  # > 30 s on the 2-core test machine under load
def test_mis_headed_mnist_file_is_a_clear_error(tmp_path: Path, mnist_root: Path) -> None:
    images = mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(b"\x00\x00\x0c\x07" + images.read_bytes()[4:])  # wrong type code and rank
    result = run_cli("gan-train", [*TINY, f"dataset.root={mnist_root}", "dataset.download=false"], cwd=tmp_path,
                     check=False)
    assert result.returncode == 2 and "could not load MNIST" in result.stderr and "Traceback" not in result.stderr


def test_image_folder_with_mixed_modes_loads_as_configured(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", classes=1, per_class=1)
    for mode in ("L", "RGBA", "P", "1", "I;16"):
        Image.new(mode, (12, 9)).save(root / "class_0" / f"{mode.replace(';', '')}.png")
    metrics = train(compose_train([*TINY, "dataset=folder", f"dataset.root={root}", "dataset.image_size=28",
                                   "trainer.batch_size=2", "trainer.max_steps=2"]), run_dir=tmp_path / "run")
    assert metrics["steps"] == 2


def test_unwritable_output_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_cli("gan-train", [*TINY_FAKE, f"hydra.run.dir={blocker}/run"], cwd=tmp_path, check=False)
    assert result.returncode != 0 and "a_file" in result.stderr and "Traceback" not in result.stderr


class PreemptingLoss(NonSaturatingLoss):
    """Sends the preemption signal to this process at the `at`-th discriminator loss."""

    def __init__(self, at: int = 3):
        self.calls, self.at = 0, at

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGUSR2)
        return super().d_loss(real_logits, fake_logits)


def test_preemption_checkpoints_then_hands_over_to_the_launcher(tmp_path: Path) -> None:
    """What submitit does on SLURM: its SIGUSR2 handler requeues the job and exits. gan-cli must
    write the checkpoint first, then call that handler; the requeued run resumes from it."""
    requeued: list[int] = []

    def launcher_handler(signum: int, frame: object) -> None:
        requeued.append(signum)
        raise SystemExit(-1)  # submitit's _exit()

    previous = signal.signal(signal.SIGUSR2, launcher_handler)
    try:
        cfg = compose_train([*TINY_FAKE, "trainer.max_steps=8", "trainer.resume=auto",
                             "loss._target_=tests.test_resilience.PreemptingLoss"])
        with pytest.raises(SystemExit):
            train(cfg, run_dir=tmp_path)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert requeued == [signal.SIGUSR2]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 3
    resumed = train(compose_train([*TINY_FAKE, "trainer.max_steps=8", "trainer.resume=auto"]), run_dir=tmp_path)
    assert resumed["steps"] == 8 and load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 8
