"""The numbers gan-eval reports, on features (N, D) and class predictions: each function is one
paper's definition, written out where no maintained library fits (FD, KD and IS come from
torchmetrics, as in training; gan_cli/evaluate/metrics.py).

Distances are Euclidean between feature vectors (or pixels, for memorization), computed in
chunks with torch.cdist so 10k x 60k pairs never sit in memory at once; a `progress` bar, when
given, advances by each chunk's rows.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from gan_cli.evaluate.metrics import RANK_LOCAL
from gan_cli.reporting.progress import TaskProgress

LOCAL: dict[str, Any] = dict(RANK_LOCAL)  # gan-eval's metrics never sync across processes
CHUNK = 2048  # query rows per cdist call: 2048 x 60k floats = 0.5 GB at most


def nearest(queries: Tensor, points: Tensor, k: int = 1, skip_self: bool = False,
            progress: TaskProgress | None = None) -> tuple[Tensor, Tensor]:
    """Distances (Q, k) and indices (Q, k) of each query's k nearest points, ascending. With
    `skip_self` the queries are `points` themselves and each one's zero distance to itself is dropped."""
    extra = int(skip_self)
    distances, indices = [], []
    for start in range(0, queries.shape[0], CHUNK):
        block = torch.cdist(queries[start : start + CHUNK].float(), points.float())  # (q, P)
        values, where = block.topk(k + extra, dim=1, largest=False)
        distances.append(values[:, extra:])
        indices.append(where[:, extra:])
        if progress is not None:
            progress.advance(block.shape[0])
    return torch.cat(distances), torch.cat(indices)


def kth_radius(features: Tensor, k: int, progress: TaskProgress | None = None) -> Tensor:
    """(N,) distance of each point to its k-th nearest neighbour in its own set (itself excluded)."""
    return nearest(features, features, k, skip_self=True, progress=progress)[0][:, -1]


def within_any_ball(queries: Tensor, centers: Tensor, radii: Tensor, progress: TaskProgress | None = None) -> Tensor:
    """(Q,) how many of the balls (centers, radii) hold each query."""
    counts = []
    for start in range(0, queries.shape[0], CHUNK):
        block = torch.cdist(queries[start : start + CHUNK].float(), centers.float())  # (q, C)
        counts.append((block <= radii[None]).sum(1))
        if progress is not None:
            progress.advance(block.shape[0])
    return torch.cat(counts)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, progress: TaskProgress | None = None
                     ) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall
    Metric for Assessing Generative Models"): the real manifold is the union of balls around each
    real feature reaching its k-th nearest real neighbour (k = 3 in the paper); precision is the
    share of fakes inside it, recall the share of reals inside the fakes' manifold built the same way."""
    precision = (within_any_ball(fake, real, kth_radius(real, k, progress), progress) > 0).float().mean()
    recall = (within_any_ball(real, fake, kth_radius(fake, k, progress), progress) > 0).float().mean()
    return {"precision": float(precision), "recall": float(recall)}


def density_coverage(real: Tensor, fake: Tensor, k: int = 5, progress: TaskProgress | None = None
                     ) -> dict[str, float]:
    """Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
    Generative Models"; k = 5 as they recommend). Density = 1/(k M) sum over fakes of how many real
    k-NN balls hold it (about 1 for fakes distributed as the reals, above 1 when they crowd dense
    real regions); coverage = share of real balls that hold at least one fake."""
    radii = kth_radius(real, k, progress)
    density = within_any_ball(fake, real, radii, progress).float().sum() / (k * fake.shape[0])
    nearest_fake = nearest(real, fake, 1, progress=progress)[0][:, 0]  # (N,) each real's nearest fake
    coverage = (nearest_fake <= radii).float().mean()
    return {"density": float(density), "coverage": float(coverage)}


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """FD of two feature sets (torchmetrics' FID with the identity as its extractor): NaN with
    fewer than two of either, whose covariance is undefined."""
    if min(real.shape[0], fake.shape[0]) < 2:
        return math.nan
    identity = nn.Identity()
    identity.num_features = real.shape[1]  # type: ignore[assignment]  # torchmetrics sizes its state from this
    metric = FrechetInceptionDistance(feature=identity, **LOCAL)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kernel_distance(real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> float:
    """KD (KID's unbiased MMD with the cubic polynomial kernel, Binkowski et al. 2018), torchmetrics."""
    identity = nn.Identity()
    identity.num_features = real.shape[1]  # type: ignore[assignment]
    size = min(subset_size, real.shape[0], fake.shape[0])
    with warnings.catch_warnings():  # "will save all extracted features in buffer": intended
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=identity, subsets=subsets, subset_size=size, **LOCAL)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # subsets from the global RNG: the same seed, the same number
        torch.manual_seed(seed)
        return float(metric.compute()[0])


def inception_score(logits: Tensor, splits: int = 10, seed: int = 0) -> float:
    """IS = exp(E_x KL(p(y|x) || p(y))) over `splits` splits (Salimans et al. 2016), from class
    logits (torchmetrics). In the dataset classifier's classes it is the "MNIST score" (max = classes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        metric = InceptionScore(feature=nn.Identity(), splits=splits, **LOCAL)
    metric.update(logits.float())
    with torch.random.fork_rng(devices=[]):  # it shuffles before splitting
        torch.manual_seed(seed)
        return float(metric.compute()[0])


def class_shares(predicted: Tensor, classes: int) -> list[float]:
    """Share of the samples the classifier puts in each class (a missing class reads 0)."""
    return (torch.bincount(predicted, minlength=classes).float() / max(predicted.numel(), 1)).tolist()


def fd_per_class(real: Tensor, real_labels: Tensor, fake: Tensor, fake_classes: Tensor, classes: int) -> list[float]:
    """FD of each class's samples (by the classifier's reading) to that class's real images:
    mode collapse inside a class shows as a high FD there; NaN where a class has < 2 samples."""
    return [frechet_distance(real[real_labels == c], fake[fake_classes == c]) for c in range(classes)]


@dataclass
class Memorization:
    share: float  # of the samples closer to a training image than `threshold`
    threshold: float  # the chosen quantile of training images' distances to their nearest other training image
    distances: Tensor  # (N,) each sample's distance to its nearest training image
    neighbours: Tensor  # (N,) the index of that training image


def memorization(samples: Tensor, train: Tensor, quantile: float = 0.01, probe: int = 2000) -> Memorization:
    """Nearest-neighbour copy test in pixel space ([0, 1] pixels, flattened): a sample counts as
    memorized when its nearest training image is closer than training images are to each other,
    i.e. below the `quantile` (1%) of the distances from `probe` training images to their nearest
    other training image. Real held-out images score about `quantile` by construction."""
    train_flat = train.flatten(1).float() / 255  # (T, C*H*W)
    rows = torch.randperm(train_flat.shape[0], generator=torch.Generator().manual_seed(0))[:probe]
    with TaskProgress("memorization: nearest training images", len(rows) + samples.shape[0]) as progress:
        own = nearest(train_flat[rows], train_flat, 1, skip_self=True, progress=progress)[0][:, 0]
        distances, neighbours = nearest(samples.flatten(1).float() / 255, train_flat, 1, progress=progress)
    # skip_self drops the closest point, itself (distance 0); an exact duplicate in the data also
    # reads 0, so only positive distances define "how close two different training images are".
    threshold = float(torch.quantile(own[own > 0], quantile)) if bool((own > 0).any()) else 0.0
    distances, neighbours = distances[:, 0], neighbours[:, 0]
    return Memorization(float((distances < threshold).float().mean()), threshold, distances, neighbours)
