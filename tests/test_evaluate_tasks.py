"""gan-eval on image -> image checkpoints (pix2pix, srgan, cyclegan): scored by the task's own
evaluation against doing nothing, with the numbers training's evaluation gives for the same
weights; and gan-eval's command-line key check."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.core.overrides import config_paths, schema_paths
from gan_cli.core.schema import EvaluateSchema
from gan_cli.loop.train import train
from tests.conftest import compose_train
from tests.test_cyclegan import TINY_CYCLE
from tests.test_evaluate import gan_eval
from tests.test_pix2pix import TINY_P2P
from tests.test_srgan import TINY_SR

# The same evaluation settings for training's final evaluation and for gan-eval (gan-eval's keys
# are eval.*'s names), and one cache: the same feature classifier and reference for both.
SETTINGS = {"num_samples": 16, "batch_size": 16, "classifier_epochs": 1, "kid_subsets": 2, "kid_subset_size": 8}


def trained(overrides: list[str], tmp_path: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """A tiny run with its evaluation on at the end: (run dir, train()'s metrics)."""
    evaluation = [f"eval.{key}={value}" for key, value in SETTINGS.items()] + [f"eval.cache_dir={tmp_path / 'cache'}"]
    run = tmp_path / name
    return run, train(compose_train([*overrides, "eval.enabled=true", *evaluation]), run_dir=run)


def eval_args(tmp_path: Path) -> list[str]:
    return [*(f"{key}={value}" for key, value in SETTINGS.items()), f"cache_dir={tmp_path / 'cache'}", "device=cpu",
            "num_threads=1"]


def assert_as_in_training(judged: dict[str, Any], metrics: dict[str, Any], names: list[str]) -> None:
    """gan-eval's flat names hold what training's evaluation logged for the same weights."""
    for name in names:
        assert judged[name] == pytest.approx(metrics[f"metrics/{name}"], rel=1e-4, abs=1e-6), name


@pytest.mark.slow
def test_pix2pix_checkpoint_and_run_scored_by_the_task_against_the_input(tmp_path: Path) -> None:
    # No dropout at test time: G's outputs are a function of its weights, comparable with training's
    run, metrics = trained([*TINY_P2P, "model.generator.dropout_at_test=false", "trainer.ckpt_every_n_steps=2",
                            "trainer.keep_checkpoints=5"], tmp_path, "p2p")
    out = tmp_path / "p2p.json"
    result = gan_eval([f"checkpoint={run / 'checkpoints' / 'last.pt'}", *eval_args(tmp_path), f"out={out}"], tmp_path)
    judged = json.loads(out.read_text())
    assert judged["task"] == "Pix2Pix" and judged["step"] == 4
    assert_as_in_training(judged, metrics, ["fd_classifier", "kd_classifier", "l1", "psnr", "ssim", "label_kept"])
    for name in ("fd_classifier", "l1", "psnr", "ssim", "label_kept"):  # doing nothing: the input as it is
        assert judged[f"baseline/{name}_input"] == pytest.approx(metrics[f"baseline/{name}_input"], rel=1e-4)
    assert judged["baseline/ssim_input"] < 1  # the masked input is not its target
    assert not {"precision", "memorized", "cas", "inception_score"} & set(judged)  # z -> image only
    assert "judged by its own evaluation" in result.stdout and "memorization, cas, augment_gain" in result.stdout
    assert "psnr" in result.stdout and "baseline/l1_input" in result.stdout  # the rich table

    # run=: every kept checkpoint, eval/* curves of the task's own metrics in the run's TensorBoard
    gan_eval([f"run={run}", *eval_args(tmp_path), "metrics=[fd,kd]", f"out={tmp_path / 'curves.json'}"], tmp_path)
    rows = json.loads((tmp_path / "curves.json").read_text())
    assert [row["step"] for row in rows] == [2, 4] and rows[1]["psnr"] == pytest.approx(judged["psnr"], rel=1e-5)
    assert rows[0]["psnr"] != rows[1]["psnr"]  # each checkpoint's own weights
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = [EventAccumulator(str(path)).Reload() for path in run.glob("events.out.tfevents.*.gan-eval")]
    assert len(events) == 1 and [e.step for e in events[0].Scalars("eval/psnr")] == [2, 4]


def test_the_same_seed_gives_the_same_numbers_with_dropout_at_test_time(tmp_path: Path) -> None:
    """pix2pix's G keeps dropout on in eval mode: its evaluation draws noise, seeded by gan-eval's
    seed before each checkpoint, so scoring one twice gives the same numbers."""
    import torch

    from gan_cli.evaluate.own_metrics import OwnEvaluations
    from gan_cli.evaluate.sources import open_checkpoint

    run = tmp_path / "run"
    train(compose_train(TINY_P2P), run_dir=run)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=eval_args(tmp_path))
    checkpoint = open_checkpoint(run / "checkpoints" / "last.pt")
    own = OwnEvaluations(cfg, torch.device("cpu"))
    first = own.score(checkpoint)
    torch.manual_seed(123)  # whatever the global RNG did in between
    assert own.score(checkpoint) == first
    assert first["baseline/l1_input"] > 0 and 0 < first["l1"] < 1


