"""The components of stable GAN training, on synthetic tensors: losses and their hooks, R1,
spectral norm, the EMA of G, DiffAugment, the SNGAN ResNet and class-conditional models.

Training-step tests run the real loop (gan_cli.loop.step via train()) on the `fake` dataset.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.components.augment import DiffAugment, cutout, translation
from gan_cli.components.diversity import ModeSeeking
from gan_cli.components.ema import GeneratorEMA
from gan_cli.components.losses import GanLoss, HingeLoss, LeastSquaresLoss, WassersteinGPLoss, WassersteinLoss
from gan_cli.components.regularizers import NoRegularizer, R1Penalty
from gan_cli.core.config import validate
from gan_cli.core.errors import GanCliError
from gan_cli.loop.checkpoint import load_checkpoint
from gan_cli.loop.step import build_task
from gan_cli.loop.train import seed_everything, train
from gan_cli.models import dcgan, mlp, resnet
from gan_cli.models.layers import MinibatchStd
from tests.conftest import NOT_Z_TO_IMAGE_MODELS, TINY_FAKE, compose_train


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def linear_critic(weights: list[float]) -> nn.Linear:
    """D(x) = <w, x> + b on (B, 1, 1, len(w)) images: its input gradient is w everywhere."""
    critic = nn.Linear(len(weights), 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([weights]))
    return critic


def as_critic(layer: nn.Linear):
    return lambda images: layer(images.flatten(1)).squeeze(1)  # (B,)


# ---------------------------------------------------------------- losses


def test_hinge_least_squares_and_wasserstein_match_hand_computation() -> None:
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-2.0, 0.0])
    hinge, lsgan, wgan = HingeLoss(), LeastSquaresLoss(), WassersteinLoss()
    # hinge: mean(relu(1 - r)) = (0.5 + 0) / 2, mean(relu(1 + f)) = (0 + 1) / 2
    assert hinge.d_loss(real, fake).item() == pytest.approx(0.75)
    assert hinge.g_loss(fake).item() == pytest.approx(1.0)
    # lsgan: 0.5 mean((r - 1)^2) = 0.5 (0.25 + 1) / 2, 0.5 mean(f^2) = 0.5 (4 + 0) / 2
    assert lsgan.d_loss(real, fake).item() == pytest.approx(0.3125 + 1.0)
    assert lsgan.g_loss(fake).item() == pytest.approx(0.5 * (9 + 1) / 2)
    # wgan: mean(f) - mean(r) = -1 - 1.25
    assert wgan.d_loss(real, fake).item() == pytest.approx(-2.25)
    assert wgan.g_loss(fake).item() == pytest.approx(1.0)
    assert WassersteinGPLoss().d_loss(real, fake).item() == pytest.approx(-2.25)


def test_base_hooks_do_nothing() -> None:
    discriminator = linear_critic([3.0, 4.0])
    before = discriminator.weight.clone()
    for hooks in (HingeLoss(), LeastSquaresLoss(), WassersteinGPLoss(), GanLoss()):
        hooks.after_d_step(discriminator)
    assert torch.equal(discriminator.weight, before)
    images = torch.randn(2, 1, 1, 2)
    assert HingeLoss().penalty(as_critic(discriminator), images, images, 0) is None
    assert NoRegularizer().penalty(as_critic(discriminator), images, images, 0) is None


def test_wgan_clips_every_weight_of_d_after_its_step() -> None:
    discriminator = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1))
    nn.init.normal_(discriminator[0].weight, 0.0, 1.0)
    WassersteinLoss(clip=0.05).after_d_step(discriminator)
    values = torch.cat([p.flatten() for p in discriminator.parameters()])
    assert values.abs().max().item() == pytest.approx(0.05)


def test_gradient_penalty_matches_hand_computation() -> None:
    # Linear D, |w| = 5: the gradient is w at every interpolate, penalty = 10 (5 - 1)^2.
    critic = linear_critic([3.0, 4.0])
    real, fake = torch.randn(6, 1, 1, 2), torch.randn(6, 1, 1, 2)
    penalty = WassersteinGPLoss(gp_weight=10.0).penalty(as_critic(critic), real, fake, step=0)
    assert penalty.item() == pytest.approx(160.0)
    # It reaches D's weights: d/dw 10 (|w| - 1)^2 = 20 (|w| - 1) w / |w| = 16 w.
    penalty.backward()
    assert torch.allclose(critic.weight.grad, 16 * torch.tensor([[3.0, 4.0]]))
    # D(x) = |x|^2 / 2 has gradient x; with real == fake the interpolate is x itself:
    # norms 3 and 1 -> 10 * ((3 - 1)^2 + (1 - 1)^2) / 2 = 20.
    images = torch.tensor([[3.0, 0.0], [0.0, 1.0]]).view(2, 1, 1, 2)
    quadratic = lambda x: 0.5 * x.flatten(1).pow(2).sum(1)
    assert WassersteinGPLoss().penalty(quadratic, images, images, step=0).item() == pytest.approx(20.0)


def test_r1_matches_hand_computation_and_is_lazy() -> None:
    critic = linear_critic([3.0, 4.0])
    real = torch.randn(5, 1, 1, 2)
    assert R1Penalty(gamma=10.0).penalty(as_critic(critic), real, real, step=7).item() == pytest.approx(125.0)
    lazy = R1Penalty(gamma=10.0, every_n_steps=4)
    assert [lazy.penalty(as_critic(critic), real, real, step) is None for step in range(5)] == [
        False, True, True, True, False]
    assert lazy.penalty(as_critic(critic), real, real, 8).item() == pytest.approx(4 * 125.0)  # scaled by n
    # D(x) = |x|^2 / 2: gradient x on the reals, so R1 = gamma / 2 * mean |x|^2 = 5 * (9 + 1) / 2.
    images = torch.tensor([[3.0, 0.0], [0.0, 1.0]]).view(2, 1, 1, 2)
    quadratic = lambda x: 0.5 * x.flatten(1).pow(2).sum(1)
    assert R1Penalty(gamma=10.0).penalty(quadratic, images, images, 0).item() == pytest.approx(25.0)
    penalty = R1Penalty(gamma=2.0).penalty(as_critic(critic), real, real, 0)
    penalty.backward()  # gamma / 2 |w|^2 -> gradient gamma w
    assert torch.allclose(critic.weight.grad, 2 * torch.tensor([[3.0, 4.0]]))


def test_r1_rejects_a_zero_interval() -> None:
    with pytest.raises(GanCliError, match="reg.every_n_steps"):
        R1Penalty(every_n_steps=0)


# ---------------------------------------------------------------- a few training steps


def train_tiny(tmp_path: Path, overrides: list[str]) -> tuple[dict, dict[str, Tensor], dict[str, Tensor]]:
    """A few steps of the real loop; returns its metrics and G's weights before and after."""
    cfg = compose_train([*TINY_FAKE, "trainer.max_steps=3", "ema.decay=0", *overrides])
    metrics = train(cfg, run_dir=tmp_path)
    seed_everything(cfg.trainer.seed)
    initial = build_task(validate(cfg), torch.device("cpu")).networks["generator"].state_dict()
    final = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["networks"]["generator"]
    return metrics, initial, final


