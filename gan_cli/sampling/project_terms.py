"""What gan-project minimizes: how far G's images are from the targets on the masked pixels, as
a pixel term (MSE) plus a perceptual term in the dataset's own feature classifier (the SmallCNN
gan-train's metrics and gan-eval use, evaluate/classifier.py): LPIPS's recipe (unit-normalized
activations of each stage, squared differences, spatial mean, summed over stages) on that
network's three convolution stages instead of VGG's, or LPIPS itself from a weights file
(`lpips=FILE`, sampling/lpips.py). Both see only masked images, so pixels outside the mask never
reach the loss.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from gan_cli.core.config import build
from gan_cli.core.errors import GanCliError
from gan_cli.data.datasets import ImageData
from gan_cli.evaluate import classifier
from gan_cli.evaluate.classifier import SmallCNN
from gan_cli.evaluate.metrics import cache_dir, dataset_key, load_test_split

log = logging.getLogger("gan_cli")


class PerceptualFeatures(Protocol):
    """[-1, 1] images -> activations per stage; `weights`: each stage's per-channel weights
    (1, C, 1, 1), or None for equal weights."""

    @property
    def weights(self) -> Sequence[Tensor] | None: ...

    def __call__(self, images: Tensor) -> list[Tensor]: ...


class StageFeatures(nn.Module):
    """The classifier's activations after each ReLU of its body: [-1, 1] float images (B, C, H, W)
    -> [(B, 32, H/2, W/2), (B, 64, H/4, W/4), (B, 128, H/8, W/8)]; frozen, eval mode."""

    def __init__(self, network: SmallCNN):
        super().__init__()
        self.body = network.body.eval().requires_grad_(False)

    @property
    def weights(self) -> None:
        """The classifier's stages count equally."""
        return None

    def forward(self, images: Tensor) -> list[Tensor]:
        stages, x = [], images
        for layer in self.body:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                stages.append(x)
        return stages


def unit(features: Tensor) -> Tensor:
    """LPIPS's normalization: each position's feature vector scaled to unit length."""
    return features / (features.square().sum(1, keepdim=True).sqrt() + 1e-10)


class FitLoss:
    """Per-image distance (B,) between G's images and their targets on the masked pixels.
    `targets` (N, C, H, W) in [-1, 1] and `masks` (N or 1, 1, H, W) of 0/1; each image being
    scored names its target by row (`rows`). Target features are computed once."""

    def __init__(self, targets: Tensor, masks: Tensor, features: PerceptualFeatures | None, pixel_weight: float,
                 perceptual_weight: float):
        self.masks = masks.expand(len(targets), -1, -1, -1)
        self.targets = targets * self.masks  # what is outside the mask is gone here, before anything reads it
        self.features, self.pixel_weight, self.perceptual_weight = features, pixel_weight, perceptual_weight
        self.counted = (self.masks.sum((1, 2, 3)) * targets.shape[1]).clamp(min=1)  # (N,) constrained values
        with torch.no_grad():
            self.target_stages = [unit(f) for f in features(self.targets)] if features and perceptual_weight else []

    def __call__(self, images: Tensor, rows: Tensor) -> Tensor:
        # Scored as written: clamped to [-1, 1] as to_uint8 clamps (a StyleGAN has no tanh), with
        # the gradient passed straight through, so a pixel beyond the range still feels its target.
        images = images + (images.clamp(-1.0, 1.0) - images).detach()
        masks = self.masks[rows]
        masked = images * masks  # (B, C, H, W)
        loss = self.pixel_weight * (masked - self.targets[rows]).square().sum((1, 2, 3)) / self.counted[rows]
        if self.target_stages:
            assert self.features is not None
            stages = self.features(masked)
            weights = self.features.weights or [torch.ones(()) for _ in stages]
            for stage, target, weight in zip(stages, self.target_stages, weights, strict=True):
                distance = ((unit(stage) - target[rows]).square() * weight).sum(1).mean((1, 2))
                loss = loss + self.perceptual_weight * distance
        return loss


def perceptual_features(cfg: DictConfig, train_cfg: DictConfig, device: torch.device) -> PerceptualFeatures:
    """gan-project's and gan-draw's perceptual network: LPIPS from `cfg.lpips` when given, else the
    dataset's feature classifier (cached, or trained now)."""
    if cfg.lpips:
        from gan_cli.sampling.lpips import load_lpips

        return load_lpips(str(cfg.lpips), device)
    return StageFeatures(load_classifier(train_cfg, cfg.root, cfg.classifier_epochs, cfg.cache_dir, device)).to(device)


def load_classifier(train_cfg: DictConfig, root: str | None, epochs: int, cache: str | None,
                    device: torch.device) -> SmallCNN:
    """The dataset's feature classifier, from the cache gan-train and gan-eval share (the same key:
    dataset options and recipe), or trained now on the dataset (once, then cached)."""
    dataset = OmegaConf.create(OmegaConf.to_container(train_cfg.dataset, resolve=True))
    assert isinstance(dataset, DictConfig)
    if root is not None:
        dataset.root = root
    if dataset.num_classes < 2:
        raise GanCliError(f"perceptual_weight>0 needs the feature classifier of dataset {dataset.name}, which has "
                          f"{dataset.num_classes} classes (it needs >= 2): set perceptual_weight=0 (pixels only)")
    node = OmegaConf.create({"dataset": OmegaConf.to_container(dataset), "eval": {"cache_dir": cache}})
    path = cache_dir(node) / f"{dataset_key(dataset)}_classifier_e{epochs}.pt"
    if path.is_file():
        return cached_classifier(path, dataset.channels, dataset.num_classes, device)
    log.info("the perceptual term needs dataset %s's feature classifier: training it (once; cached at %s)",
             dataset.name, path)
    train = build(dataset)
    if not isinstance(train, ImageData):
        raise GanCliError(f"dataset {dataset.name} is no labelled image dataset: set perceptual_weight=0")
    test = load_test_split(dataset)
    return classifier.load_or_train(path, train, test if test is not None else train, device, epochs=epochs)


def cached_classifier(path: Path, channels: int, classes: int, device: torch.device) -> SmallCNN:
    state = torch.load(path, map_location=device, weights_only=True)
    network = SmallCNN(channels, classes).to(device)
    network.load_state_dict(state["model"])
    return network.eval().requires_grad_(False)
