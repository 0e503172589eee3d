"""A checkpoint is data: crafted configs are refused before anything runs, and every damaged
file is one error line (and `trainer.resume=auto` falls back to the next checkpoint)."""

from __future__ import annotations

import io
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from gan_cli.core.errors import GanCliError
from gan_cli.core.trusted import trusted_node
from gan_cli.loop.checkpoint import CheckpointDir, load_checkpoint
from gan_cli.loop.train import train
from tests.conftest import TINY_FAKE, compose_train, forged, run_cli


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("good")
    train(compose_train([*TINY_FAKE, "trainer.ckpt_every_n_steps=2"]), run_dir=run_dir)
    return run_dir / "checkpoints" / "last.pt"


def crafted(good: Path, target: Path, edit: Any) -> Path:
    """A copy of a real checkpoint (passes weights_only=True) whose stored config `edit` changed."""
    state = torch.load(good, weights_only=True)
    config = yaml.safe_load(state["config"])
    edit(config["model"]["generator"])
    state["config"] = yaml.safe_dump(config)
    torch.save(forged(state), target)
    return target


def opens_file(victim: Path) -> Any:
    def edit(node: dict[str, Any]) -> None:
        node.clear()
        node.update({"_target_": "builtins.open", "_args_": [str(victim), "w"]})
    return edit


def runs_shell(marker: Path) -> Any:
    buffer = io.BytesIO()
    torch.save(RunsCode(marker), buffer)

    def edit(node: dict[str, Any]) -> None:  # torch.load(BytesIO(<pickle>), weights_only=False) as z_dim
        payload = {"_target_": "builtins.bytes.fromhex", "_args_": [buffer.getvalue().hex()]}
        node["z_dim"] = {"_target_": "torch.load", "weights_only": False,
                         "f": {"_target_": "io.BytesIO", "_args_": [payload]}}
    return edit


def assert_refused(result: Any) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len([line for line in lines if line.strip()]) == 1 and lines[0].startswith("error: checkpoint")
    assert "was refused" in lines[0] and "weights_only" not in result.stderr and "Traceback" not in result.stderr


def use_checkpoint(command: str, evil: Path, tmp_path: Path) -> Any:
    """gan-sample or a resume (gan-train) on the crafted checkpoint, as a user runs them."""
    args = ([f"checkpoint={evil}", "out=s.png"] if command == "gan-sample" else
            [*TINY_FAKE, f"trainer.resume={evil}", f"hydra.run.dir={tmp_path}/run"])
    return run_cli("gan-sample" if command == "gan-sample" else "gan-train", args, cwd=tmp_path, check=False)