@pytest.mark.parametrize("loss_name", options("loss"))
def test_a_few_steps_with_each_loss_stay_finite_and_move_g(tmp_path: Path, loss_name: str) -> None:
    metrics, initial, final = train_tiny(tmp_path, [f"loss={loss_name}"])
    assert all(math.isfinite(metrics[k]) for k in ("loss/d", "loss/g"))
    assert any(not torch.equal(initial[k], final[k]) for k in initial if initial[k].is_floating_point())


@pytest.mark.parametrize("model", ["mlp", "dcgan", "resnet"])
def test_everything_at_once_trains_each_family(tmp_path: Path, model: str) -> None:
    """Conditional G, spectral-norm projection D, hinge + R1, DiffAugment, EMA: finite through the loop."""
    widths = {"mlp": ["model.generator.hidden=[32]", "model.discriminator.hidden=[32]"]}.get(model, [])
    overrides = [o for o in TINY_FAKE if model == "dcgan" or ("ngf" not in o and "ndf" not in o)]
    if model == "resnet":
        overrides += ["model.generator.ngf=16", "model.discriminator.ndf=16", "dataset.image_size=32"]
    cfg = compose_train([*overrides, f"model={model}", *widths, "model.conditional=true",
                         "model.discriminator.spectral_norm=true", "loss=hinge", "reg=r1", "augment=diffaugment",
                         "ema.start_step=1", "trainer.max_steps=3"])
    metrics = train(cfg, run_dir=tmp_path)
    assert all(math.isfinite(metrics[k]) for k in ("loss/d", "loss/g"))
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["averages"]["generator"].keys() == state["networks"]["generator"].keys()


