"""One judge per dataset: loads the real data, the feature extractor and the dataset classifier
once, then scores any set of images with the metrics `metrics=[...]` names. Each metric is a
function in METRICS (name -> function of the judge and the scored images -> values); adding one
is adding a function and a name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchvision.utils import save_image

from gan_cli.core.config import build
from gan_cli.core.errors import GanCliError
from gan_cli.data.datasets import ImageData
from gan_cli.evaluate import classifier, measures, usefulness
from gan_cli.evaluate.classifier import ClassifierFeatures, SmallCNN
from gan_cli.evaluate.metrics import (
    METRIC_NAMES,
    REFERENCE_LIMIT,
    InceptionFeatures,
    MetricUnavailable,
    cache_dir,
    dataset_key,
    load_test_split,
)
from gan_cli.evaluate.sources import Judged, load_images
from gan_cli.reporting.progress import TaskProgress

log = logging.getLogger("gan_cli")


@dataclass
class Scored:
    """The judged images and what the judge reads from them, each computed once."""

    judged: Judged
    features: Tensor  # (N, D) in the chosen feature space
    logits: Tensor  # (N, classes) of the dataset classifier
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def predicted(self) -> Tensor:
        return self.logits.argmax(1)


def eval_node(cfg: DictConfig, dataset: DictConfig) -> DictConfig:
    """The training config's shape that gan_cli.evaluate.metrics reads (eval.*, dataset.*)."""
    keys = ("features", "inception_weights", "batch_size", "classifier_epochs", "cache_dir")
    return OmegaConf.create({"dataset": OmegaConf.to_container(dataset, resolve=True),
                             "eval": {key: cfg[key] for key in keys}})


