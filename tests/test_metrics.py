"""FID/KID through torchmetrics on classifier features: fake data, a tiny classifier, few samples."""

from __future__ import annotations

import logging
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from gan_cli.components.ema import GeneratorEMA
from gan_cli.core.config import build, validate
from gan_cli.core.errors import GanCliError
from gan_cli.data.datasets import ImageData
from gan_cli.evaluate import classifier
from gan_cli.evaluate.metrics import Evaluator, load_test_split
from gan_cli.tasks.image_gan import SampledEvaluation
from tests.conftest import compose_train, make_mnist

SMALL_EVAL = ["eval.num_samples=128", "eval.batch_size=64", "eval.classifier_epochs=1", "eval.kid_subsets=5",
              "eval.kid_subset_size=64"]
FAKE = ["dataset=fake", "dataset.num_samples=256", "dataset.image_size=16", "trainer.device=cpu",
        "model.generator.ngf=8", "model.discriminator.ndf=8", *SMALL_EVAL]
CPU = torch.device("cpu")


def eval_config(cache: Path, overrides: list[str] = ()) -> DictConfig:
    return validate(compose_train([*FAKE, f"eval.cache_dir={cache}", *overrides]))


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DictConfig, ImageData, Evaluator]]:
    """One classifier for the module: 100 steps on 16x16 images separate the fake classes."""
    cfg = eval_config(tmp_path_factory.mktemp("cache"))
    data = build(cfg.dataset)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(classifier, "MIN_STEPS", 100)
        yield cfg, data, Evaluator(cfg, data, CPU)


def shifted(images: torch.Tensor, amount: int) -> torch.Tensor:
    return (images.int() + amount).clamp(0, 255).to(torch.uint8)


def test_fid_of_the_reference_against_itself_is_zero_and_grows_with_a_shift(fake_run) -> None:
    _, data, evaluator = fake_run
    assert evaluator.enabled and evaluator.classifier is not None
    same = evaluator.score(data.images)  # fake has no test split: the training images are the reference
    small, large = evaluator.score(shifted(data.images, 30)), evaluator.score(shifted(data.images, 90))
    fd, kd = "metrics/fd_classifier", "metrics/kd_classifier"  # classifier features: not FID/KID
    assert abs(same[fd]) < 1e-3 * small[fd]  # same features: exactly the same statistics
    assert abs(same[kd]) < 0.2 * small[kd]  # KID's random subsets differ: noise only
    assert large[fd] > small[fd] > 0.1 and large[kd] > small[kd]


def test_score_also_measures_against_a_second_reference_from_the_same_features(fake_run) -> None:
    """text2image's `_asked` distance: one feature pass, each reference its own statistics."""
    _, data, evaluator = fake_run
    half = data.images[data.labels < 5]  # a subset of the reference, as the prompts' real digits are
    scored = evaluator.score(half, also={"_half": evaluator.reference_metrics(half)})
    fd = "metrics/fd_classifier"
    assert abs(scored[f"{fd}_half"]) < 1e-3 * scored[fd] and scored[fd] > 0.1  # same statistics: zero
    assert scored == pytest.approx(evaluator.score(half) | {k: v for k, v in scored.items() if k.endswith("_half")})
    assert evaluator.score(data.images)[fd] < 1e-3 < evaluator.score(data.images, also={
        "_half": evaluator.reference_metrics(half)})[f"{fd}_half"]  # and the first reference is kept


def test_classifier_learns_the_classes_and_reports_coverage(fake_run) -> None:
    _, data, evaluator = fake_run
    assert classifier.accuracy(evaluator.classifier, data, CPU) > 0.9
    fractions, max_dev = evaluator.class_coverage(data.images)
    assert len(fractions) == 10 and sum(fractions) == pytest.approx(1.0)
    true = torch.bincount(data.labels, minlength=10).float() / len(data.labels)
    assert max_dev == pytest.approx(float((true - 0.1).abs().max()), abs=0.05)
    one_class = data.images[data.labels == 3]
    assert evaluator.class_coverage(one_class)[1] > 0.8  # a collapsed generator: 100% of one class


def test_evaluate_draws_from_the_generator_in_eval_mode(fake_run) -> None:
    cfg, _, evaluator = fake_run
    generator = build(cfg.model.generator)
    generator.train()
    sampled = SampledEvaluation(evaluator, GeneratorEMA(generator, decay=0.0), cfg.eval)
    values = sampled.evaluate(step=10)
    assert set(values) == {"metrics/fd_classifier", "metrics/kd_classifier", "metrics/class_coverage_max_dev",
                           "perf/eval_seconds"}
    assert all(torch.isfinite(torch.tensor(v)) for v in values.values())
    assert values["metrics/fd_classifier"] > 1.0 and values["perf/eval_seconds"] > 0
    assert generator.training  # restored after sampling in eval mode
    again = sampled.evaluate(step=20)  # fixed latents: an unchanged G scores the same
    assert again["metrics/fd_classifier"] == pytest.approx(values["metrics/fd_classifier"], rel=1e-4)


