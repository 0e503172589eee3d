"""gan-eval's command-line key check: a mistyped key is one line naming the closest, as in
gan-train and gan-sample."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.core.overrides import config_paths, schema_paths
from gan_cli.core.schema import EvaluateSchema
from tests.test_evaluate import gan_eval


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