@pytest.mark.parametrize("model", ["mlp", "dcgan"])
def test_one_joint_d_forward_is_the_same_math_as_two(model: str) -> None:
    """Without batch-dependent layers D scores real and fake in one forward; the logits and D's
    gradients match two separate forwards. With BatchNorm (the DCGAN D) it keeps two forwards."""
    overrides = [o for o in TINY_FAKE if model == "dcgan" or ("ngf" not in o and "ndf" not in o)]
    cfg = validate(compose_train([*overrides, f"model={model}", "model.conditional=true"]))
    task = build_task(cfg, torch.device("cpu"))
    assert task.joint_d_forward is (model == "mlp")
    real, labels = task.sampler.batch(0)
    fake = task.generator(torch.randn(real.shape[0], task.generator.z_dim), labels).detach()
    grads = []
    for joint in (True, False):
        task.joint_d_forward = joint
        task.discriminator.zero_grad()
        real_logits, fake_logits = task.score_real_and_fake(real, fake, labels)
        task.adversary.loss.d_loss(real_logits, fake_logits).backward()
        grads.append([p.grad.clone() for p in task.discriminator.parameters()])
    if model == "mlp":  # in BatchNorm's training mode the two paths differ by design
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


def test_minibatch_std_appends_the_group_std_and_sees_collapse() -> None:
    layer = MinibatchStd(group_size=2)
    x = torch.randn(4, 3, 2, 2)
    out = layer(x)
    assert out.shape == (4, 4, 2, 2) and torch.equal(out[:, :3], x)
    # groups are images (0, 2) and (1, 3): batch/group apart, as in StyleGAN
    expected = [(torch.stack([x[i], x[i + 2]]).var(0, unbiased=False) + 1e-8).sqrt().mean() for i in (0, 1)]
    assert torch.allclose(out[:, 3, 0, 0], torch.stack(expected * 2), atol=1e-6)
    collapsed = layer(torch.ones(4, 3, 2, 2))  # identical images: no spread at all
    assert collapsed[:, 3].max() < 1e-3
    with pytest.raises(ValueError, match="divisible by 2"):
        layer(torch.randn(3, 3, 2, 2))


def test_minibatch_std_trains_and_the_batch_size_must_be_a_multiple(tmp_path: Path) -> None:
    metrics, _, _ = train_tiny(tmp_path, ["model.discriminator.minibatch_std=4", "model.conditional=true"])
    assert math.isfinite(metrics["loss/d"])
    cfg = compose_train([*TINY_FAKE, "model.discriminator.minibatch_std=3"])
    with pytest.raises(GanCliError, match="model.discriminator.minibatch_std=3: allowed is 0 .* divisor"):
        validate(cfg)


def test_mode_seeking_term_is_small_for_varied_g_and_large_for_one_that_ignores_z() -> None:
    term = ModeSeeking(weight=1.0, fraction=0.5)
    z = torch.randn(8, 4)
    linear = nn.Linear(4, 6)
    varied = lambda latent, labels=None: linear(latent)  # noqa: E731  images = W z: distances follow z
    ignores_z = lambda latent, labels=None: torch.zeros(latent.shape[0], 6) + latent.sum() * 0  # noqa: E731
    assert term.penalty(varied, varied(z), z, None, 0) < 10
    assert term.penalty(ignores_z, ignores_z(z), z, None, 0) > 1e4  # 1 / eps
    # the term pulls G towards using z: its gradient is non-zero for the weights
    term.penalty(varied, varied(z), z, None, 0).backward()
    assert linear.weight.grad.abs().sum() > 0
    with pytest.raises(GanCliError, match="diversity.fraction"):
        ModeSeeking(fraction=0.0)


