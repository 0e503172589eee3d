"""Hostile and unlucky runs (issue 14): non-finite buffers, skipped updates, slow bf16, unwritable
outputs, two processes on one run dir, leftover temp files, resumes that change settings, and
Ctrl-C outside the training loop."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gan_cli.components.ema import GeneratorEMA
from gan_cli.components.losses import NonSaturatingLoss
from gan_cli.core.errors import GanCliError
from gan_cli.loop import precision, signals
from gan_cli.loop.checkpoint import load_checkpoint
from gan_cli.loop.runlock import locked_run_dir
from gan_cli.loop.signals import TrainingInterrupted
from gan_cli.loop.train import TrainingDiverged, train
from gan_cli.tasks.image_gan import ImageGan
from tests.conftest import REPO, TINY_FAKE, compose_train, run_cli

WITH_TESTS = {"PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # tests.* in subprocesses


class InfiniteBatchNormLoss(NonSaturatingLoss):
    """After the `at`-th D update, D's first BatchNorm has running_var = inf (a diverging DCGAN's
    buffer); its weights stay finite."""

    def __init__(self, at: int = 3):
        self.calls, self.at = 0, at

    def after_d_step(self, discriminator: torch.nn.Module) -> None:
        self.calls += 1
        if self.calls == self.at:
            norm = next(m for m in discriminator.modules() if isinstance(m, torch.nn.BatchNorm2d))
            norm.running_var.fill_(float("inf"))


def test_a_non_finite_buffer_is_never_saved(tmp_path: Path) -> None:
    cfg = compose_train([*TINY_FAKE, "trainer.max_steps=6", "trainer.ckpt_every_n_steps=2",
                         "loss._target_=tests.test_hostile.InfiniteBatchNormLoss"])
    with pytest.raises(GanCliError, match=r"discriminator\..*running_var is not finite at step 4: stopped without "
                                          r"saving; kept last.pt, step_0000002.pt"):
        train(cfg, run_dir=tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 2


class BrokenEMA(GeneratorEMA):
    """An average that turns inf from G step 3 on (G itself stays finite)."""

    def update(self, step: int) -> None:
        super().update(step)
        if step >= 2:
            next(self._average.parameters()).data.fill_(float("inf"))


def test_a_non_finite_ema_is_never_saved(tmp_path: Path) -> None:
    cfg = compose_train([*TINY_FAKE, "trainer.max_steps=4", "trainer.ckpt_every_n_steps=2", "ema.decay=0.5",
                         "ema._target_=tests.test_hostile.BrokenEMA"])
    with pytest.raises(GanCliError, match=r"averages\.generator\..* is not finite at step 4"):
        train(cfg, run_dir=tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 2


class InfiniteLoss(NonSaturatingLoss):
    """D's and G's losses are +inf in the listed steps (1-based), finite otherwise."""

    def __init__(self, bad: list[int]):
        self.calls, self.bad = 0, set(bad)

    def scale(self) -> float:
        return float("inf") if self.calls in self.bad else 1.0

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().d_loss(real_logits, fake_logits) * self.scale()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return super().g_loss(fake_logits) * self.scale()


def test_on_nan_skip_keeps_inf_out_of_the_statistics(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = compose_train([*TINY_FAKE, "trainer.on_nan=skip", "trainer.max_steps=8", "log.every_n_steps=4",
                         "loss._target_=tests.test_hostile.InfiniteLoss", "+loss.bad=[3]"])
    with caplog.at_level(logging.WARNING, logger="gan_cli"):
        metrics = train(cfg, run_dir=tmp_path)
    assert metrics["steps"] == 8 and metrics["skipped_steps"] == 2
    assert all(abs(metrics[k]) < 100 for k in ("loss/d", "loss/g"))
    assert "steps 1..4: skipped 2 of 8 updates with a non-finite loss (trainer.on_nan=skip)" in caplog.text


def test_on_nan_skip_stops_when_most_updates_are_skipped(tmp_path: Path) -> None:
    cfg = compose_train([*TINY_FAKE, "trainer.on_nan=skip", "trainer.max_steps=8", "log.every_n_steps=4",
                         "loss._target_=tests.test_hostile.InfiniteLoss", "+loss.bad=[2,3,4,5,6,7,8]"])
    expected = r"6 of 8 updates in steps 1\.\.4 had a non-finite loss .*on_nan=skip\): stopped, as more than half"
    with pytest.raises(TrainingDiverged, match=expected) as caught:
        train(cfg, run_dir=tmp_path)
    assert "on_nan=stop" not in str(caught.value)


@pytest.mark.parametrize("flags, warned", [({"fpu", "avx2"}, True), ({"avx2", "avx512_bf16"}, False),
                                           ({"amx_bf16"}, False)])
def test_bf16_on_a_cpu_without_native_bf16_is_named_at_the_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, flags: set[str],
        warned: bool) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    cfg = compose_train([*TINY_FAKE, "trainer.precision=bf16", "trainer.max_steps=1"])
    with caplog.at_level(logging.WARNING, logger="gan_cli"):
        train(cfg, run_dir=tmp_path)
    assert ("without native BF16 instructions" in caplog.text) == warned


def test_bf16_detector_reads_this_cpu() -> None:
    flags = precision.cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo")
    assert precision.cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/proc/self").exists(), reason="needs root and /proc")
def test_unwritable_outputs_are_one_line_before_any_work(tmp_path: Path) -> None:
    # The checkpoint does not exist: the destination must be checked (and refused) first.
    result = run_cli("gan-sample", [f"checkpoint={tmp_path}/none.pt", "out=/proc/x.png"], cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: out='/proc/x.png' cannot be written: creating a file in /proc fails (No such file or directory)"]
    result = run_cli("gan-train", [*TINY_FAKE, "hydra.run.dir=/proc/foo"], cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "/proc does not take new folders" in result.stderr


def test_a_second_process_on_a_run_dir_in_use_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with locked_run_dir(run_dir):  # this process plays the first gan-train
        result = run_cli("gan-train", [*TINY_FAKE, f"hydra.run.dir={run_dir}", "trainer.resume=auto"], cwd=tmp_path,
                         check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: run dir {run_dir} is in use by PID {os.getpid()} (another gan-train): wait for it to end, "
        "or choose another hydra.run.dir")
    assert not (run_dir / "checkpoints").exists()
    run_cli("gan-train", [*TINY_FAKE, f"hydra.run.dir={run_dir}"], cwd=tmp_path)  # free again


def test_temp_files_of_killed_saves_are_removed_at_start(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    stale = [folder / ".step_0000002.pt.k3j4.tmp", folder / ".last.pt.tmp"]
    for path in stale:
        path.write_bytes(b"x" * 1000)
    run_cli("gan-train", [*TINY_FAKE, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert not any(path.exists() for path in stale)
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step_0000004.pt"]


def scalar_steps(run_dir: Path, tag: str) -> list[int]:
    events = EventAccumulator(str(run_dir))  # events sit in the run dir itself
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def test_tensorboard_keeps_the_point_at_the_resume_step(tmp_path: Path) -> None:
    train(compose_train(TINY_FAKE), run_dir=tmp_path)
    train(compose_train([*TINY_FAKE, "trainer.max_steps=6", "trainer.resume=auto"]), run_dir=tmp_path)
    assert scalar_steps(tmp_path, "loss/d") == [2, 4, 6]
    train(compose_train([*TINY_FAKE, "trainer.max_steps=6", "trainer.resume=auto"]), run_dir=tmp_path)  # finished
    assert scalar_steps(tmp_path, "loss/d") == [2, 4, 6]


def test_resume_with_another_lr_trains_with_the_new_lr(tmp_path: Path) -> None:
    train(compose_train(TINY_FAKE), run_dir=tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["optimizers"]["g"]["param_groups"][0]["lr"] == 2e-4
    train(compose_train([*TINY_FAKE, "trainer.max_steps=6", "trainer.resume=auto", "optim.lr=1e-4",
                         "optim.d.betas=[0.0,0.99]"]), run_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    groups = state["optimizers"]["g"]["param_groups"] + state["optimizers"]["d"]["param_groups"]
    assert [g["lr"] for g in groups] == [1e-4, 1e-4]
    assert tuple(state["optimizers"]["d"]["param_groups"][0]["betas"]) == (0.0, 0.99)
    assert "lr: 0.0001" in state["config"]


class InterruptingLoss(NonSaturatingLoss):
    """Ctrl-C while the run is being built (before the training loop)."""

    def __init__(self) -> None:
        # A terminal's Ctrl-C reaches Python's default handler; a shell's background job (`cmd &`)
        # would inherit SIGINT ignored and never see it, so the test does not depend on how it was started.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_during_start_up_is_one_line(tmp_path: Path) -> None:
    result = run_cli("gan-train", [*TINY_FAKE, f"hydra.run.dir={tmp_path}/run",
                                   "loss._target_=tests.test_hostile.InterruptingLoss"], cwd=tmp_path,
                     env=WITH_TESTS, check=False)
    assert result.returncode == 130 and "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "error: interrupted by SIGINT before training started (or after it ended): nothing new was saved"]


class InterruptedEvaluation:
    """Ctrl-C arrives during the final evaluation (the evaluation itself is not under test)."""

    primary = "metrics/fd_classifier"
    baseline: dict[str, float] = {}

    def __init__(self, cfg: Any):
        self.final = cfg.trainer.max_steps

    def evaluate(self, step: int) -> dict[str, float]:
        if step == self.final:
            os.kill(os.getpid(), signal.SIGINT)
        return {"metrics/fd_classifier": 1.5}


def test_ctrl_c_during_the_final_evaluation_keeps_metrics_json(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageGan, "evaluation", lambda self, cfg: InterruptedEvaluation(cfg))
    metrics = train(compose_train([*TINY_FAKE, "eval.enabled=true"]), run_dir=tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics/fd_classifier"] == metrics["metrics/fd_classifier"] == 1.5


def test_a_stop_requested_before_the_loop_stops_it_at_the_first_step(tmp_path: Path) -> None:
    """What the parent watchdog does when the sweep dies while a job is still starting."""
    signals.request_stop(signal.SIGTERM, "test: parent process 1 is gone")
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM at step 1"):
        train(compose_train(TINY_FAKE), run_dir=tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 1
