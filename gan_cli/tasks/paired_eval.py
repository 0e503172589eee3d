"""How a paired translation (task=pix2pix) is scored, on the first `eval.num_samples` test pairs,
whose inputs the EMA generator translates:

    metrics/fd_classifier   Frechet distance of the outputs to the targets of the whole test split
                            in the feature classifier's space (trained on the target images;
                            metrics/fid with eval.features=inception); metrics/kd_classifier likewise
    metrics/l1, psnr, ssim, mse   each output against its own target, on [0, 1] pixels (pixels.py)
    metrics/label_kept      labelled data: the share of outputs the classifier reads as their
                            pair's true label (a sharp completion of a 3 into an 8 scores badly here)
    baseline/*_input        the same for doing nothing (the input as it is), computed once

best.pt minimizes the Frechet distance (sharpness is what the adversarial term buys), or
metrics/l1 where no feature extractor is available (an unlabelled folder without Inception weights).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import Tensor

from gan_cli.data.datasets import ImageData, to_float, to_uint8
from gan_cli.data.paired import Pairs
from gan_cli.evaluate.metrics import Evaluator, dataset_key, timed
from gan_cli.evaluate.pixels import AgainstTargets
from gan_cli.tasks.adversarial import mapped

Translate = Callable[[Tensor], Tensor]  # [-1, 1] inputs -> [-1, 1] outputs


class PairedEvaluation:
    def __init__(self, cfg: DictConfig, pairs: Pairs, translate: Translate, device: torch.device, cache_name: str):
        self.translate, self.device, self.batch = translate, device, cfg.eval.batch_size
        count = min(cfg.eval.num_samples, pairs.test_a.shape[0])
        self.inputs, self.targets = pairs.test_a[:count], pairs.test_b[:count]
        self.labels = pairs.test_labels[:count] if pairs.test_labels is not None else None
        train = ImageData(pairs.train_b, _labels(pairs.train_labels, pairs.train_b), pairs.num_classes)
        test = ImageData(pairs.test_b, _labels(pairs.test_labels, pairs.test_b), pairs.num_classes)
        # The target images are what the classifier learns and the reference it scores against: for
        # pairs made from a dataset (B = the image) that is the dataset's own cached classifier.
        self.features = Evaluator(cfg, train, device, test=test, name=dataset_key(cfg.dataset) + cache_name)
        self.primary = self.features.fd_name if self.features.enabled else "metrics/l1"
        self.scores = AgainstTargets(self.features, self.targets, self.labels, self.batch, device, "metrics/label_kept")
        same_shape = self.inputs.shape[1:] == self.targets.shape[1:]  # colorize: 1-channel in, 3 out
        self.baseline = {f"baseline/{k.removeprefix('metrics/')}_input": v
                         for k, v in self.scores(self.inputs).items()} if same_shape else {}


    def evaluate(self, step: int) -> dict[str, float]:
        def outputs() -> Tensor:
            return mapped(lambda images: to_uint8(self.translate(to_float(images))), self.inputs, self.batch,
                          self.device)

        def shown(key: str, value: float) -> str:
            name = key.removeprefix("metrics/")
            doing_nothing = self.baseline.get(f"baseline/{name}_input")
            return f"{name}={value:.4g}" + ("" if doing_nothing is None else f" (input {doing_nothing:.4g})")

        return timed(step, lambda: self.scores(outputs()), shown)


def _labels(labels: Tensor | None, images: Tensor) -> Tensor:
    return labels if labels is not None else torch.zeros(images.shape[0], dtype=torch.long)
