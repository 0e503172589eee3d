"""Sweeps as a user runs them: `gan-train -m` in a scratch directory, on the fake dataset, with
the basic, joblib and submitit_local launchers and the Optuna search preset."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.apps.sweep import JobFailure, available_cores, print_table, run_task, threads_per_job
from gan_cli.components.losses import NonSaturatingLoss
from gan_cli.loop.checkpoint import load_checkpoint
from tests.conftest import BIN, REPO, TINY_FAKE, run_cli

LRS = "optim.lr=1e-4,2e-4"


def only_sweep_dir(root: Path) -> Path:
    sweeps = list(root.glob("outputs/multirun/*/*"))
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def read_summary(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "summary.csv").open() as file:
        return list(csv.DictReader(file))


def study_trials(sweep: Path) -> list[Any]:
    """The trials of the preset's study, read from its sqlite file in the sweep dir."""
    with warnings.catch_warnings():  # SQLAlchemy 1.4's notice about 2.0 on optuna 2's models
        warnings.simplefilter("ignore", DeprecationWarning)
        import optuna

    return optuna.load_study(study_name="gan_cli", storage=f"sqlite:///{sweep / 'optuna.db'}").trials


def session_hparams(run_dir: Path) -> dict[str, Any]:
    """The HParams row of the events in run_dir (session start info), as {name: value}."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in hparams.items()}


def session_group_name(run_dir: Path) -> str:
    """The name the HParams table gives the run's row (its path when empty)."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    return plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.group_name