def test_mode_seeking_trains_a_conditional_model(tmp_path: Path) -> None:
    metrics, initial, final = train_tiny(tmp_path, ["diversity=mode_seeking", "model.conditional=true"])
    assert math.isfinite(metrics["loss/g"])
    assert any(not torch.equal(initial[k], final[k]) for k in initial if initial[k].is_floating_point())


# ---------------------------------------------------------------- spectral norm


def top_singular_value(weight: Tensor) -> float:
    return torch.linalg.matrix_norm(weight.detach().flatten(1), ord=2).item()


@pytest.mark.parametrize("family, kwargs", [(mlp, {"hidden": [64, 32]}), (dcgan, {"ndf": 8}), (resnet, {"ndf": 8})])
def test_spectral_norm_keeps_the_top_singular_value_at_one(family, kwargs) -> None:
    torch.manual_seed(0)
    D = family.Discriminator(channels=1, image_size=32, spectral_norm=True, num_classes=4, **kwargs)
    assert D(torch.randn(4, 1, 32, 32), torch.arange(4)).shape == (4,)
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    with torch.no_grad():
        for layer in layers:
            for _ in range(100):  # each training-mode read of the weight is one power iteration
                weight = layer.weight
            assert top_singular_value(weight) == pytest.approx(1.0, abs=0.01)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())  # dcgan drops them with SN


def test_spectral_norm_is_off_by_default_for_mlp_and_dcgan_and_on_for_resnet() -> None:
    for name, expected in (("mlp", False), ("dcgan", False), ("resnet", True)):
        cfg = validate(compose_train([f"model={name}", "dataset=cifar10"]))
        assert cfg.model.discriminator.spectral_norm is expected


# ---------------------------------------------------------------- EMA of G


class TinyBatchNormG(nn.Module):
    """Linear then BatchNorm, with the generator interface the EMA samples through."""

    z_dim, num_classes = 2, 0

    def __init__(self) -> None:
        super().__init__()
        self.linear, self.norm = nn.Linear(2, 3), nn.BatchNorm1d(3)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(self.linear(z))


def test_ema_follows_g_before_start_then_averages_with_its_own_batchnorm_statistics() -> None:
    generator = TinyBatchNormG()
    inputs = lambda count, noise: (torch.randn(count, 2, device=noise.device, generator=noise),)  # noqa: E731
    ema = GeneratorEMA(generator, inputs, decay=0.9, start_step=10, bn_samples=64)
    assert ema.module is not generator and not any(p.requires_grad for p in ema.module.parameters())
    first = generator.linear.weight.detach().clone()
    with torch.no_grad():
        generator.linear.weight.add_(1.0)
    generator(torch.randn(16, 2))  # training-mode forward moves BatchNorm's running statistics
    ema.update(step=3)  # before start_step: a copy, statistics included
    assert torch.equal(ema.module.linear.weight, generator.linear.weight)
    assert torch.equal(ema.module.norm.running_mean, generator.norm.running_mean)
    with torch.no_grad():
        generator.linear.weight.copy_(first)
    ema.update(step=10)
    average = ema.module
    assert torch.allclose(average.linear.weight, 0.9 * (first + 1) + 0.1 * first)
    # The statistics are those of the average's own pre-BatchNorm activations on the fixed noise,
    # not G's (which describe G's weights).
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    hidden = average.linear(z)
    assert torch.allclose(average.norm.running_mean, hidden.mean(0), atol=1e-6)
    assert torch.allclose(average.norm.running_var, hidden.var(0), atol=1e-5)
    assert not average.training and average.norm.momentum == generator.norm.momentum
    before = average.norm.running_mean.clone()
    assert torch.equal(ema.module.norm.running_mean, before)  # re-estimated once per update, not per read


def test_ema_with_zero_decay_is_g_itself() -> None:
    generator = nn.Linear(2, 2)
    ema = GeneratorEMA(generator, decay=0.0)
    ema.update(step=5)
    assert ema.module is generator
    with pytest.raises(GanCliError, match="ema.decay"):
        GeneratorEMA(generator, decay=1.0)


def test_ema_state_round_trips() -> None:
    generator = nn.Linear(2, 2)
    ema = GeneratorEMA(generator, decay=0.5)
    with torch.no_grad():
        generator.weight.add_(1.0)
    ema.update(step=1)
    restored = GeneratorEMA(nn.Linear(2, 2), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.module.weight, ema.module.weight)


