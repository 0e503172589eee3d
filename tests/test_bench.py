"""gan-bench runs end to end on tiny settings and writes its JSON (no timing asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gan_cli.apps.bench import bench
from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.core.errors import GanCliError
from tests.conftest import run_cli

TINY_BENCH = [
    "configs=[mlp28,dcgan28]",
    "batch_sizes=[4,8]",
    "steps=2",
    "warmup_steps=1",
    "repeats=2",
    "device=cpu",
    "reference_workers=1",
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]  # no Hydra run folder or log file


@pytest.mark.parametrize(("override", "key"), [("configs=[nope]", "configs"), ("steps=0", "steps"),
                                               ("batch_sizes=[]", "batch_sizes")])
def test_bench_rejects_bad_settings(override: str, key: str) -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("bench", overrides=[override, "device=cpu"])
    with pytest.raises(GanCliError, match=key):
        bench(cfg)
