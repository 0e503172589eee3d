"""StyleGAN2: its layers against hand computations, its regularizers on tiny models, the w average
through EMA, checkpoint and resume, and the presets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from gan_cli.components.diversity import PathLength
from gan_cli.components.ema import GeneratorEMA
from gan_cli.core.config import validate
from gan_cli.core.errors import GanCliError
from gan_cli.loop.train import train
from gan_cli.models.dcgan import Generator as DcganGenerator
from gan_cli.models.stylegan2 import CENTER_LATENTS, Discriminator, Generator
from gan_cli.models.stylegan2_layers import ModulatedConv2d
from gan_cli.sampling.latent_tools import layer_groups
from tests.conftest import TINY_FAKE, compose_train, run_cli

# A tiny StyleGAN2 (widths 8) for a few steps on fake 28 px data.
TINY_SG = [o for o in TINY_FAKE if "ngf" not in o and "ndf" not in o] + [
    "model=stylegan2", "model.z_dim=8", "model.w_dim=8", "model.mapping_layers=1", "model.channel_base=56",
    "model.channel_max=8", "trainer.batch_size=8",
]


def tiny_generator(**kwargs) -> Generator:
    return Generator(z_dim=8, w_dim=8, channel_base=56, channel_max=8, mapping_layers=1, **kwargs)


def test_modulated_conv_matches_per_sample_weights_computed_by_hand() -> None:
    torch.manual_seed(0)
    conv = ModulatedConv2d(3, 4, 3, w_dim=5)
    x, w = torch.randn(2, 3, 6, 6), torch.randn(2, 5)
    styles = conv.affine(w)  # (2, 3)
    for sample in range(2):
        weight = conv.weight / math.sqrt(3 * 9) * styles[sample][None, :, None, None]  # modulate: (4, 3, 3, 3)
        weight = weight / weight.square().sum(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()  # demodulate
        expected = F.conv2d(x[sample:sample + 1], weight, padding=1)
        torch.testing.assert_close(conv(x, w)[sample:sample + 1], expected, rtol=1e-4, atol=1e-5)


def test_demodulation_keeps_unit_variance_for_any_style_scale() -> None:
    torch.manual_seed(0)
    conv = ModulatedConv2d(64, 64, 3, w_dim=16)
    with torch.no_grad():
        conv.affine.bias.fill_(25.0)  # styles ~25: without demodulation the output std would be ~25
    x = torch.randn(8, 64, 16, 16)
    inner = x[:, :, 1:-1, 1:-1]  # border pixels see zero padding
    assert conv(x, torch.randn(8, 16))[:, :, 1:-1, 1:-1].std().item() == pytest.approx(inner.std().item(), rel=0.05)
    plain = ModulatedConv2d(64, 64, 3, w_dim=16, demodulate=False)
    with torch.no_grad():
        plain.affine.bias.fill_(25.0)
    assert plain(x, torch.randn(8, 16)).std().item() > 10


def test_upsampling_conv_and_sizes_follow_the_dataset() -> None:
    for size, first in ((28, 7), (32, 4), (64, 4)):
        generator = tiny_generator(image_size=size, channels=3, num_classes=0)
        assert generator.synthesis.ws_resolutions[0] == first
        assert generator(torch.randn(2, 8)).shape == (2, 3, size, size)
        assert Discriminator(channels=3, image_size=size, channel_base=56, channel_max=8,
                             minibatch_std=2)(torch.randn(2, 3, size, size)).shape == (2,)
    assert layer_groups([7, 7, 14, 14, 14, 28, 28, 28]) == {"coarse": [0, 1], "middle": [2, 3, 4], "fine": [5, 6, 7]}
    assert layer_groups([4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32])["coarse"] == [0, 1, 2, 3, 4]


def test_w_avg_moves_in_training_only_and_truncation_pulls_to_it() -> None:
    torch.manual_seed(0)
    generator = tiny_generator(style_mixing_prob=0.0)
    z = torch.randn(4, 8)
    generator.eval()
    generator(z)
    assert generator.w_avg.abs().sum() == 0  # eval forwards leave it alone
    generator.train()
    generator(z)
    expected = generator.mapping(z, None).mean(0) * (1 - generator.w_avg_beta)
    torch.testing.assert_close(generator.w_avg, expected.detach())
    generator.eval()
    at_zero = generator.mapping_ws(z, None, truncation=0.0)
    assert torch.equal(at_zero, generator.w_avg.expand_as(at_zero))


def test_conditional_truncation_pulls_each_class_to_its_own_mean_w() -> None:
    """psi 0 on a conditional G: every latent of class c draws class c's mean w (over the fixed
    centre latents), so classes stay apart; the global w_avg is not used."""
    torch.manual_seed(0)
    generator = tiny_generator(num_classes=3).eval()
    z, labels = torch.randn(6, 8), torch.tensor([2, 0, 2, 1, 0, 1])
    at_zero = generator.mapping_ws(z, labels, truncation=0.0)[:, 0]  # (6, w_dim)
    centre_z = torch.randn(CENTER_LATENTS, 8, generator=torch.Generator().manual_seed(0))
    for c in range(3):
        expected = generator.mapping(centre_z, torch.full((CENTER_LATENTS,), c)).mean(0)
        for row in (labels == c).nonzero().flatten():
            torch.testing.assert_close(at_zero[row], expected)
    assert not torch.allclose(at_zero[1], at_zero[0])  # class 0's centre is not class 2's
    half = generator.mapping_ws(z, labels, truncation=0.5)[:, 0]
    torch.testing.assert_close(half, (generator.mapping(z, labels) + at_zero) / 2)


def test_style_mixing_swaps_the_later_layers_with_the_configured_probability() -> None:
    torch.manual_seed(0)
    generator = tiny_generator(style_mixing_prob=1.0)
    z = torch.randn(4, 8)
    ws = generator.mapping_ws(z, None)
    mixed = generator.mix(ws, z, None)
    same = [torch.equal(mixed[:, i], ws[:, i]) for i in range(generator.num_ws)]
    cutoff = same.index(False)
    assert cutoff >= 1 and all(same[:cutoff]) and not any(same[cutoff:])  # one crossover, later layers new
    assert torch.equal(tiny_generator(style_mixing_prob=0.0).mix(ws, z, None), ws)
    with pytest.raises(GanCliError, match="style_mixing_prob"):
        tiny_generator(style_mixing_prob=1.5)


def test_path_length_is_lazy_tracks_its_mean_and_trains_the_synthesis() -> None:
    torch.manual_seed(0)
    generator = tiny_generator()
    term = PathLength(weight=2.0, every_n_steps=4, batch_shrink=2)
    z = torch.randn(8, 8)
    assert term.penalty(generator, generator(z), z, None, 3) is None
    penalty = term.penalty(generator, generator(z), z, None, 4)
    assert penalty is not None and penalty.item() > 0
    assert 0 < generator.pl_mean.item()  # 0.01 of the first mean length
    penalty.backward()
    assert generator.synthesis.blocks[0].conv0.conv.weight.grad.abs().sum() > 0
    assert generator.mapping.net[0].weight.grad.abs().sum() > 0
    with pytest.raises(GanCliError, match="path_length needs a generator with a mapping network"):
        term.penalty(DcganGenerator(z_dim=8, ngf=4), torch.zeros(2, 1, 28, 28), torch.randn(2, 8), None, 0)


def test_ema_copies_w_avg_and_has_no_batchnorm_to_estimate() -> None:
    generator = tiny_generator()
    ema = GeneratorEMA(generator, inputs=None, decay=0.9, start_step=0)  # no BatchNorm: no input sampler needed
    with torch.no_grad():
        generator.w_avg.fill_(3.0)
        generator.pl_mean.fill_(2.0)
    ema.update(5)
    assert torch.equal(ema.module.w_avg, generator.w_avg) and ema.module.pl_mean.item() == 2.0
    assert ema.module is not generator


def test_stylegan2_trains_and_resumes_with_its_state(tmp_path: Path) -> None:
    """lazy R1 + path length + mixing for 4 steps, then 2 more from the checkpoint: the same
    weights, w_avg and pl_mean as 6 steps in one go."""
    regs = [*TINY_SG, "reg=r1", "reg.every_n_steps=2", "diversity=path_length", "diversity.every_n_steps=2",
            "ema.start_step=0", "trainer.ckpt_every_n_steps=2"]
    train(compose_train([*regs, "trainer.max_steps=4"]), run_dir=tmp_path / "a")
    state = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)
    generator, average = state["networks"]["generator"], state["averages"]["generator"]
    assert generator["w_avg"].abs().sum() > 0 and generator["pl_mean"] > 0
    assert torch.equal(average["w_avg"], generator["w_avg"])  # the EMA copy samples with G's w average
    resumed = compose_train([*regs, "trainer.max_steps=6", "trainer.resume=auto"])
    train(resumed, run_dir=tmp_path / "a")
    train(compose_train([*regs, "trainer.max_steps=6"]), run_dir=tmp_path / "b")
    for kind in ("networks", "averages"):
        one = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)[kind]["generator"]
        two = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)[kind]["generator"]
        for key in ("w_avg", "pl_mean", "synthesis.const"):
            torch.testing.assert_close(one[key], two[key], msg=f"{kind}.{key} after resume")


def test_presets_compose_and_match_their_sources(tmp_path: Path) -> None:
    cifar = validate(compose_train(["experiment=cifar10_stylegan2"]))
    assert (cifar.model.mapping_layers, cifar.model.discriminator.minibatch_std, cifar.reg.gamma) == (2, 32, 0.01)
    assert cifar.model.style_mixing_prob == 0 and cifar.diversity._target_.endswith("NoDiversityTerm")
    generator = instantiate(cifar.model.generator)
    assert generator.synthesis.const.shape == (512, 4, 4) and generator(torch.randn(1, 512), torch.tensor([3])).shape \
        == (1, 3, 32, 32)
    assert not instantiate(cifar.model.discriminator).blocks[0].skip  # 'orig' D: no residual skips
    mnist = [*TINY_FAKE, "experiment=mnist_stylegan2", "dataset.num_classes=10", "trainer.max_steps=2",
             "eval.enabled=false", "trainer.batch_size=8"]
    mnist = [o for o in mnist if "ngf" not in o and "ndf" not in o]
    cfg = validate(compose_train(mnist))
    assert cfg.model.conditional and cfg.trainer.time_limit_minutes == 17.5
    assert cfg.model.style_mixing_prob == 0 and cfg.diversity._target_.endswith("ModeSeeking")
    generator, discriminator = instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)
    assert [block.conv1.conv.weight.shape[0] for block in generator.synthesis.blocks] == [32, 16]  # 14, 28 px
    assert generator.synthesis.const.shape[0] == 64 and not discriminator.blocks[0].skip
    metrics = train(cfg, run_dir=tmp_path)
    assert metrics["steps"] == 2 and math.isfinite(metrics["loss/g"])



@pytest.mark.slow  # two gan-train and one gan-sample subprocesses: ~30 s on the loaded 2-core CPU
def test_gan_train_stylegan2_resumes_and_gan_sample_draws_from_it(tmp_path: Path) -> None:
    args = [*TINY_SG, "reg=r1", "diversity=path_length", "diversity.every_n_steps=2", "hydra.run.dir=run"]
    run_cli("gan-train", [*args, "trainer.max_steps=2"], cwd=tmp_path)
    resumed = run_cli("gan-train", [*args, "trainer.max_steps=4", "trainer.resume=auto"], cwd=tmp_path)
    assert "resumed from" in resumed.stderr + resumed.stdout
    state = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert state["step"] == 4 and state["averages"]["generator"]["w_avg"].abs().sum() > 0
    run_cli("gan-sample", ["checkpoint=run/checkpoints/last.pt", "seeds=0-3", "truncation=0.5", "out=s.png"],
            cwd=tmp_path)
    assert (tmp_path / "s.png").is_file()