# ---------------------------------------------------------------- DiffAugment


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_diffaugment_keeps_shape_and_passes_gradients(policy: str) -> None:
    torch.manual_seed(0)
    images = (torch.rand(6, 3, 16, 16) * 2 - 1).requires_grad_(True)
    out = DiffAugment(policy)(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    out.square().sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert not torch.equal(out.detach(), images.detach())
    if "color" not in policy:  # translation and cutout only move pixels or set them to 0
        assert out.min() >= -1 and out.max() <= 1
    else:  # brightness +-0.5, saturation x2, contrast x1.5 around the mean: bounded by 11
        assert out.abs().max() <= 11


def test_diffaugment_empty_policy_is_the_identity_and_unknown_names_fail() -> None:
    images = torch.randn(2, 1, 8, 8)
    assert DiffAugment("")(images) is images
    with pytest.raises(GanCliError, match="augment.policy.*rotate"):
        DiffAugment("color,rotate")


def test_translation_shifts_whole_images_and_cutout_zeroes_one_square() -> None:
    torch.manual_seed(1)
    ones = torch.ones(32, 1, 16, 16)
    shifted = translation(ones, ratio=0.125)  # up to 2 pixels: rows/columns of zeros at the edge
    zero_rows = (shifted[:, 0] == 0).all(dim=2).sum(1)  # (B,)
    zero_cols = (shifted[:, 0] == 0).all(dim=1).sum(1)
    assert zero_rows.max() <= 2 and zero_cols.max() <= 2 and (zero_rows + zero_cols).sum() > 0
    assert set(shifted.unique().tolist()) <= {0.0, 1.0}
    holes = (cutout(ones, ratio=0.5) == 0).sum(dim=(1, 2, 3))  # an 8x8 square, maybe cut by the edge
    assert holes.max() <= 64 and holes.min() >= 16
    assert torch.equal(translation(ones, ratio=0.0), ones)


# ---------------------------------------------------------------- SNGAN ResNet


def test_resnet_at_32_is_the_sngan_cifar_layout() -> None:
    generator = resnet.Generator(z_dim=128, channels=3, image_size=32, ngf=16)
    discriminator = resnet.Discriminator(channels=3, image_size=32, ndf=16)
    assert len(generator.blocks) == 3 and len(discriminator.blocks) == 4
    assert [block.downsample for block in discriminator.blocks] == [True, True, False, False]
    images = generator(torch.randn(5, 128))
    assert images.shape == (5, 3, 32, 32) and images.abs().max() <= 1
    assert discriminator(images).shape == (5,)
    assert any(isinstance(m, nn.BatchNorm2d) for m in generator.modules())
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Sigmoid)) for m in discriminator.modules())


def test_resnet_config_defaults_and_sizes() -> None:
    cfg = validate(compose_train(["model=resnet", "dataset=cifar10"]))
    assert (cfg.model.z_dim, cfg.model.generator.ngf, cfg.model.discriminator.ndf) == (128, 256, 128)
    small = resnet.Generator(z_dim=8, channels=1, image_size=28, ngf=8)  # MNIST as is: 7x7, 2 blocks
    assert len(small.blocks) == 2 and small(torch.randn(2, 8)).shape == (2, 1, 28, 28)
    with pytest.raises(GanCliError, match="model resnet cannot build dataset.image_size=30"):
        resnet.Generator(image_size=30)


# ---------------------------------------------------------------- conditional models


