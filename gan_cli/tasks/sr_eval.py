"""How super-resolution is scored (task=srgan), on the first `eval.num_samples` HR test images,
whose LR versions (antialiased bicubic, as in training) the EMA generator upscales:

    metrics/psnr, metrics/ssim   PSNR (dB) and SSIM of each SR image against its HR image, on
                                 [0, 1] pixels of the uint8 outputs, averaged over images (torchmetrics)
    metrics/mse                  mean squared error on those [0, 1] pixels
    metrics/fd_classifier        Frechet distance of the SR images to the real test images in the
                                 feature classifier's space (metrics/fid with eval.features=inception);
                                 metrics/kd_classifier likewise
    metrics/accuracy             labelled datasets: the share of SR images the classifier reads as
                                 their true class
    metrics/*_bicubic            the same for plain bicubic upsampling of the same LR images: the
                                 baseline, computed once

best.pt minimizes the Frechet distance (perceptual quality is what the adversarial term buys),
or metrics/mse where no feature extractor is available (an unlabelled folder without Inception
weights).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import Tensor

from gan_cli.data.datasets import ImageData, to_float, to_uint8
from gan_cli.data.lowres import bicubic, downsample
from gan_cli.evaluate.metrics import Evaluator, timed
from gan_cli.evaluate.pixels import AgainstTargets
from gan_cli.tasks.adversarial import mapped

log = logging.getLogger("gan_cli")

Upscale = Callable[[Tensor], Tensor]  # [-1, 1] LR images -> [-1, 1] SR images


class SrEvaluation:
    def __init__(self, cfg: DictConfig, train: ImageData, test: ImageData, upscale: Upscale, scale: int,
                 device: torch.device):
        self.upscale, self.device, self.batch, self.scale = upscale, device, cfg.eval.batch_size, scale
        count = min(cfg.eval.num_samples, test.images.shape[0])
        self.hr, self.labels = test.images[:count], test.labels[:count] if test.num_classes else None
        self.lr = torch.cat([downsample(to_float(chunk).to(device), self.scale).cpu()
                             for chunk in self.hr.split(self.batch)])  # (N, C, h, w) in [-1, 1]
        self.features = Evaluator(cfg, train, device, test=test)  # FD against the whole test split
        self.primary = self.features.fd_name if self.features.enabled else "metrics/mse"
        self.scores = AgainstTargets(self.features, self.hr, self.labels, self.batch, device, "metrics/accuracy")
        bicubic_images = to_uint8(torch.cat([bicubic(chunk, self.scale) for chunk in self.lr.split(self.batch)]))
        self.baseline = {f"{name}_bicubic": value for name, value in self.scores(bicubic_images).items()}


    def evaluate(self, step: int) -> dict[str, float]:
        return timed(step, lambda: self.scores(mapped(lambda lr: to_uint8(self.upscale(lr)), self.lr, self.batch,
                                                      self.device)),
                     lambda k, v: f"{k.removeprefix('metrics/')}={v:.4g} (bicubic {self.baseline[k + '_bicubic']:.4g})")