@pytest.mark.parametrize("command", ["gan-sample", "resume"])
def test_a_config_that_truncates_a_file_is_refused(tmp_path: Path, good: Path, command: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    result = use_checkpoint(command, crafted(good, tmp_path / "evil.pt", opens_file(victim)), tmp_path)
    assert_refused(result)
    assert "builtins.open" in result.stderr
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("command", ["gan-sample", "resume"])
def test_a_nested_target_that_runs_a_shell_command_is_refused(tmp_path: Path, good: Path, command: str) -> None:
    marker = tmp_path / "pwned"
    result = use_checkpoint(command, crafted(good, tmp_path / "evil.pt", runs_shell(marker)), tmp_path)
    assert_refused(result)
    assert "model.generator.z_dim" in result.stderr
    assert not marker.exists() and not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("node, reason", [
    ({"_target_": "gan_cli.models.dcgan.Generator", "ngf": "${oc.env:HOME}"}, "interpolation"),
    ({"_target_": "gan_cli.models.dcgan.Generator", "_partial_": True}, "special key"),
    ({"_target_": "gan_cli.models.dcgan.Generator", "hidden": [1, {"_target_": "os.getcwd"}]}, "nested node"),
    ({"_target_": "gan_cli.models.layers.require_labels"}, "not one of gan-cli's model classes"),
    ({"_target_": "gan_cli.models.nothere.Generator"}, "not one of gan-cli's model classes"),
    ({"_target_": "torch.nn.Linear", "in_features": 1, "out_features": 1}, "not one of gan-cli's model classes"),
])
def test_trusted_node_allows_only_model_classes_with_plain_values(node: dict[str, Any], reason: str) -> None:
    from omegaconf import OmegaConf

    with pytest.raises(GanCliError, match=reason):
        trusted_node(OmegaConf.create(node), "model.generator", "x.pt")
    assert trusted_node(OmegaConf.create({"_target_": "gan_cli.models.mlp.Generator", "hidden": [8]}),
                        "model.generator", "x.pt")


@pytest.mark.parametrize("section, edit, reason", [
    ("task", {"_target_": "builtins.exec", "_args_": ["import os"]}, r"task\._target_='builtins\.exec'"),
    ("task", {"_target_": "gan_cli.tasks.cyclegan.CycleGan", "pool_size": {"_target_": "os.getcwd"}},
     r"task\.pool_size is a nested node naming _target_='os\.getcwd'"),
    ("dataset", {"_target_": "os.system", "_args_": ["true"]}, r"dataset\._target_='os\.system'"),
    ("dataset", {"_target_": "gan_cli.data.datasets.load_torchvision", "dataset_class": "subprocess.Popen"},
     r"dataset\.dataset_class='subprocess\.Popen' is not a torchvision dataset"),
])
def test_task_and_dataset_nodes_are_checked_too(tmp_path: Path, good: Path, section: str, edit: dict[str, Any],
                                                reason: str) -> None:
    """gan-sample builds the task class and, for translations with input=test, the dataset."""
    state = torch.load(good, weights_only=True)
    config = yaml.safe_load(state["config"])
    config[section] = edit
    state["config"] = yaml.safe_dump(config)
    torch.save(forged(state), tmp_path / "evil.pt")
    with pytest.raises(GanCliError, match=reason):
        load_checkpoint(tmp_path / "evil.pt")
    result = run_cli("gan-sample", [f"checkpoint={tmp_path / 'evil.pt'}", "out=s.png"], cwd=tmp_path, check=False)
    assert_refused(result)


def test_a_refused_pickle_never_passes_on_the_weights_only_false_advice(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"format": "gan-cli/1", "payload": RunsCode(tmp_path / "pwned")}, evil)
    with pytest.raises(GanCliError) as caught:
        load_checkpoint(evil)
    message = str(caught.value)
    assert "was refused" in message and "weights_only" not in message and "\n" not in message
    assert "posix.system" in message or "os.system" in message