class Judge:
    def __init__(self, cfg: DictConfig, dataset: DictConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.node = eval_node(cfg, dataset)
        self.train: ImageData = build(dataset)
        if not isinstance(self.train, ImageData) or self.train.num_classes < 2:
            raise GanCliError(f"dataset {dataset.name}: gan-eval needs a labelled image dataset (>= 2 classes)")
        test = load_test_split(dataset)  # None for datasets without one (folder, fake): the training images
        self.test: ImageData = test if test is not None else self.train
        self.reference = self._reference(dataset)
        self.cache = cache_dir(self.node)
        key = dataset_key(self.node.dataset)
        path = self.cache / f"{key}_classifier_e{cfg.classifier_epochs}.pt"  # the one gan-train's metrics use
        self.classifier: SmallCNN = classifier.load_or_train(path, self.train, self.test, device,
                                                             epochs=cfg.classifier_epochs)
        self.classifier_accuracy = float(torch.load(path, map_location="cpu", weights_only=True)["test_accuracy"])
        self.usefulness_cache = self.cache / f"{key}_usefulness"
        self.extractor, self.logit_model = self._extractors()
        self.fd_name, self.kd_name = (name.removeprefix("metrics/") for name in METRIC_NAMES[cfg.features])
        self.last: Scored | None = None
        self.reference_features = self.batched(self.extractor, self.reference.images, "features of the reference")
        self.reference_logits = self.batched(self.logit_model, self.reference.images, "classes of the reference")
        self.recipe = usefulness.Recipe(cfg.usefulness.steps, cfg.usefulness.batch_size)

    def _reference(self, dataset: DictConfig) -> ImageData:
        """`reference=`: null -> the test split (at most 10k images, as in training), else images
        (their class folders or arr_1 give fd_per_class its real classes)."""
        if self.cfg.reference is None:
            rows = torch.randperm(len(self.test.images), generator=torch.Generator().manual_seed(0))[:REFERENCE_LIMIT]
            return ImageData(self.test.images[rows], self.test.labels[rows], self.test.num_classes)
        judged = load_images(self.cfg.reference, dataset.channels, dataset.image_size)
        labels = judged.labels if judged.labels is not None else torch.zeros(len(judged.images), dtype=torch.long)
        return ImageData(judged.images, labels, self.train.num_classes)

    def _extractors(self) -> tuple[nn.Module, nn.Module]:
        """(features, logits for IS): the dataset classifier's, or InceptionV3's pool and logits."""
        if self.cfg.features == "classifier":
            return ClassifierFeatures(self.classifier), self.classifier
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            logits = NoTrainInceptionV3(name="inception-v3-compat", features_list=["logits_unbiased"],
                                        feature_extractor_weights_path=self.cfg.inception_weights).to(self.device)
            pool = InceptionFeatures(self.cfg.inception_weights).to(self.device)
        except (MetricUnavailable, OSError, RuntimeError, ValueError) as err:
            raise GanCliError(f"features=inception: {err}") from None
        rgb = lambda images: logits(images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images)
        return pool, rgb  # type: ignore[return-value]

    @torch.no_grad()
    def batched(self, model: Callable[[Tensor], Tensor], images: Tensor, title: str) -> Tensor:
        """`model` over uint8 `images` (N, C, H, W) a batch at a time, with a progress bar; on the CPU."""
        outputs = []
        with TaskProgress(title, images.shape[0]) as progress:
            for chunk in images.split(self.cfg.batch_size):
                outputs.append(model(chunk.to(self.device)).float().cpu())
                progress.advance(chunk.shape[0])
        return torch.cat(outputs)

    def score(self, judged: Judged) -> dict[str, Any]:
        """Every metric of `metrics=[...]` for these images, as one flat dict."""
        scored = Scored(judged, self.batched(self.extractor, judged.images, "features of the samples"),
                        self.batched(self.classifier, judged.images, "classes of the samples"))
        values: dict[str, Any] = {"num_images": len(judged.images)}
        for name in self.cfg.metrics:
            log.info("gan-eval: %s of %s", name, judged.name)
            values.update(METRICS[name](self, scored))
        self.last = scored  # the copies grid reads its memorization result
        return values


def fd(judge: Judge, scored: Scored) -> dict[str, Any]:
    return {judge.fd_name: measures.frechet_distance(judge.reference_features, scored.features)}


def kd(judge: Judge, scored: Scored) -> dict[str, Any]:
    settings = judge.cfg
    return {judge.kd_name: measures.kernel_distance(judge.reference_features, scored.features,
                                                    settings.kid_subsets, settings.kid_subset_size, settings.seed)}


def inception_score(judge: Judge, scored: Scored) -> dict[str, Any]:
    logits = scored.logits if judge.cfg.features == "classifier" else \
        judge.batched(judge.logit_model, scored.judged.images, "Inception classes of the samples")
    return {"inception_score": measures.inception_score(logits, seed=judge.cfg.seed)}


def prdc(judge: Judge, scored: Scored) -> dict[str, Any]:
    real, fake = judge.reference_features, scored.features
    count, reals = fake.shape[0], real.shape[0]  # nearest-neighbour passes: rows of each, as measures.py runs them
    with TaskProgress("precision, recall, density, coverage", 4 * reals + 3 * count) as progress:
        return {**measures.precision_recall(real, fake, judge.cfg.prdc.pr_k, progress),
                **measures.density_coverage(real, fake, judge.cfg.prdc.dc_k, progress)}


def classes(judge: Judge, scored: Scored) -> dict[str, Any]:
    count = judge.train.num_classes
    shares = measures.class_shares(scored.predicted, count)
    values: dict[str, Any] = {
        "class_shares": shares, "class_share_max_dev": max(abs(s - 1 / count) for s in shares),
        "fd_per_class": measures.fd_per_class(judge.reference_features, judge.reference.labels, scored.features,
                                              scored.predicted, count),
    }
    if scored.judged.labels is not None:  # conditional samples: read as the class asked?
        values["as_asked"] = float((scored.predicted == scored.judged.labels).float().mean())
    return values


def memorization(judge: Judge, scored: Scored) -> dict[str, Any]:
    settings = judge.cfg.memorization
    found = measures.memorization(scored.judged.images, judge.train.images, settings.quantile, settings.probe)
    scored.extra["copies"] = found
    return {"memorized": found.share, "memorization_threshold": found.threshold,
            "nearest_train_distance_median": float(found.distances.median())}


def cas(judge: Judge, scored: Scored) -> dict[str, Any]:
    labels, source = (scored.judged.labels, "asked") if scored.judged.labels is not None else \
        (scored.predicted, "classifier")  # unconditional samples: labelled by the dataset classifier
    samples = ImageData(scored.judged.images, labels, judge.train.num_classes)
    return {"cas": usefulness.classification_accuracy_score(samples, judge.test, judge.device, judge.recipe),
            "cas_labels": source, "classifier_accuracy": judge.classifier_accuracy}


def augment_gain(judge: Judge, scored: Scored) -> dict[str, Any]:
    labels = scored.judged.labels if scored.judged.labels is not None else scored.predicted
    samples = ImageData(scored.judged.images, labels, judge.train.num_classes)
    settings = judge.cfg.usefulness
    values = usefulness.augmentation_gain(samples, judge.train, judge.test, judge.device, judge.recipe,
                                          list(settings.percents), list(settings.seeds), judge.usefulness_cache)
    return {**values, "augment_gain": {f"{k:g}": values[f"augment_gain_k{k:g}"] for k in settings.percents}}


METRICS: dict[str, Callable[[Judge, Scored], dict[str, Any]]] = {
    "fd": fd, "kd": kd, "is": inception_score, "prdc": prdc, "classes": classes,
    "memorization": memorization, "cas": cas, "augment_gain": augment_gain,
}


def copies_grid(found: measures.Memorization, images: Tensor, train: Tensor, path: Path, count: int = 16) -> None:
    """The `count` samples nearest to a training image, each beside that image (sample, train, ...)."""
    order = found.distances.argsort()[:count]
    pairs = torch.stack([images[order], train[found.neighbours[order]]], 1).flatten(0, 1)  # (2k, C, H, W)
    save_image(pairs.float() / 255, path, nrow=8, padding=2, pad_value=0.5)