FAMILIES = {
    "mlp": (mlp, {"hidden": [32]}, {"hidden": [32]}),
    "dcgan": (dcgan, {"ngf": 8}, {"ndf": 8}),
    "resnet": (resnet, {"ngf": 8}, {"ndf": 8}),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_conditional_models_depend_on_the_labels(name: str) -> None:
    family, g_kwargs, d_kwargs = FAMILIES[name]
    torch.manual_seed(0)
    G = family.Generator(z_dim=8, channels=1, image_size=28, num_classes=10, **g_kwargs).eval()
    D = family.Discriminator(channels=1, image_size=28, num_classes=10, **d_kwargs).eval()
    assert (G.z_dim, G.num_classes, D.num_classes) == (8, 10, 10)
    z = torch.randn(4, 8)
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    images = G(z, zeros)
    assert images.shape == (4, 1, 28, 28)
    assert not torch.allclose(images, G(z, ones))
    assert D(images, zeros).shape == (4,)
    assert not torch.allclose(D(images, zeros), D(images, ones))
    with pytest.raises(ValueError, match="labels"):
        G(z)
    with pytest.raises(ValueError, match="labels"):
        D(images)


@pytest.mark.parametrize("name", FAMILIES)
def test_unconditional_models_ignore_labels(name: str) -> None:
    family, g_kwargs, d_kwargs = FAMILIES[name]
    G = family.Generator(z_dim=8, channels=1, image_size=28, num_classes=10, conditional=False, **g_kwargs).eval()
    D = family.Discriminator(channels=1, image_size=28, num_classes=10, conditional=False, **d_kwargs).eval()
    z, labels = torch.randn(3, 8), torch.tensor([0, 1, 2])
    assert G.num_classes == D.num_classes == 0
    assert torch.equal(G(z, labels), G(z))
    assert torch.equal(D(G(z), labels), D(G(z)))


@pytest.mark.parametrize("model", [m for m in options("model") if m not in NOT_Z_TO_IMAGE_MODELS])
def test_model_conditional_switches_each_family_from_the_config(model: str) -> None:
    overrides = [f"model={model}", "dataset=fake", "model.conditional=true"]
    if model == "stylegan2":
        overrides += ["model.channel_base=56", "model.channel_max=8", "model.w_dim=8"]
    elif model != "mlp":
        overrides += ["model.generator.ngf=8", "model.discriminator.ndf=8"]
    cfg = validate(compose_train(overrides))
    G, D = instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)
    assert G.num_classes == D.num_classes == cfg.dataset.num_classes == 10
    labels = torch.arange(3)
    assert D(G(torch.randn(3, G.z_dim), labels), labels).shape == (3,)


def test_conditional_without_labelled_data_names_the_keys(tmp_path: Path) -> None:
    with pytest.raises(GanCliError, match="model.conditional=true.*dataset.num_classes"):
        validate(compose_train(["dataset=folder", f"dataset.root={tmp_path}", "model.conditional=true"]))


# ---------------------------------------------------------------- config groups


@pytest.mark.parametrize("group", ["reg", "augment", "diversity"])
def test_every_reg_and_augment_option_instantiates(group: str) -> None:
    for option in options(group):
        component = instantiate(validate(compose_train([f"{group}={option}"]))[group])
        assert component is not None


def test_defaults_change_nothing_and_presets_follow_the_papers() -> None:
    cfg = validate(compose_train([]))
    images = torch.randn(2, 1, 28, 28)
    assert instantiate(cfg.augment)(images) is images
    assert isinstance(instantiate(cfg.reg), NoRegularizer)
    assert isinstance(instantiate(cfg.ema, nn.Linear(2, 2)), GeneratorEMA)
    rmsprop = validate(compose_train(["optim=rmsprop"]))
    optimizer = instantiate(rmsprop.optim.d)([nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.RMSprop) and optimizer.defaults["lr"] == pytest.approx(5e-5)
    assert instantiate(validate(compose_train(["loss=wgan_gp"])).loss).gp_weight == 10.0


def test_mnist_quick_is_the_measured_recipe_and_trains(tmp_path: Path) -> None:
    """The preset the MNIST acceptance run uses: conditional DCGAN, half-width D, EMA, mode seeking,
    a wall-clock budget under 10 minutes. Two steps of it on synthetic MNIST-shaped data."""
    cfg = validate(compose_train(["experiment=mnist_quick", "trainer.device=cpu"]))
    assert cfg.model.conditional and cfg.model.discriminator.ndf == 32
    assert cfg.loss._target_.endswith("NonSaturatingLoss")
    assert cfg.diversity._target_ == "gan_cli.components.diversity.ModeSeeking" and cfg.ema.decay > 0
    assert cfg.trainer.time_limit_minutes < 10
    quick = [*TINY_FAKE, "experiment=mnist_quick", "dataset.num_classes=10", "trainer.max_steps=2",
             "eval.enabled=false", "ema.start_step=1"]
    metrics = train(compose_train(quick), run_dir=tmp_path)
    assert metrics["steps"] == 2 and math.isfinite(metrics["loss/g"])
