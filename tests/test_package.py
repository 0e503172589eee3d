"""The wheel carries conf/: an installed gan-train finds its configs from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_FAKE


@pytest.mark.slow  # > 30 s on the 2-core test machine under load
def test_wheel_ships_conf_and_runs_from_elsewhere(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), "-q"], check=True, capture_output=True)
    wheel = next(wheels.glob("gan_cli-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "gan_cli/conf/train.yaml" in names and "gan_cli/conf/model/dcgan.yaml" in names

    # Install the wheel alone into a separate target; its PYTHONPATH entry shadows the editable
    # checkout, so the run below can only succeed with the configs packed into the wheel.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel),
                    "-q"], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONWARNINGS": "ignore"}
    probe = subprocess.run([sys.executable, "-c", "import gan_cli.apps.cli as c; print(c.__file__, c.CONFIG_DIR)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    module_file, config_dir = probe.stdout.split()
    assert module_file.startswith(str(target)) and config_dir == str(target / "gan_cli" / "conf")
    subprocess.run([str(target / "bin" / "gan-train"), *TINY_FAKE], cwd=elsewhere, env=env, check=True,
                   capture_output=True, text=True)
    metrics = json.loads(next(elsewhere.glob("outputs/*/*/metrics.json")).read_text())
    assert metrics["steps"] == 4