def custom_scalars_layout(run_dir: Path) -> dict[str, list[str]]:
    """The Custom Scalars charts written in run_dir: {chart title: its tag regexes}."""
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    (event,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    return {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}


def test_two_job_multirun_writes_summary_and_names_tensorboard_runs(tmp_path: Path) -> None:
    result = run_cli("gan-train", ["-m", *TINY_FAKE, "loss=bce", LRS], cwd=tmp_path)
    sweep = only_sweep_dir(tmp_path)
    rows = read_summary(sweep)
    assert [(row["job"], row["status"]) for row in rows] == [("0", "completed"), ("1", "completed")]
    assert [row["optim.lr"] for row in rows] == ["0.0001", "0.0002"]  # one column per overridden key
    assert [row["trainer.batch_size"] for row in rows] == ["16", "16"] and "overrides" not in rows[0]
    assert all(math.isfinite(float(row["loss/d"])) and row["steps"] == "4" for row in rows)
    # TensorBoard: one run per job, in <job>/<the overrides that vary> (the keys every job shares
    # are left out), with the job's group options by name and the keys it set in HParams.
    for job, lr in (("0", "0.0001"), ("1", "0.0002")):
        run_dir = sweep / job / f"optim.lr={lr}"
        assert list(run_dir.glob("events.out.tfevents.*")) and not list((sweep / job).glob("events.*"))
        hparams = session_hparams(run_dir)
        assert hparams["optim.lr"] == pytest.approx(float(lr)) and hparams["trainer.max_steps"] == 4
        assert hparams["eval.enabled"] == "false"  # a boolean as typed, not 0.0
        assert {k: hparams[k] for k in ("loss", "model", "dataset", "augment", "optim")} == {
            "loss": "bce", "model": "dcgan", "dataset": "fake", "augment": "none", "optim": "adam"}
        assert not [name for name in hparams if "_target_" in name or name.startswith("hydra")]
        assert "ema.decay" not in hparams  # unchanged internals stay out of the default columns
        # the HParams row's name: readable where the path (multirun/2026-11-28/...) is cut short
        assert session_group_name(run_dir) == f"{sweep.name} #{job} optim.lr={lr}"
        assert custom_scalars_layout(run_dir) == {
            "loss/d and loss/g": ["^loss/d", "^loss/g$"],
            "prob/real and prob/fake (mean D output)": ["^prob/real$", "^prob/fake$"]}
    assert "optim.lr" in result.stdout and "summary.csv" in result.stdout  # the terminal table


def test_sweep_table_fits_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = {"steps": 300, "images_seen": 38400, "train_seconds": 61.2, "img_per_sec": 627.4, "loss/d": 1.2345678,
               "loss/g": 0.98765, "prob/real": 0.61, "prob/fake": 0.38, "device": "cpu", "skipped_steps": 0,
               "metrics/fd_classifier": 12.3456789, "metrics/kd_classifier": 0.0123, "perf/eval_seconds": 2.1,
               "metrics/class_coverage_max_dev": 0.05, "best_fd_classifier": 11.1}
    rows = [{"job": str(i), "status": "completed", "error": "", "metrics": metrics,
             "overrides": [f"loss={loss}", f"optim.lr={lr}", "dataset.root=/work/shared/data", "trainer.max_steps=300"]}
            for i, (loss, lr) in enumerate([("bce", "1e-4"), ("bce", "2e-4"), ("hinge", "1e-4"), ("hinge", "2e-4")])]
    columns = ["job", "status", "loss", "optim.lr", "fd_classifier", "loss/d", "loss/g", "prob/real"]
    for width, shown in ((100, 8), (80, 7)):  # a narrower terminal drops the last metric, never breaks a word
        print_table(rows, "sweep", width=width)
        lines = capsys.readouterr().out.splitlines()
        assert max(len(line) for line in lines) <= width
        header = next(line for line in lines if "status" in line)
        assert header.split() == columns[:shown] and "12.35" in "\n".join(lines)
        assert "0.0002" in "\n".join(lines) and "summary.csv" in "\n".join(lines)


def test_failed_job_is_summarized_and_the_other_jobs_run(tmp_path: Path) -> None:
    result = run_cli("gan-train", ["-m", *TINY_FAKE, "task.d_steps=1,0,2"], cwd=tmp_path, check=False)
    assert result.returncode == 1, result.stderr[-2000:]  # after every job ran and the summary was written
    rows = read_summary(only_sweep_dir(tmp_path))
    assert [row["status"] for row in rows] == ["completed", "failed", "completed"]
    assert "task.d_steps=0" in rows[1]["error"] and rows[1]["loss/d"] == ""
    assert math.isfinite(float(rows[2]["loss/d"])) and rows[2]["images_seen"] == str(4 * 2 * 16)
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow  # > 30 s on the 2-core test machine under load
def test_optuna_search_stores_its_study_and_resumes(tmp_path: Path) -> None:
    tiny_fid = ["eval.enabled=true", "eval.num_samples=64", "eval.batch_size=32", "eval.kid_subsets=5",
                "eval.kid_subset_size=16", "eval.classifier_epochs=1", f"eval.cache_dir={tmp_path / 'cache'}"]
    search = ["-m", "hparams_search=optuna", *TINY_FAKE, *tiny_fid]
    run_cli("gan-train", [*search, "hydra.sweeper.n_trials=3"], cwd=tmp_path)
    sweep = only_sweep_dir(tmp_path)
    trials = study_trials(sweep)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert set(trials[0].params) == {"optim.lr", "optim.beta1", "task.d_steps", "loss"}
    rows = read_summary(sweep)
    assert sorted(float(row["metrics/fd_classifier"]) for row in rows) == pytest.approx(sorted(t.value for t in trials))

    # The same command pointed at the sweep dir loads the study and adds trials in new folders.
    run_cli("gan-train", [*search, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    resumed = study_trials(sweep)
    assert [t.number for t in resumed] == [0, 1, 2, 3] and resumed[3].state.name == "COMPLETE"
    assert [t.value for t in resumed[:3]] == [t.value for t in trials]
    assert len(list(sweep.glob("*/metrics.json"))) == 4 and len(read_summary(sweep)) == 4


def test_optuna_failed_trials_are_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    # Adam rejects a negative weight decay: every trial of this search crashes.
    result = run_cli("gan-train", ["-m", "hparams_search=optuna", *TINY_FAKE, "hydra.sweeper.n_trials=2",
                                   "optim.weight_decay=-1"], cwd=tmp_path, check=False)
    sweep = only_sweep_dir(tmp_path)
    trials = study_trials(sweep)
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]  # the second trial ran after the first failed
    rows = read_summary(sweep)
    assert [row["status"] for row in rows] == ["failed", "failed"] and "weight_decay" in rows[0]["error"]
    assert result.returncode != 0  # with no completed trial the sweeper has no best one and raises


def test_joblib_runs_jobs_in_parallel_with_a_share_of_the_cores(tmp_path: Path) -> None:
    run_cli("gan-train", ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY_FAKE, LRS], cwd=tmp_path)
    sweep = only_sweep_dir(tmp_path)
    assert [row["status"] for row in read_summary(sweep)] == ["completed", "completed"]
    threads = max(available_cores() // 2, 1)
    for job in ("0", "1"):
        assert f"torch CPU threads: {threads}" in (sweep / job / "train.log").read_text()
    assert (sweep / "1" / "optim.lr=0.0002").is_dir()  # run names survive the worker processes


def test_submitit_local_runs_the_sweep_as_separate_jobs(tmp_path: Path) -> None:
    run_cli("gan-train", ["-m", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1",
                          "hydra.launcher.timeout_min=5", *TINY_FAKE, LRS], cwd=tmp_path)
    sweep = only_sweep_dir(tmp_path)
    assert [row["status"] for row in read_summary(sweep)] == ["completed", "completed"]
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2
    assert "torch CPU threads: 1" in (sweep / "0" / "train.log").read_text()
    assert (sweep / "1" / "optim.lr=0.0002").is_dir()


def test_slurm_preset_sets_overridable_resources() -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["launcher=slurm", "hydra.launcher.partition=gpu",
                                          "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=30"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node, launcher.timeout_min) == (
        "gpu", 4, 1, 30)
    assert threads_per_job(launcher) == launcher.cpus_per_task


@pytest.fixture
def in_multirun() -> Iterator[None]:
    """HydraConfig as a multirun job sees it (basic launcher), reset afterwards."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hydra.mode=MULTIRUN"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    yield
    HydraConfig.instance().cfg = None


def test_nan_objective_is_a_failed_job_not_a_float(in_multirun: None) -> None:
    cfg = OmegaConf.create({"optimized_metric": "prob/real", "trainer": {"num_threads": None}})
    result = run_task(lambda cfg: {"prob/real": float("nan")}, cfg)
    assert isinstance(result, JobFailure) and "prob/real is nan" in result.error
    with pytest.raises(TypeError):
        float(result)  # what makes the Optuna sweeper record a FAIL trial
    assert run_task(lambda cfg: {"prob/real": 0.25}, cfg) == 0.25


def test_threads_per_job_shares_the_cores() -> None:
    cores = available_cores()
    assert threads_per_job(OmegaConf.create({"n_jobs": 2})) == max(cores // 2, 1)
    assert threads_per_job(OmegaConf.create({"n_jobs": -1})) == 1  # joblib: one worker per core
    assert threads_per_job(OmegaConf.create({"cpus_per_task": 3, "n_jobs": None})) == 3
    assert threads_per_job(OmegaConf.create({"_target_": "basic"})) is None


def test_an_interrupted_job_is_listed_as_unfinished(tmp_path: Path) -> None:
    """Ctrl-C in a job: it checkpoints, and summary.csv lists it as unfinished (resumable), not failed."""
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # tests.* in the subprocess
    result = run_cli("gan-train", ["-m", *TINY_FAKE, "trainer.max_steps=8", "loss._target_=tests.test_sweep.CtrlC"],
                     cwd=tmp_path, env=env, check=False)
    assert result.returncode == 130 and "stopped by SIGINT at step 3" in result.stderr
    sweep = only_sweep_dir(tmp_path)
    assert [(row["job"], row["status"]) for row in read_summary(sweep)] == [("0", "unfinished")]
    assert load_checkpoint(sweep / "0" / "checkpoints" / "last.pt")["step"] == 3


class CtrlC(NonSaturatingLoss):
    """Sends SIGINT to this process at the third discriminator loss."""

    def __init__(self) -> None:
        self.calls = 0

    def d_loss(self, real_logits: Any, fake_logits: Any) -> Any:
        self.calls += 1
        if self.calls == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return super().d_loss(real_logits, fake_logits)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_joblib_workers_stop_with_a_checkpoint_when_the_sweep_is_killed(tmp_path: Path) -> None:
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY_FAKE, "trainer.epochs=1000",
            "trainer.max_steps=100000", "trainer.ckpt_every_n_steps=10", "log.every_n_steps=10", LRS]
    sweep_process = subprocess.Popen([str(BIN / "gan-train"), *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while len(list(tmp_path.glob("outputs/multirun/*/*/*/checkpoints/step_*.pt"))) < 2:
            assert time.monotonic() < deadline and sweep_process.poll() is None, "the jobs did not start"
            time.sleep(0.2)
        workers = children(sweep_process.pid)
        sweep_process.kill()  # SIGKILL: no handler, no cleanup in the parent
        sweep_process.wait()
        sweep = only_sweep_dir(tmp_path)
        deadline = time.monotonic() + 60
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [Path(f"/proc/{pid}/cmdline").read_bytes()[:300] for pid in workers if alive(pid)]
        assert not left, f"orphaned workers are still running: {left}"
        for job in ("0", "1"):
            log_text = (sweep / job / "train.log").read_text()
            assert "parent process" in log_text and "the sweep's process is gone, so this worker exits" in log_text
            step = int(log_text.split("stopped by SIGTERM at step ")[1].split(";")[0])
            assert load_checkpoint(sweep / job / "checkpoints" / "last.pt")["step"] == step < 100000
        assert [row["status"] for row in read_summary(sweep)] == ["unfinished", "unfinished"]
    finally:
        for pid in [sweep_process.pid, *workers]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
