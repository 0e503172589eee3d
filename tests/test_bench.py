"""gan-bench runs end to end on tiny settings and writes its JSON (no timing asserts)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from gan_cli.apps.bench import bench
from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.core.errors import GanCliError
from gan_cli.data.converted import write_arrays
from tests.conftest import run_cli

TINY_BENCH = [
    "configs=[mlp28,dcgan28]",
    "batch_sizes=[4,8]",
    "steps=2",
    "warmup_steps=1",
    "repeats=2",
    "device=cpu",
    "reference_workers=1",
    "peak_matmul_size=256",
    'setups.mlp28=["model=mlp","dataset.num_samples=32","model.generator.hidden=[32]",'
    '"model.discriminator.hidden=[32]"]',
    'setups.dcgan28=["model=dcgan","dataset.num_samples=32","model.generator.ngf=8","model.discriminator.ndf=8"]',
]


@pytest.mark.slow  # > 30 s on the 2-core test machine under load
def test_bench_writes_a_row_per_config_and_batch(tmp_path: Path) -> None:
    result = run_cli("gan-bench", [*TINY_BENCH, "out=bench/out.json"], cwd=tmp_path)
    assert "speedup" in result.stdout and "mlp28" in result.stdout
    report = json.loads((tmp_path / "bench" / "out.json").read_text())
    assert report["settings"]["steps"] == 2 and report["machine"]["device"] == "cpu" and report["memory"]
    assert [(row["config"], row["batch_size"]) for row in report["rows"]] == [
        ("mlp28", 4), ("mlp28", 8), ("dcgan28", 4), ("dcgan28", 8)]
    for row in report["rows"]:
        assert row["image_shape"] == [1, 28, 28]
        for loop in ("gan_cli", "reference"):
            assert row["img_per_sec"][loop] > 0
            assert len(row["img_per_sec_repeats"][loop]) == 2
            assert isinstance(row["peak_memory_mb"][loop], (float, type(None)))
        assert row["speedup"] > 0 and "other_cpu_share" in row
        assert row["data"] == "memory" and 0 < row["share_of_fp32_peak"]
    assert report["fp32_peak_gflops"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]  # no Hydra run folder or log file


def test_bench_streams_the_same_images_from_a_converted_folder(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gan_cli")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("bench", overrides=[*TINY_BENCH, "configs=[dcgan28]", "batch_sizes=[8]", "repeats=1",
                                          "data=stream", f"out={tmp_path / 'stream.json'}"])
        report = bench(cfg)
    (row,) = report["rows"]
    assert row["data"] == "stream" and row["image_shape"] == [1, 28, 28] and row["img_per_sec"]["gan_cli"] > 0
    # the synthetic images went to a temporary converted folder, read back by the streaming sampler
    assert "dataset: streaming from disk: " in caplog.text and "gan-bench-" in caplog.text
    assert json.loads((tmp_path / "stream.json").read_text())["settings"]["data"] == "stream"


def test_bench_data_root_of_another_shape_is_one_line(tmp_path: Path) -> None:
    write_arrays(tmp_path / "rgb64", np.zeros((16, 3, 64, 64), np.uint8), np.zeros(16, np.int64), [], "test")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("bench", overrides=[*TINY_BENCH, f"data_root={tmp_path / 'rgb64'}", "configs=[mlp28]"])
    with pytest.raises(GanCliError, match="holds 3x64x64 images but config mlp28 trains 1x28x28") as err:
        bench(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("override", "key"), [("configs=[nope]", "configs"), ("steps=0", "steps"),
                                               ("batch_sizes=[]", "batch_sizes"), ("data=disk", "data"),
                                               ("peak_matmul_size=0", "peak_matmul_size")])
def test_bench_rejects_bad_settings(override: str, key: str) -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("bench", overrides=[override, "device=cpu"])
    with pytest.raises(GanCliError, match=key):
        bench(cfg)
