"""Pixel-level scores of images against their targets (super-resolution, paired translation)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


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
