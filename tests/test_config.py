"""The real conf/: every group option composes, instantiates and validates; bad values fail
with the key's name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.core.config import run_length, validate
from gan_cli.core.errors import GanCliError
from gan_cli.core.overrides import check_overrides
from gan_cli.core.schema import TrainSchema
from gan_cli.reporting.hparams import run_hparams
from tests.conftest import NOT_Z_TO_IMAGE_MODELS, compose_train


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def test_default_is_dcgan_on_mnist() -> None:
    cfg = validate(compose_train([]))
    assert cfg.model.name == "dcgan" and cfg.dataset.name == "mnist"
    assert (cfg.dataset.channels, cfg.dataset.image_size) == (1, 28)
    assert list(cfg.optim.g.betas) == [0.5, 0.999]


def test_optim_shorthand_sets_both_networks_and_each_can_differ() -> None:
    cfg = validate(compose_train(["optim.lr=1e-3", "optim.betas=[0.0,0.9]", "optim.d.lr=4e-3"]))
    assert cfg.optim.g.lr == pytest.approx(1e-3) and cfg.optim.d.lr == pytest.approx(4e-3)
    assert list(cfg.optim.g.betas) == list(cfg.optim.d.betas) == [0.0, 0.9]


@pytest.mark.parametrize("model", [m for m in options("model") if m not in NOT_Z_TO_IMAGE_MODELS])
@pytest.mark.parametrize("dataset, shape", [("mnist", (1, 28, 28)), ("cifar10", (3, 32, 32)),
                                            ("fake", (1, 28, 28))])
def test_every_model_builds_for_each_dataset_shape(model: str, dataset: str, shape: tuple[int, ...]) -> None:
    cfg = validate(compose_train([f"model={model}", f"dataset={dataset}"]))
    generator, discriminator = instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)
    images = generator(torch.randn(3, generator.z_dim))
    assert images.shape == (3, *shape)
    assert discriminator(images).shape == (3,)


def test_folder_dataset_size_reaches_the_model(tmp_path: Path) -> None:
    cfg = validate(compose_train(["dataset=folder", f"dataset.root={tmp_path}", "dataset.image_size=64"]))
    generator = instantiate(cfg.model.generator)
    assert generator(torch.randn(2, 100)).shape == (2, 3, 64, 64)


@pytest.mark.parametrize("loss", options("loss"))
def test_every_loss_instantiates(loss: str) -> None:
    cfg = validate(compose_train([f"loss={loss}"]))
    criterion = instantiate(cfg.loss)
    logits = torch.randn(8)
    assert torch.isfinite(criterion.d_loss(logits, -logits)) and torch.isfinite(criterion.g_loss(logits))


@pytest.mark.parametrize("optim", options("optim"))
def test_every_optimizer_instantiates(optim: str) -> None:
    cfg = validate(compose_train([f"optim={optim}"]))
    for network in ("g", "d"):
        optimizer = instantiate(cfg.optim[network])([torch.nn.Parameter(torch.zeros(2))])
        assert isinstance(optimizer, torch.optim.Optimizer)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_validates(experiment: str, tmp_path: Path) -> None:
    needs_root = OmegaConf.is_missing(compose_train([f"experiment={experiment}"]).dataset, "root")
    root = [f"dataset.root={tmp_path}"] if needs_root else []  # a folder preset: the user names it
    cfg = validate(compose_train([f"experiment={experiment}", "trainer.device=cpu", *root]))
    assert cfg.trainer.epochs >= 1


BAD = [
    ("trainer.batch_size=abc", "trainer.batch_size"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("trainer.epochs=0", "trainer.epochs"),
    ("trainer.max_steps=-3", "trainer.max_steps"),
    ("optim.lr=0", "optim.lr="),  # the key the user typed, not optim.g.lr that follows it
    ("optim.lr=-1e-4", "optim.lr="),
    ("optim.g.lr=-1e-4", "optim.g.lr="),
    ("optim.d.lr=0", "optim.d.lr="),
    ("optim.betas=[0.5,1.0]", "optim.betas="),
    ("optim.betas=[-0.1,0.9]", "optim.betas="),
    ("optim.betas=[0.5]", "optim.betas="),
    ("trainer.device=gpu", "trainer.device"),
    ("trainer.device=cuda:x", "trainer.device"),
    ("trainer.precision=16", "trainer.precision"),
    ("log.every_n_steps=0", "log.every_n_steps"),
    ("dataset.channels=2", "dataset.channels"),
]


@pytest.mark.parametrize("override, key", BAD)
def test_bad_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(GanCliError, match=key.replace(".", r"\.")):
        validate(compose_train([override]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_requesting_missing_cuda_fails_early() -> None:
    with pytest.raises(GanCliError, match="trainer.device=cuda but CUDA is not available"):
        validate(compose_train(["trainer.device=cuda"]))


def test_missing_root_with_download_off_says_where(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(GanCliError, match="dataset.root=.*does not exist.*download=false"):
        validate(compose_train([f"dataset.root={missing}", "dataset.download=false"]))


def test_data_root_follows_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_CLI_DATA_ROOT", "/datasets/shared")
    assert validate(compose_train([])).dataset.root == "/datasets/shared"


def check(argv: list[str]) -> None:
    check_overrides(argv, CONFIG_DIR, "train", TrainSchema, "gan-train")


@pytest.mark.parametrize("argv, message", [
    (["optim.lrr=1e-3"], "unknown key optim.lrr: did you mean optim.lr?"),
    (["+optim.lrr=1e-3"], "unknown key optim.lrr: did you mean optim.lr?"),  # what Hydra itself suggests
    (["-m", "optim.lr=1e-4,2e-4", "+trainer.max_step=3"], "did you mean trainer.max_steps?"),
    (["model=mlp", "model.generator.ngf=8"], "unknown key model.generator.ngf"),  # ngf is dcgan's
    (["dataset=fake", "dataset.num_sample=8"], "did you mean dataset.num_samples?"),
    (["+optim.lr=1e-3"], "optim.lr is already in the config: set it without the +, e.g. optim.lr=1e-3"),
    (["zzz=1"], "unknown key zzz: `gan-train --cfg job` prints every key"),
])
def test_unknown_keys_are_rejected_with_the_closest_valid_key(argv: list[str], message: str) -> None:
    with pytest.raises(GanCliError, match=re.escape(message)):
        check(argv)


@pytest.mark.parametrize("argv", [
    ["optim.lr=1e-3", "model.generator.ngf=8", "trainer.max_steps=5"],
    ["dataset=fake", "dataset.num_samples=8"],  # a key only this dataset option has
    ["-m", "model=mlp,dcgan", "model.generator.ngf=8"],  # valid for one option of a swept group
    ["hparams_search=optuna", "optim.beta1=0.3"],  # a key the preset adds
    ["+optim.g.amsgrad=true"],  # an argument of the target, torch.optim.Adam
    ["++optim.lr=1e-3", "~trainer.resume", "hydra.run.dir=x", "--cfg", "job"],
    ["--help"],
])
def test_valid_keys_pass_the_check(argv: list[str]) -> None:
    check(argv)


def test_max_steps_alone_decides_the_run_length() -> None:
    """As in Lightning: `trainer.max_steps=50` on 4 batches per epoch runs 50 steps, not the 20 that
    five default epochs would allow; with both set, the one reached first ends the run and says so."""
    def length(*overrides: str) -> tuple[int, str]:
        return run_length(validate(compose_train(["dataset=fake", *overrides])).trainer, batches_per_epoch=4,
                          batches_per_step=1)

    assert length("trainer.max_steps=50") == (50, "trainer.max_steps=50 ends the run")
    assert length() == (20, "trainer.epochs (default 5) ends the run at step 20")
    assert length("trainer.epochs=2", "trainer.max_steps=50") == (
        8, "trainer.epochs=2 ends the run at step 8, before trainer.max_steps=50")
    assert length("trainer.epochs=20", "trainer.max_steps=50")[1] == (
        "trainer.max_steps=50 ends the run, before trainer.epochs=20 (80 steps)")
    # Epochs count the batches the task draws: image_gan with d_steps=2 draws 2 per step.
    trainer = validate(compose_train(["dataset=fake", "trainer.epochs=3", "task.d_steps=2"])).trainer
    assert run_length(trainer, batches_per_epoch=4, batches_per_step=2)[0] == 6


def test_hparams_without_hydra_fall_back_to_what_the_config_names() -> None:
    columns = run_hparams(validate(compose_train(["dataset=fake", "loss=hinge"])))
    assert columns["dataset"] == "fake" and columns["model"] == "dcgan" and columns["loss"] == "HingeLoss"
    assert not [key for key in columns if "." in key]  # no Hydra, no overrides to list


def test_missing_required_key_names_it(tmp_path: Path) -> None:
    with pytest.raises(GanCliError, match=r"^dataset.root= is required: the folder of class folders"):
        validate(compose_train(["dataset=folder"]))
