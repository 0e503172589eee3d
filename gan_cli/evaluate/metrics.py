"""FID and KID in the training loop, from torchmetrics (no hand-written Frechet or MMD math).

    evaluator = Evaluator(cfg, train_data, device)  # once, before the loop (trains/loads caches)
    values = evaluator.evaluate(draw_images, step)   # {"metrics/fd_classifier", ...}; {} when off

The task decides which images are scored (samples of G, translated test images: gan_cli/tasks/);
`evaluator.primary_metric` is the Frechet distance that best.pt and searches minimize.

Features come from one extractor per run (`eval.features`): `inception`, the standard FID
InceptionV3 (torch-fidelity's port of the TF graph, run through torchmetrics), or `classifier`, a
small CNN gan-cli trains on the dataset's training split (gan_cli/evaluate/classifier.py). Features are
extracted once per image and fed to both metrics, whose `feature` module is then the identity.

The names say which feature space a distance was measured in: `metrics/fid` and `metrics/kid`
only for Inception features, the ones published FIDs use; in the classifier's features they are
`metrics/fd_classifier` and `metrics/kd_classifier`, on their own scale (docs/families.md: the MNIST floor).

The reference is the dataset's test split (torchvision datasets), or the training images for
datasets without one (`fake`, `folder`), at most 10k images. The classifier and the reference
features are cached per dataset (its options and resolved root: `dataset_key`) and extractor in the
user's cache, `$XDG_CACHE_HOME/gan_cli` (`~/.cache/gan_cli`), or in `eval.cache_dir`: never in the
dataset folder, which may be shared or read-only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypedDict

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from gan_cli.core.config import plain_dict
from gan_cli.core.sizes import image_shape
from gan_cli.data.datasets import ImageData, load_torchvision
from gan_cli.evaluate import classifier
from gan_cli.evaluate.classifier import ClassifierFeatures, save_atomic

log = logging.getLogger("gan_cli")

REFERENCE_LIMIT = 10_000  # reference images: the MNIST/CIFAR test split is exactly this
INCEPTION_TAG = "v3-pool2048"  # torchmetrics' "inception-v3-compat", 2048 pool features
# (Frechet distance, kernel distance) names per feature space.
METRIC_NAMES = {
    "inception": ("metrics/fid", "metrics/kid"),
    "classifier": ("metrics/fd_classifier", "metrics/kd_classifier"),
}

# A reference's FID and KID, holding its features: score() measures samples against each one.
ReferenceMetrics = tuple[FrechetInceptionDistance, KernelInceptionDistance]

class MetricSync(TypedDict):
    """torchmetrics' options for where a metric's state is synchronized."""

    sync_on_compute: bool
    dist_sync_on_step: bool
    distributed_available_fn: Callable[[], bool]


# Only rank 0 evaluates (it holds every sample it scores), so the metrics must never sync their
# state across the process group: torchmetrics would otherwise gather from ranks that are in the
# training loop's all_reduce, and the job fails or deadlocks under torchrun.
RANK_LOCAL = MetricSync(sync_on_compute=False, dist_sync_on_step=False, distributed_available_fn=lambda: False)


class MetricUnavailable(Exception):
    """The feature extractor cannot be had here (no weights offline, library missing)."""


def load_test_split(dataset: DictConfig) -> ImageData | None:
    """The test split of a torchvision dataset option (one with `dataset_class`), else None."""
    if not dataset.get("dataset_class"):
        return None
    options = {k: v for k, v in plain_dict(dataset).items() if k != "_target_"}
    return load_torchvision(**options, train=False)


def cache_dir(cfg: DictConfig) -> Path:
    if cfg.eval.cache_dir:
        return Path(cfg.eval.cache_dir).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "gan_cli"


def classifier_path(cfg: DictConfig, name: str) -> Path:
    """The feature classifier of the images cached as `name` (dataset_key), by its recipe."""
    return cache_dir(cfg) / f"{name}_classifier_e{cfg.eval.classifier_epochs}.pt"


def dataset_key(dataset: DictConfig) -> str:
    """`<name>_<C>x<S>_<hash of the options that change the images>`, e.g. mnist_1x28_3f09a1c2, or
    `<name>_<C>x<H>x<W>_<hash>` for a non-square size (faces_3x48x64_...): a file name, no brackets."""
    # the same images either way (in_memory and its siblings: dataset=converted's way of reading them)
    options = {k: v for k, v in plain_dict(dataset).items()
               if k not in ("download", "hflip", "in_memory", "memory_budget_gb", "num_workers")}
    root = options.get("root")
    options["root"] = str(Path(root).expanduser().resolve()) if root else ""
    digest = hashlib.sha1(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:8]
    height, width = image_shape(dataset.image_size)
    size = str(height) if height == width else f"{height}x{width}"
    return f"{dataset.name}_{dataset.channels}x{size}_{digest}"


class InceptionFeatures(nn.Module):
    """uint8 (B, 1|3, H, W) -> (B, 2048) pool features of the FID InceptionV3."""

    num_features = 2048

    def __init__(self, weights: str | None):
        super().__init__()
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            # antialias=False: torch-fidelity's TF1-compatible resize, as in the published FID numbers
            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                          feature_extractor_weights_path=weights, antialias=False)
        except ModuleNotFoundError as err:
            raise MetricUnavailable(f"{err}: pip install torch-fidelity, or use eval.features=classifier") from None
        except (OSError, RuntimeError, ValueError, KeyError) as err:  # offline (URLError), bad path or file
            where = f"eval.inception_weights={weights}" if weights else "no network to download them"
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise MetricUnavailable(
                f"no InceptionV3 weights ({where}: {reason}). Pass eval.inception_weights=PATH to "
                "weights-inception-2015-12-05-6726825d.pth, or use eval.features=classifier"
            ) from None

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images)


class Evaluator:
    """FID, KID and class coverage of a generator against the cached reference features."""

    def __init__(self, cfg: DictConfig, train: ImageData, device: torch.device, test: ImageData | None = None,
                 name: str | None = None):
        """`test`: the reference images (default: the dataset's test split, else `train`); `name`:
        the cache key of these images (default: from the dataset config)."""
        self.settings, self.device = cfg.eval, device
        # FID keeps float64 statistics: on the GPU when there is one, else on the CPU (MPS has no float64).
        self.metric_device = device if device.type == "cuda" else torch.device("cpu")
        self.enabled, self.reason = bool(cfg.eval.enabled), "eval.enabled=false"
        self.classifier: classifier.SmallCNN | None = None
        self.total_seconds = self.setup_seconds = 0.0
        self.fd_name, self.kd_name = METRIC_NAMES[cfg.eval.features]
        self.primary_metric = self.fd_name  # lower is better: picks best.pt, what a search minimizes
        if not self.enabled:
            return
        started = time.perf_counter()
        test = test if test is not None else load_test_split(cfg.dataset)
        self.name = name or dataset_key(cfg.dataset)
        builders: dict[str, Callable[[], tuple[nn.Module, str]]] = {
            "classifier": lambda: self._classifier_features(cfg, train, test),
            "inception": lambda: (InceptionFeatures(cfg.eval.inception_weights).to(device), INCEPTION_TAG),
        }
        try:
            self.extractor, tag = builders[cfg.eval.features]()
        except MetricUnavailable as err:  # said once; the run goes on without metrics
            self.enabled, self.reason = False, f"eval.features={cfg.eval.features}: {err}"
            log.warning("metrics off for this run: %s", self.reason)
            return
        reference = test if test is not None else train
        self.reference_data = reference  # what the distances are to: a task may score a subset of it too
        # Named after the extractor's exact weights: a retrained classifier gets a new reference.
        path = cache_dir(cfg) / f"{self.name}_{cfg.eval.features}_{tag}_reference.pt"
        self.reference_features = self._reference_features(reference, path, tag)
        self.fid, self.kid = self._metrics(self.reference_features)
        self.setup_seconds = time.perf_counter() - started

    def _classifier_features(
        self, cfg: DictConfig, train: ImageData, test: ImageData | None
    ) -> tuple[nn.Module, str]:
        if train.num_classes < 2:
            raise MetricUnavailable(
                f"the classifier needs >= 2 classes, the dataset has {train.num_classes}: use eval.features=inception"
            )
        # One classifier per dataset and recipe, whatever the run's seed: FIDs of runs are comparable.
        path = classifier_path(cfg, self.name)
        self.classifier = classifier.load_or_train(
            path, train, test if test is not None else train, self.device, epochs=cfg.eval.classifier_epochs
        )
        return ClassifierFeatures(self.classifier), hashlib.sha1(path.read_bytes()).hexdigest()[:8]

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """uint8 images (N, C, H, W), any device -> features (N, D) on the metrics' device, in batches."""
        batch = self.settings.batch_size
        return torch.cat([self.extractor(images[i : i + batch].to(self.device)).float().to(self.metric_device)
                          for i in range(0, images.shape[0], batch)])

    def _reference_features(self, data: ImageData, path: Path, tag: str) -> Tensor:
        if path.is_file():
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached["extractor"] == tag:
                return cached["features"].to(self.metric_device)
        count = min(data.images.shape[0], REFERENCE_LIMIT)
        rows = torch.randperm(data.images.shape[0], generator=torch.Generator().manual_seed(0))[:count]
        log.info("eval: reference features of %d images -> %s", count, path)
        features = self.features(data.images[rows.to(data.images.device)])
        save_atomic({"features": features.cpu(), "extractor": tag}, path)
        return features

    def _metrics(self, reference: Tensor) -> ReferenceMetrics:
        """Both metrics hold the reference once (reset_real_features=False) and see features, not
        images: their `feature` module is the identity."""
        identity = nn.Identity()
        # FID sizes its state from this; torch types a Module's attributes as Tensor | Module
        identity.num_features = reference.shape[1]  # type: ignore[assignment]
        fid = FrechetInceptionDistance(feature=identity, reset_real_features=False, **RANK_LOCAL)
        subset_size = min(self.settings.kid_subset_size, reference.shape[0], self.settings.num_samples)
        with warnings.catch_warnings():  # "KID will save all extracted features in buffer": intended
            warnings.simplefilter("ignore", UserWarning)
            kid = KernelInceptionDistance(feature=identity, subsets=self.settings.kid_subsets,
                                          subset_size=subset_size, reset_real_features=False, **RANK_LOCAL)
        fid, kid = fid.to(self.metric_device), kid.to(self.metric_device)
        fid.update(reference, real=True)
        kid.update(reference, real=True)
        return fid, kid

    def reference_metrics(self, images: Tensor) -> ReferenceMetrics:
        """FID and KID against uint8 reference `images` (not cached), for `score(..., also=)`."""
        return self._metrics(self.features(images))

    def score(self, images: Tensor, also: Mapping[str, ReferenceMetrics] | None = None) -> dict[str, float]:
        """Metrics of uint8 images (N, C, H, W) against the reference, and against each reference of
        `also` (from reference_metrics) as `<fd name><suffix>`: the features are extracted once."""
        values = self.distances(images, {"": (self.fid, self.kid), **(also or {})})
        if self.classifier is not None:
            values["metrics/class_coverage_max_dev"] = self.class_coverage(images)[1]
        return values

    def distances(self, images: Tensor, references: Mapping[str, ReferenceMetrics]) -> dict[str, float]:
        """FD and KD of uint8 images (N, C, H, W) to each of `references`, as `<fd name><suffix>`
        (the reference of this evaluator is `(self.fid, self.kid)`), from one feature pass."""
        features = self.features(images)
        values: dict[str, float] = {}
        for suffix, (fid, kid) in references.items():
            fid.reset()  # drops the previous fake statistics, keeps the reference
            kid.reset()
            fid.update(features, real=False)
            kid.update(features, real=False)
            with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global RNG: not the run's
                torch.manual_seed(0)
                kid_mean, _ = kid.compute()
            values |= {self.fd_name + suffix: float(fid.compute()), self.kd_name + suffix: float(kid_mean)}
        return values

    @torch.no_grad()
    def class_coverage(self, images: Tensor) -> tuple[list[float], float]:
        """Fraction of images per predicted class, and its largest deviation from uniform."""
        assert self.classifier is not None
        batch, classes = self.settings.batch_size, self.classifier.head.out_features
        predicted = predicted_labels(self.classifier, images, batch, self.device)
        fractions = torch.bincount(predicted, minlength=classes).float() / predicted.numel()
        return fractions.tolist(), float((fractions - 1.0 / classes).abs().max())

    def evaluate(self, make_images: Callable[[], Tensor], step: int) -> dict[str, float]:
        """Metrics of the uint8 images (N, C, H, W) that `make_images` draws (timed with them), plus
        `perf/eval_seconds`; {} when the metrics are off."""
        if not self.enabled:
            return {}
        values = timed(step, lambda: self.score(make_images()))
        self.total_seconds += values["perf/eval_seconds"]
        return values


@torch.no_grad()
def predicted_labels(classifier: nn.Module, images: Tensor, batch: int, device: torch.device) -> Tensor:
    """The class the feature classifier reads in each uint8 image (N, C, H, W), on the CPU."""
    return torch.cat([classifier(chunk.to(device)).argmax(1).cpu() for chunk in images.split(batch)])


def timed(step: int, compute: Callable[[], dict[str, float]],
          shown: Callable[[str, float], str] = lambda key, value: f"{key.removeprefix('metrics/')}={value:.4g}",
          ) -> dict[str, float]:
    """Every evaluation's wrapper: `compute()`'s metrics, timed, logged as one line (`shown`
    writes each value), plus `perf/eval_seconds`."""
    started = time.perf_counter()
    values = compute()
    seconds = time.perf_counter() - started
    log.info("eval at step %d: %s (%.1f s)", step, "  ".join(shown(k, v) for k, v in values.items()), seconds)
    return {**values, "perf/eval_seconds": seconds}
