"""Scores of images against their targets (super-resolution, paired translation)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from gan_cli.evaluate.metrics import Evaluator, predicted_labels


def pixel_scores(images: Tensor, targets: Tensor, batch: int) -> dict[str, float]:
    """PSNR (dB), SSIM, MSE and L1 (mean absolute error) of uint8 images against uint8 targets
    (N, C, H, W), on [0, 1] pixels, each image scored alone and the scores averaged (the SR and
    pix2pix papers' convention), `batch` images at a time."""
    psnr: list[Tensor] = []
    ssim: list[Tensor] = []
    mse: list[Tensor] = []
    l1: list[Tensor] = []
    for image, target in zip(images.split(batch), targets.split(batch), strict=True):
        image, target = image.float() / 255, target.float() / 255
        psnr.append(peak_signal_noise_ratio(image, target, data_range=1.0, reduction="none", dim=(1, 2, 3)))
        similarity = structural_similarity_index_measure(image, target, data_range=1.0, reduction="none")
        assert isinstance(similarity, Tensor)  # a tuple only with return_full_image / return_contrast_sensitivity
        ssim.append(similarity)
        mse.append((image - target).pow(2).mean((1, 2, 3)))
        l1.append((image - target).abs().mean((1, 2, 3)))
    return {name: float(torch.cat(values).mean()) for name, values in (("psnr", psnr), ("ssim", ssim), ("mse", mse),
                                                                    ("l1", l1))}


class AgainstTargets:
    """The scores of images that each have a target (super-resolution, paired translation):
    `pixel_scores` against each one's target, FD / KD of all of them against the reference set in
    `features`, and, on labelled data, the share the classifier reads as the target's label
    (reported as `labels_key`)."""

    def __init__(self, features: Evaluator, targets: Tensor, labels: Tensor | None, batch: int,
                 device: torch.device, labels_key: str):
        self.features, self.targets, self.labels = features, targets, labels
        self.batch, self.device, self.labels_key = batch, device, labels_key

    def __call__(self, images: Tensor) -> dict[str, float]:
        values = {f"metrics/{k}": v for k, v in pixel_scores(images, self.targets, self.batch).items()}
        if self.features.enabled:
            scored = self.features.score(images)
            values.update({k: scored[k] for k in (self.features.fd_name, self.features.kd_name)})
        if self.features.classifier is not None and self.labels is not None:
            predicted = predicted_labels(self.features.classifier, images, self.batch, self.device)
            values[self.labels_key] = float((predicted == self.labels).float().mean())
        return values