@pytest.mark.slow
def test_srgan_checkpoint_scored_against_bicubic(tmp_path: Path) -> None:
    run, metrics = trained(TINY_SR, tmp_path, "sr")
    out = tmp_path / "sr.json"
    gan_eval([f"checkpoint={run / 'checkpoints' / 'last.pt'}", *eval_args(tmp_path), f"out={out}"], tmp_path)
    judged = json.loads(out.read_text())
    assert judged["task"] == "SrGan"
    names = ["psnr", "ssim", "mse", "fd_classifier", "kd_classifier", "accuracy"]
    assert_as_in_training(judged, metrics, names)
    assert_as_in_training(judged, metrics, [f"{name}_bicubic" for name in names])  # doing nothing: bicubic
    assert judged["psnr_bicubic"] != judged["psnr"]


@pytest.mark.slow
def test_cyclegan_in_a_sweep_table_and_csv(tmp_path: Path) -> None:
    run, metrics = trained(TINY_CYCLE, tmp_path, "cycle")
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "checkpoints").symlink_to(run / "checkpoints")
    printed = gan_eval([f"sweep={sweep}", *eval_args(tmp_path)], tmp_path).stdout
    with (sweep / "eval.csv").open() as file:
        (row,) = list(csv.DictReader(file))
    assert row["task"] == "CycleGan"
    for name in ("fd_classifier_a2b", "label_kept_b2a", "ink_ratio_a2b", "fd_classifier_mean"):
        assert float(row[name]) == pytest.approx(metrics[f"metrics/{name}"], rel=1e-4), name
    assert "gan-eval sweep=" in printed
    assert math.isfinite(float(row["baseline/ink_ratio_a2b"]))


def test_a_mistyped_key_is_one_line_naming_the_closest(tmp_path: Path) -> None:
    for args, message in ((["chekpoint=x.pt"], "error: unknown key chekpoint: did you mean checkpoint?"),
                          (["images=x.npz", "metrcs=[fd]"], "error: unknown key metrcs: did you mean metrics?"),
                          (["images=x.npz", "prdc.pr=3"], "error: unknown key prdc.pr: did you mean prdc.pr_k?")):
        result = gan_eval(args, tmp_path, check=False)
        assert result.returncode == 2 and result.stderr.strip() == message, result.stderr


def test_the_schema_has_every_key_of_the_config() -> None:
    """check_keys accepts the composed config's keys and the schema's: they must be the same set,
    or a key of conf/evaluate.yaml without a schema field (or the reverse) goes unnoticed."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        composed = compose("evaluate")
    keys = {key for key in config_paths(OmegaConf.to_container(composed)) if not key.startswith("dataset.")}
    assert keys == {key for key in schema_paths(EvaluateSchema) if not key.startswith("dataset.")}
