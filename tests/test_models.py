"""Model and loss contracts the training loop relies on."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gan_cli.components.losses import NonSaturatingLoss
from gan_cli.core.errors import GanCliError
from gan_cli.models import dcgan, mlp


@pytest.mark.parametrize("size, stages", [(28, 2), (32, 3), (64, 4)])
def test_dcgan_depth_follows_image_size(size: int, stages: int) -> None:
    generator = dcgan.Generator(z_dim=16, channels=3, image_size=size, ngf=8)
    discriminator = dcgan.Discriminator(channels=3, image_size=size, ndf=8)
    transposed = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(transposed) == stages + 1  # projection from z, then one per 2x stage
    images = generator(torch.randn(4, 16))
    assert images.shape == (4, 3, size, size) and images.abs().max() <= 1
    assert discriminator(images).shape == (4,)


def test_dcgan_layout_follows_the_paper() -> None:
    discriminator = dcgan.Discriminator(channels=1, image_size=64)
    layers = list(discriminator.net)
    assert isinstance(layers[0], nn.Conv2d) and isinstance(layers[1], nn.LeakyReLU)  # no BN first
    assert any(isinstance(m, nn.BatchNorm2d) for m in layers[2:])
    weights = torch.cat([m.weight.flatten() for m in discriminator.modules() if isinstance(m, nn.Conv2d)])
    assert abs(weights.std().item() - 0.02) < 0.002  # N(0, 0.02) init


def test_dcgan_rejects_sizes_it_cannot_build() -> None:
    with pytest.raises(GanCliError, match="image_size=30"):
        dcgan.Generator(image_size=30)


def test_mlp_defaults_match_the_tutorial() -> None:
    generator, discriminator = mlp.Generator(), mlp.Discriminator()
    g_widths = [m.out_features for m in generator.modules() if isinstance(m, nn.Linear)]
    d_widths = [m.out_features for m in discriminator.modules() if isinstance(m, nn.Linear)]
    assert (generator.z_dim, g_widths, d_widths) == (64, [256, 512, 1024, 784], [1024, 512, 256, 1])
    assert discriminator(generator(torch.randn(5, 64))).shape == (5,)


@pytest.mark.parametrize("module", [mlp.Generator(), mlp.Discriminator(), dcgan.Generator(), dcgan.Discriminator()])
def test_no_model_ends_in_a_sigmoid(module: nn.Module) -> None:
    assert not any(isinstance(m, nn.Sigmoid) for m in module.modules())


def test_non_saturating_loss_matches_hand_computation() -> None:
    loss = NonSaturatingLoss()
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([0.0, -1.0])
    sigmoid = lambda x: 1 / (1 + math.exp(-x))
    expected_d = -(math.log(sigmoid(0.0)) + math.log(sigmoid(2.0))) / 2 - (
        math.log(1 - sigmoid(0.0)) + math.log(1 - sigmoid(-1.0))) / 2
    expected_g = -(math.log(sigmoid(0.0)) + math.log(sigmoid(-1.0))) / 2
    assert loss.d_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    assert loss.g_loss(fake).item() == pytest.approx(expected_g, rel=1e-6)
    assert torch.isfinite(loss.d_loss(torch.tensor([1e4]), torch.tensor([-1e4])))  # stable on logits