def damaged_variants(good: Path, folder: Path) -> list[Path]:
    """Random bytes, truncations, a text file (copied and symlinked), and gan-cli dicts with
    each key missing or of the wrong type."""
    rng = random.Random(0)
    data = good.read_bytes()
    variants: list[tuple[str, bytes | None]] = [(f"random{n}", rng.randbytes(n)) for n in (0, 1, 64, 5000)]
    variants += [(f"cut{n}", data[:n]) for n in (10, 100, 1000, len(data) // 2, len(data) - 1)]
    variants += [("flipped", data[:200] + bytes(b ^ 0xFF for b in data[200:400]) + data[400:])]
    variants += [("text", b"hello world\n")]
    paths = []
    for name, content in variants:
        paths.append(folder / f"{name}.pt")
        paths[-1].write_bytes(content)
    (folder / "link.pt").symlink_to(folder / "text.pt")
    paths.append(folder / "link.pt")
    state = torch.load(good, weights_only=True)
    wrong = {"step": "4", "epoch": None, "networks": [1], "averages": {"generator": {"w": 1}},
             "optimizers": {"g": {"state": {}}}, "config": {"model": 1}, "rng": {"torch": 1}, "format": 1}
    for key, bad in wrong.items():
        for how, edited in (("missing", {k: v for k, v in state.items() if k != key}), ("wrong", {**state, key: bad})):
            paths.append(folder / f"{how}_{key}.pt")
            torch.save(forged(edited), paths[-1])
    for key in ("config", "rng"):  # damage one level down
        inner = ({**state, "config": "model: [1, 2"} if key == "config" else
                 {**state, "rng": {**state["rng"], "python": (3, (1, 2), None)}})
        paths.append(folder / f"inner_{key}.pt")
        torch.save(forged(inner), paths[-1])
    return paths


def test_fuzzed_checkpoints_are_one_line_errors(tmp_path: Path, good: Path) -> None:
    for path in damaged_variants(good, tmp_path):
        try:
            load_checkpoint(path)
        except GanCliError as err:
            assert "\n" not in str(err) and str(path) in str(err) and "weights_only" not in str(err), path
        else:
            raise AssertionError(f"{path.name} loaded")


@pytest.mark.parametrize("kind, name", [("networks", "discriminator"), ("averages", "generator"), ("optimizers", "d")])
def test_resume_from_a_checkpoint_without_a_named_part_is_one_line(tmp_path: Path, good: Path, kind: str,
                                                                   name: str) -> None:
    state = torch.load(good, weights_only=True)
    torch.save(forged({**state, kind: {k: v for k, v in state[kind].items() if k != name}}), tmp_path / "cut.pt")
    with pytest.raises(GanCliError, match=rf"its {kind} lack {name}$"):
        train(compose_train([*TINY_FAKE, f"trainer.resume={tmp_path / 'cut.pt'}"]), run_dir=tmp_path / "run")


@pytest.mark.parametrize("damage", ["link_to_text", "missing_rng", "missing_optimizers"])
def test_resume_auto_falls_back_past_a_damaged_last_pt(tmp_path: Path, good: Path, damage: str) -> None:
    folder = tmp_path / "checkpoints"
    shutil.copytree(good.parent, folder)
    last = folder / "last.pt"
    last.unlink()
    state = torch.load(folder / "step_0000004.pt", weights_only=True)
    (folder / "step_0000004.pt").unlink()  # the newest step file is gone too: fall back to step 2
    if damage == "link_to_text":
        (tmp_path / "notes.txt").write_text("hello world\n")  # the unpickler reads 'h' as an opcode
        last.symlink_to(tmp_path / "notes.txt")
    else:
        torch.save(forged({k: v for k, v in state.items() if k != damage.removeprefix("missing_")}), last)
    metrics = train(compose_train([*TINY_FAKE, "trainer.max_steps=6", "trainer.resume=auto"]), run_dir=tmp_path)
    assert metrics["steps"] == 6 and metrics["images_seen"] == 6 * 16


def test_resume_auto_takes_the_highest_step_not_last_pt(tmp_path: Path, good: Path) -> None:
    folder = tmp_path / "checkpoints"
    shutil.copytree(good.parent, folder)
    (folder / "last.pt").unlink()
    shutil.copy(folder / "step_0000002.pt", folder / "last.pt")  # a stale copy, not a link
    path, state = CheckpointDir(folder, 3).newest_loadable()
    assert path.name == "step_0000004.pt" and state["step"] == 4


def test_resume_from_a_folder_says_it_is_a_folder(tmp_path: Path, good: Path) -> None:
    with pytest.raises(GanCliError, match=r"is a folder, not a file: pass a \.pt file"):
        train(compose_train([*TINY_FAKE, f"trainer.resume={good.parent}"]), run_dir=tmp_path)


# Issue #20: the whole stored config is data, in every task (tests/test_stored_config.py sweeps every
# leaf of every preset; these are the cases reported, on real checkpoints, through the real commands).
TINY_TASKS = {
    "srgan": ["task=srgan", "model.generator.width=4", "model.generator.blocks=1", "model.discriminator.ndf=4",
              "model.discriminator.stages=1", "model.discriminator.pool=1", "model.discriminator.dense=8",
              "task.perceptual_weight=0", "task.preview_images=2"],
    "cyclegan": ["task=cyclegan", "model.generator.ngf=4", "model.generator.blocks=1",
                 "model.generator.downsamplings=1", "model.discriminator.ndf=4", "model.discriminator.layers=1",
                 "task.domain_b=invert", "task.preview_images=2"],
}


@pytest.fixture(scope="module")
def task_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A one-step checkpoint of each translation task, tiny networks on dataset=fake."""
    found = {}
    for name, overrides in TINY_TASKS.items():
        run_dir = tmp_path_factory.mktemp(name)
        tiny = [o for o in TINY_FAKE if not o.startswith("model.")]  # the tasks' own networks are set below
        train(compose_train([*tiny, "trainer.max_steps=1", "trainer.batch_size=4", *overrides]), run_dir=run_dir)
        found[name] = run_dir / "checkpoints" / "last.pt"
    return found


def edited(good: Path, target: Path, edit: Any) -> Path:
    """A copy of a real checkpoint whose stored config (a plain dict) `edit` changed."""
    state = torch.load(good, weights_only=True)
    config = yaml.safe_load(state["config"])
    edit(config)
    state["config"] = yaml.safe_dump(config)
    torch.save(forged(state), target)
    return target


def assert_one_line(result: Any, says: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: checkpoint")
    assert says in lines[0], lines[0]


@pytest.mark.parametrize("source, node", [("test", "task"), ("images", "task"), ("images", "sr")])
def test_an_srgan_scale_of_target_nodes_runs_nothing_in_gan_sample(tmp_path: Path, task_checkpoints: dict[str, Path],
                                                                  source: str, node: str) -> None:
    """The critical report: `sr.scale` (now `task.scale`) reached Generator(scale=...) and Hydra
    built the nodes in it. node=sr: the layout of checkpoints before the options moved to `task:`."""
    from PIL import Image

    marker = tmp_path / "pwned"
    chain = {"_target_": "pathlib.Path.write_text", "self": {"_target_": "pathlib.Path", "_args_": [str(marker)]},
             "data": "ran"}
    evil = edited(task_checkpoints["srgan"], tmp_path / "evil.pt",
                  lambda c: c.update({node: {**c.get(node, {}), "scale": [chain]}}))
    (tmp_path / "images").mkdir()
    Image.new("L", (7, 7)).save(tmp_path / "images" / "a.png")
    result = run_cli("gan-sample", [f"checkpoint={evil}", f"input={source}", "out=s.png"], cwd=tmp_path, check=False)
    assert_one_line(result, "was refused: task.scale[0] is a nested node naming _target_='pathlib.Path.write_text'")
    assert not marker.exists() and not (tmp_path / "s.png").exists()


def test_an_interpolated_seed_in_a_cyclegan_checkpoint_is_refused(tmp_path: Path,
                                                                  task_checkpoints: dict[str, Path]) -> None:
    """It was resolved while gan-sample loaded the test split: a 28-line traceback."""
    evil = edited(task_checkpoints["cyclegan"], tmp_path / "evil.pt",
                  lambda c: c["trainer"].update(seed="${oc.env:HOME}"))
    result = run_cli("gan-sample", [f"checkpoint={evil}", "input=test", "out=s.png"], cwd=tmp_path, check=False)
    assert_one_line(result, "was refused: trainer.seed holds an interpolation '${oc.env:HOME}'")


def test_a_task_target_that_is_no_task_is_refused(tmp_path: Path, good: Path) -> None:
    from omegaconf import OmegaConf

    from gan_cli.sampling.sample import sample

    evil = edited(good, tmp_path / "evil.pt", lambda c: c["task"].update(_target_="gan_cli.tasks.base.Drawn"))
    with pytest.raises(GanCliError, match=r"task\._target_='gan_cli\.tasks\.base\.Drawn' is not one of gan-cli's "
                                          r"tasks \(gan_cli\.tasks\.cyclegan\.CycleGan, "):
        sample(OmegaConf.create({"checkpoint": str(evil), "out": str(tmp_path / "s.png")}))


@pytest.mark.parametrize("command", ["gan-sample", "resume"])
def test_a_schedule_state_of_the_wrong_type_is_refused(tmp_path: Path, good: Path, command: str) -> None:
    """gan-sample accepted `schedules.g.last_epoch: "abc"`, and a resume crashed on it."""
    from omegaconf import OmegaConf

    from gan_cli.sampling.sample import sample

    state = torch.load(good, weights_only=True)
    torch.save(forged({**state, "schedules": {**state["schedules"], "g": {"last_epoch": "abc"}}}), tmp_path / "bad.pt")
    run = (lambda: sample(OmegaConf.create({"checkpoint": str(tmp_path / "bad.pt"), "out": str(tmp_path / "s.png")}))
           ) if command == "gan-sample" else (
        lambda: train(compose_train([*TINY_FAKE, f"trainer.resume={tmp_path / 'bad.pt'}"]), run_dir=tmp_path / "run"))
    with pytest.raises(GanCliError, match=r"is damaged: schedules\['g'\]\['last_epoch'\] holds str 'abc'; allowed is "
                                          r"last_epoch: an integer$"):
        run()
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("best", ["abc", float("nan"), 3])
def test_a_best_score_of_the_wrong_kind_is_refused(tmp_path: Path, good: Path, best: object) -> None:
    from omegaconf import OmegaConf

    from gan_cli.sampling.sample import sample

    state = torch.load(good, weights_only=True)
    torch.save(forged({**state, "best": best}), tmp_path / "bad.pt")
    with pytest.raises(GanCliError, match=r"is damaged: 'best' holds .*; allowed is a finite float"):
        sample(OmegaConf.create({"checkpoint": str(tmp_path / "bad.pt"), "out": str(tmp_path / "s.png")}))
