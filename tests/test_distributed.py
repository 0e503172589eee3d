"""Data-parallel training: 2 processes with torchrun and the gloo backend on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_cli.data.datasets import DeviceSampler, load_fake
from gan_cli.loop.checkpoint import load_checkpoint
from tests.conftest import BIN, TINY_FAKE, run_cli


@pytest.mark.slow  # > 30 s on the 2-core test machine under load
def test_torchrun_two_ranks_on_gloo(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node=2", "--master_port=29517", "-m", "gan_cli",
                             *TINY_FAKE, "trainer.max_steps=6", f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0 of 2 (gloo)" in (run_dir / "train.log").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["images_seen"] == 6 * 16 * 2  # both ranks' batches
    assert np.isfinite(metrics["loss/d"]) and np.isfinite(metrics["loss/g"])
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # only rank 0 writes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # rank 1 made no run dir of its own
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 6
    run_cli("gan-sample", [f"checkpoint={run_dir}/checkpoints/last.pt", "num_samples=4", "out=s.npz"], cwd=tmp_path)
    assert np.load(tmp_path / "s.npz")["arr_0"].shape == (4, 28, 28, 1)


def test_ranks_get_disjoint_equal_shards() -> None:
    data = load_fake(num_samples=65, channels=1, image_size=8, num_classes=1)
    shards = [DeviceSampler(data, torch.device("cpu"), 8, seed=0, hflip=False, rank=r, world_size=2) for r in (0, 1)]
    assert [s.images.shape[0] for s in shards] == [32, 32]
    rows = [{tuple(x.flatten().tolist()) for x in s.images} for s in shards]
    assert not rows[0] & rows[1]


def test_torchrun_with_eval_on_at_the_end_and_mid_run(tmp_path: Path) -> None:
    """The default config evaluates: only rank 0 does, and its metrics must not sync across ranks
    (torchmetrics would gather from ranks that are in the loop's all_reduce: crash or deadlock)."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node=2", "--master_port=29518", "-m", "gan_cli",
                             *TINY_FAKE, "trainer.max_steps=6", "eval.enabled=true", "eval.every_n_steps=3",
                             "eval.num_samples=32", "eval.kid_subsets=2", "eval.classifier_epochs=1",
                             f"eval.cache_dir={tmp_path}/cache", f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    log_text = (run_dir / "train.log").read_text()
    assert "eval at step 3:" in log_text and "eval at step 6:" in log_text
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 6 and np.isfinite(metrics["metrics/fd_classifier"])
    assert np.isfinite(metrics["metrics/kd_classifier"])