def test_conditional_generator_gets_every_class(fake_run, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, evaluator = fake_run
    cfg = eval_config(Path(fake_run[0].eval.cache_dir), ["model.conditional=true", "eval.num_samples=100"])
    generator = build(cfg.model.generator)
    assert generator.num_classes == 10
    seen: list[torch.Tensor] = []
    forward = generator.forward
    generator.forward = lambda z, labels=None: seen.append(labels) or forward(z, labels)  # type: ignore[method-assign]
    scored: list[torch.Tensor] = []
    monkeypatch.setattr(evaluator, "score", lambda images: scored.append(images) or {})
    SampledEvaluation(evaluator, GeneratorEMA(generator, decay=0.0), cfg.eval).evaluate(step=1)
    assert scored[0].shape == (100, 1, 16, 16) and scored[0].dtype == torch.uint8
    assert torch.bincount(torch.cat(seen), minlength=10).tolist() == [10] * 10


def test_second_evaluator_loads_the_caches(fake_run, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, data, first = fake_run
    cache = Path(cfg.eval.cache_dir)
    assert len(list(cache.glob("fake_1x16_*_classifier_e1.pt"))) == 1
    assert len(list(cache.glob("fake_1x16_*_classifier_*_reference.pt"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")

    monkeypatch.setattr(classifier, "train_classifier", no_training)
    monkeypatch.setattr(Evaluator, "features", lambda self, images: pytest.fail("reference not cached"))
    second = Evaluator(cfg, data, CPU)
    assert torch.equal(second.reference_features, first.reference_features)


def test_other_datasets_get_their_own_cache(fake_run, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, _, _ = fake_run
    monkeypatch.setattr(classifier, "MIN_STEPS", 5)
    other = eval_config(Path(cfg.eval.cache_dir), ["dataset.num_samples=200"])
    Evaluator(other, build(other.dataset), CPU)
    assert len(list(Path(cfg.eval.cache_dir).glob("*_classifier_e1.pt"))) == 2


def test_test_split_of_torchvision_datasets(tmp_path: Path) -> None:
    root = make_mnist(tmp_path / "data", count=32)
    cfg = validate(compose_train([f"dataset.root={root}", "dataset.download=false"]))
    test, train = load_test_split(cfg.dataset), build(cfg.dataset)
    assert test is not None and test.images.shape == (32, 1, 28, 28)
    assert not torch.equal(test.images, train.images)  # t10k-* files, not train-*
    assert load_test_split(validate(compose_train(FAKE)).dataset) is None


def test_inception_offline_turns_metrics_off_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    try:  # no network here or anywhere: the download fails as it does offline
        import torch_fidelity.feature_extractor_inceptionv3 as inception

        def offline(*args, **kwargs):
            raise urllib.error.URLError("[Errno -2] Name or service not known")

        monkeypatch.setattr(inception, "load_state_dict_from_url", offline)
    except ImportError:
        pass  # without torch-fidelity the metric is off for that reason, the same way
    cfg = eval_config(tmp_path, ["eval.features=inception"])
    with caplog.at_level(logging.WARNING, logger="gan_cli"):
        evaluator = Evaluator(cfg, build(cfg.dataset), CPU)
        draw = lambda: pytest.fail("nothing is drawn when the metrics are off")  # noqa: E731
        assert evaluator.evaluate(draw, 1) == {} and evaluator.evaluate(draw, 2) == {}
    assert not evaluator.enabled
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "metrics off" in warnings[0].getMessage()
    assert "eval.inception_weights" in warnings[0].getMessage()
    assert evaluator.primary_metric == "metrics/fid"  # FID/KID: the names of Inception-feature distances


def test_metric_names_follow_the_feature_space(fake_run) -> None:
    _, _, evaluator = fake_run
    assert (evaluator.fd_name, evaluator.kd_name) == ("metrics/fd_classifier", "metrics/kd_classifier")
    assert evaluator.primary_metric == "metrics/fd_classifier"  # best.pt and searches (train.Outputs)


def test_classifier_training_shows_progress(caplog: pytest.LogCaptureFixture) -> None:
    data = build(validate(compose_train(FAKE)).dataset)
    with caplog.at_level(logging.INFO, logger="gan_cli"):
        classifier.train_classifier(data, CPU, epochs=1)  # MIN_STEPS of them: 1 epoch is 2 steps here
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("feature classifier")]
    assert len(lines) == 3  # not a terminal: a line at each quarter (a rich bar on a terminal)
    assert " epoch " in lines[0] and " loss " in lines[0] and "eta" in lines[0]


def test_missing_inception_weights_file_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("torch_fidelity")
    cfg = eval_config(tmp_path, ["eval.features=inception", f"eval.inception_weights={tmp_path / 'nope.pth'}"])
    with caplog.at_level(logging.WARNING, logger="gan_cli"):
        evaluator = Evaluator(cfg, build(cfg.dataset), CPU)
    assert not evaluator.enabled and "nope.pth" in evaluator.reason


def test_disabled_and_invalid_eval_config(tmp_path: Path) -> None:
    cfg = eval_config(tmp_path, ["eval.enabled=false"])
    assert Evaluator(cfg, build(cfg.dataset), CPU).evaluate(lambda: pytest.fail("drawn"), 1) == {}
    assert not any(tmp_path.iterdir())  # nothing trained, nothing cached
    with pytest.raises(GanCliError, match="eval.features"):
        eval_config(tmp_path, ["eval.features=vgg"])
    with pytest.raises(GanCliError, match="eval.num_samples"):
        eval_config(tmp_path, ["eval.num_samples=1"])
