"""The typed contracts: config.build(expect=) checks what a node makes, every option of a
component group satisfies its group's Protocol, and a generator's StyleGAN abilities are read
from what it has."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from typing_extensions import get_protocol_members

from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.components.contracts import AdversarialLoss, Augmentation, DiversityTerm, LrSchedule, Regularizer
from gan_cli.components.losses import GanLoss, HingeLoss
from gan_cli.core.config import build
from gan_cli.core.errors import GanCliError
from gan_cli.models.abilities import STYLE_ABILITIES, StyleGenerator, is_style_generator
from gan_cli.models.dcgan import Generator as DcganGenerator
from gan_cli.models.stylegan2 import Generator as StyleGan2Generator
from gan_cli.sampling.latent_tools import mixing_grid, require_w
from tests.conftest import compose_train

# config group -> the Protocol every option of it makes
CONTRACTS: dict[str, type] = {
    "loss": AdversarialLoss,
    "reg": Regularizer,
    "augment": Augmentation,
    "diversity": DiversityTerm,
    "lr_schedule": LrSchedule,
}
OPTIONS = [(group, path.stem) for group in CONTRACTS for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml"))]


def test_every_group_has_options() -> None:
    """The option list below is read from conf/: a renamed folder must not leave it empty."""
    assert {group for group, _ in OPTIONS} == set(CONTRACTS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_each_option_builds_what_its_group_promises(group: str, option: str) -> None:
    cfg = compose_train([f"{group}={option}"])
    made = build(cfg[group], expect=CONTRACTS[group])
    assert isinstance(made, CONTRACTS[group])


def test_build_with_expect_returns_the_built_component() -> None:
    cfg = compose_train(["loss=hinge"])
    loss = build(cfg.loss, expect=AdversarialLoss)
    assert type(loss) is HingeLoss
    assert float(loss.d_loss(torch.tensor([2.0]), torch.tensor([-2.0]))) == 0.0  # both logits past the margin


def test_build_with_expect_refuses_another_kind_in_one_line() -> None:
    """A `reg` option where a loss belongs: it has `penalty` but no `d_loss` / `g_loss`."""
    cfg = compose_train(["reg=r1"])
    with pytest.raises(GanCliError) as caught:
        build(cfg.reg, expect=AdversarialLoss)
    assert str(caught.value) == ("cannot build gan_cli.components.regularizers.R1Penalty from the config: "
                                 "it made R1Penalty, not AdversarialLoss")


def test_build_with_a_class_checks_the_class_and_without_expect_anything_goes() -> None:
    node = OmegaConf.create({"_target_": "gan_cli.components.losses.HingeLoss"})
    assert isinstance(build(node, expect=GanLoss), HingeLoss)
    with pytest.raises(GanCliError, match=r"it made HingeLoss, not Module$"):
        build(node, expect=torch.nn.Module)
    assert isinstance(build(node), HingeLoss)


def test_stylegan2_generator_has_the_style_abilities_and_dcgan_has_none() -> None:
    style = StyleGan2Generator(z_dim=8, w_dim=8, channel_base=56, channel_max=8, mapping_layers=1)
    dcgan = DcganGenerator(z_dim=8, ngf=4)
    assert is_style_generator(style)
    assert not is_style_generator(dcgan)
    assert require_w(style, "truncation=0.5") is style
    with pytest.raises(GanCliError, match=r"^mix=coarse: this generator \(dcgan\) has no mapping network"):
        mixing_grid(dcgan, (torch.randn(1, 8), None), (torch.randn(1, 8), None), ["coarse"], 1.0, 4)


def test_the_runtime_check_looks_for_every_ability_the_protocol_declares() -> None:
    """is_style_generator reads STYLE_ABILITIES; the Protocol adds only nn.Module's own methods."""
    assert get_protocol_members(StyleGenerator) == {*STYLE_ABILITIES, "eval", "parameters"}
