"""A checkpoint is data everywhere (issue #20): its stored config is checked as a whole against the
schema before anything uses it, for every task and every preset, with no list kept by hand.

For each preset in conf/experiment/ and each option of the other groups (each task's default among
them: conf/task/), the stored config of a checkpoint gets every leaf replaced in turn by (a) a nested
`_target_` chain that would write a marker file, (b) an interpolation `${oc.env:HOME}`, (c) a value
of the wrong type; gan-sample (every input mode) and `trainer.resume=` must refuse each with a
one-line UntrustedCheckpoint naming the key, and the marker must never appear. The checkpoints
hold the real stored config and no weights: the refusal comes before any network is built. A key
the schema does not know is refused in every node.
"""

from __future__ import annotations

from collections.abc import Iterator
from copy import deepcopy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.core.config import validate
from gan_cli.core.errors import GanCliError
from gan_cli.core.trusted import UntrustedCheckpoint, stored_config
from gan_cli.loop.checkpoint import FORMAT, load_checkpoint
from gan_cli.loop.resume import checkpoint_state
from gan_cli.loop.train import train
from gan_cli.sampling.sample import sample
from tests.conftest import compose_train, forged

CONF = Path(CONFIG_DIR)
# Every preset, then every option of every other config group (each task's default among them).
CONFIGS = [f"experiment={p.stem}" for p in sorted((CONF / "experiment").glob("*.yaml"))] + \
          [f"{p.parent.name}={p.stem}" for p in sorted(CONF.glob("*/*.yaml")) if p.parent.name != "experiment"]
INPUTS = [None, "test", "images"]  # gan-sample's input modes: none (z -> image), the test split, a folder


def shipped_config(choice: str, data: Path) -> dict[str, Any]:
    """The config a run of `choice` stores in its checkpoints (validated and resolved)."""
    cfg = validate(compose_train([choice, f"dataset.root={data}", "dataset.download=false", "trainer.device=cpu",
                                  "trainer.num_threads=1"]))
    return OmegaConf.to_container(cfg)


def stored_state(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint as resume.checkpoint_state writes it, of a task without networks."""
    nothing = SimpleNamespace(networks={}, averages={}, optimizers={})
    schedules = SimpleNamespace(state_dict=lambda: {"g": {"last_epoch": 1}})
    return {"format": FORMAT, **checkpoint_state(nothing, schedules, OmegaConf.create(config), 1, 0)}


def with_config(state: dict[str, Any], config: dict[str, Any], path: Path) -> Path:
    """`state` with another stored config (YAML, as an editor or a script writes it) saved at `path`."""
    torch.save(forged({**state, "config": yaml.safe_dump(config, sort_keys=False)}), path)
    return path


def leaves(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in node.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            yield from leaves(value, path)
        else:
            yield path


def replaced(config: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    copy = deepcopy(config)
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def marker_chain(marker: Path) -> dict[str, Any]:
    """Built recursively by Hydra, this writes `marker`: Path.write_text(Path(marker), "ran")."""
    return {"_target_": "pathlib.Path.write_text", "self": {"_target_": "pathlib.Path", "_args_": [str(marker)]},
            "data": "ran"}


def wrong_type(value: Any) -> Any:
    return [1] if value is None or isinstance(value, str) else "abc"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    data = tmp_path_factory.mktemp("data")
    return {choice: shipped_config(choice, data) for choice in CONFIGS}


@pytest.fixture(scope="module")
def own_leaves(shipped: dict[str, dict[str, Any]]) -> dict[str, list[tuple[str, ...]]]:
    """The leaves each config is the first (in CONFIGS order) to hold for its task: every leaf of
    every task's configs is mutated once (mnist_mlp's model.generator.hidden, cifar10_dcgan's
    dataset.dataset_class, ...), not once per preset that shares it."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    own: dict[str, list[tuple[str, ...]]] = {}
    for choice, config in shipped.items():
        keys = [(config["task"]["_target_"], path) for path in leaves(config)]
        own[choice] = [key[1] for key in keys if key not in seen]
        seen.update(keys)
    return own


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    return folder


def refusal(run: Any, path: tuple[str, ...]) -> str:
    with pytest.raises(GanCliError) as caught:
        run()
    message = str(caught.value)
    assert isinstance(caught.value, UntrustedCheckpoint) and "\n" not in message, message
    assert ".".join(path) in message, message
    return message


def test_every_shipped_config_is_a_loadable_stored_config(tmp_path: Path, shipped: dict[str, dict[str, Any]]) -> None:
    assert {"task=image_gan", "task=cyclegan", "task=srgan", "experiment=smoke"} <= set(shipped)
    for choice, config in shipped.items():
        torch.save(forged(stored_state(config)), tmp_path / "c.pt")
        state = load_checkpoint(tmp_path / "c.pt")
        assert OmegaConf.to_container(stored_config(state, choice)) == config, choice


@pytest.mark.parametrize("choice", CONFIGS)
def test_every_leaf_of_a_stored_config_is_data(tmp_path: Path, shipped: dict[str, dict[str, Any]],
                                               own_leaves: dict[str, list[tuple[str, ...]]], images: Path,
                                               choice: str) -> None:
    config, marker = shipped[choice], tmp_path / "marker"
    state, resume = stored_state(config), OmegaConf.create(config)
    for index, path in enumerate(own_leaves[choice]):
        original = OmegaConf.select(OmegaConf.create(config), ".".join(path))
        mutations = (("chain", marker_chain(marker)), ("env", "${oc.env:HOME}"), ("type", wrong_type(original)))
        for number, (how, value) in enumerate(mutations):
            checkpoint = with_config(state, replaced(config, path, value), tmp_path / f"{how}.pt")
            for source in INPUTS:
                spec = {"checkpoint": str(checkpoint), "out": str(tmp_path / "s.png"), "device": "cpu",
                        "input": str(images) if source == "images" else source}
                refusal(lambda: sample(OmegaConf.create(spec)), path)  # noqa: B023 - called at once
            if number == index % len(mutations):  # every leaf resumes, each kind of mutation in turn (time)
                resume.trainer.resume = str(checkpoint)
                refusal(lambda: train(resume, run_dir=tmp_path / "run"), path)  # noqa: B023
            assert not marker.exists(), (choice, path, how)


def nodes(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for key, value in node.items():
        if isinstance(value, dict):
            yield from nodes(value, (*prefix, key))


def test_a_key_the_schema_does_not_know_is_refused_in_every_node(tmp_path: Path,
                                                                 shipped: dict[str, dict[str, Any]]) -> None:
    checked: set[tuple[str, tuple[str, ...]]] = set()
    for config in shipped.values():
        state = stored_state(config)
        for path in nodes(config):
            if (config["task"]["_target_"], path) in checked:
                continue
            checked.add((config["task"]["_target_"], path))
            extended = replaced(config, (*path, "surplus"), 1)
            with pytest.raises(UntrustedCheckpoint, match=rf"refused: {'.'.join((*path, 'surplus'))} is not a "):
                load_checkpoint(with_config(state, extended, tmp_path / "c.pt"))
    assert len(checked) > 30
