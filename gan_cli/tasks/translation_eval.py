"""How a translation (A -> B, B -> A) is scored, for every direction:

    metrics/fd_classifier_a2b  FD of G_ab(test A) against test B, in the feature space of the target
                             domain's extractor (eval.features=classifier: one trained on domain B;
                             inception: metrics/fid_a2b); likewise kd_classifier / kid
    metrics/label_kept_a2b   share of G_ab(test A) the target classifier reads as the source's true
                             label (a cycle-consistent G may still swap digits: this catches it)
    metrics/ink_ratio_a2b    mean pixel value of G_ab(test A) / that of test B (1 = as much ink)
    baseline/*_a2b           the same numbers for doing nothing (test A as it is), computed once

`metrics/fd_classifier_mean` (`metrics/fid_mean`), the mean of both directions' FD, is what
best.pt minimizes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import Tensor

from gan_cli.data.datasets import ImageData, to_float, to_uint8
from gan_cli.data.domains import Domains
from gan_cli.evaluate.metrics import Evaluator, dataset_key, predicted_labels, timed
from gan_cli.tasks.adversarial import mapped

log = logging.getLogger("gan_cli")

Translate = Callable[[str, Tensor], Tensor]  # (direction, [-1, 1] images) -> [-1, 1] images


class TranslationEvaluation:
    def __init__(self, cfg: DictConfig, domains: Domains, translate: Translate, device: torch.device):
        self.translate, self.device, self.batch = translate, device, cfg.eval.batch_size
        count = cfg.eval.num_samples
        key = dataset_key(cfg.dataset)
        sides = (("a", domains.classifier_a or domains.train_a, domains.test_a, domains.cache_suffixes[0]),
                 ("b", domains.classifier_b or domains.train_b, domains.test_b, domains.cache_suffixes[1]))
        evaluators = {side: Evaluator(cfg, train, device, test=test, name=key + suffix)
                      for side, train, test, suffix in sides}
        # direction -> (source test images, target evaluator, target test images)
        self.directions: dict[str, tuple[ImageData, Evaluator, ImageData]] = {
            "a2b": (cut(domains.test_a, count), evaluators["b"], domains.test_b),
            "b2a": (cut(domains.test_b, count), evaluators["a"], domains.test_a),
        }
        self.fd_name = evaluators["a"].fd_name  # metrics/fd_classifier or metrics/fid
        self.primary = f"{self.fd_name}_mean"
        self.enabled = all(e.enabled for e in evaluators.values())
        self.baseline = {f"baseline/{k}": v for direction, (source, _, _) in self.directions.items()
                         for k, v in self.scores(direction, source.images).items()} if self.enabled else {}

    def scores(self, direction: str, images: Tensor) -> dict[str, float]:
        source, evaluator, target = self.directions[direction]
        values = {f"{name.removeprefix('metrics/')}_{direction}": value
                  for name, value in evaluator.score(images).items()}
        values[f"ink_ratio_{direction}"] = float(images.float().mean() / target.images.float().mean())
        if evaluator.classifier is not None:
            predicted = predicted_labels(evaluator.classifier, images, self.batch, self.device)
            values[f"label_kept_{direction}"] = float((predicted == source.labels.cpu()).float().mean())
        return values

    def evaluate(self, step: int) -> dict[str, float]:
        return timed(step, self.scores_of_both) if self.enabled else {}

    def scores_of_both(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for direction, (source, _, _) in self.directions.items():
            translated = mapped(lambda images: to_uint8(self.translate(direction, to_float(images))),  # noqa: B023
                                source.images, self.batch, self.device)
            values.update({f"metrics/{k}": v for k, v in self.scores(direction, translated).items()})
        values[self.primary] = (values[f"{self.fd_name}_a2b"] + values[f"{self.fd_name}_b2a"]) / 2
        return values


def cut(data: ImageData, count: int) -> ImageData:
    return ImageData(data.images[:count], data.labels[:count], data.num_classes)
