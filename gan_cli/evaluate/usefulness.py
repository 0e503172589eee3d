"""What samples are worth as training data, measured with one fixed classifier recipe (the
SmallCNN of gan_cli/evaluate/classifier.py, Adam with a one-cycle schedule, `steps` updates of `batch_size`
images whatever the training set's size, so every variant gets the same compute):

  CAS, Classification Accuracy Score (Ravuri & Vinyals 2019, "Classification Accuracy Score for
      Conditional Generative Models"): trained on generated labelled samples alone, tested on the
      real test split. Near the real-data classifier's accuracy = samples as good as real data.
  augmentation gain: trained on k% of the real training split (a random, seeded subset) alone,
      with the generated samples added, and with classic augmentation instead (random affine:
      +-10 degrees, +-2 px shifts, 0.9-1.1 scale, as MNIST papers use); accuracy on the real test
      split, mean and spread over seeds. The real-only and classic runs do not depend on the samples
      and are cached per dataset, k, seed and recipe.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gan_cli.data.datasets import ImageData
from gan_cli.evaluate.classifier import SmallCNN, accuracy, save_atomic
from gan_cli.reporting.progress import TaskProgress

Augment = Callable[[Tensor, torch.Generator], Tensor]  # uint8 (B, C, H, W) -> uint8 (B, C, H, W)


@dataclass(frozen=True)
class Recipe:
    steps: int = 400  # updates, for every training set
    batch_size: int = 128
    lr: float = 3e-3

    @property
    def tag(self) -> str:
        return f"s{self.steps}b{self.batch_size}lr{self.lr:g}"


def random_affine(images: Tensor, noise: torch.Generator) -> Tensor:
    """Classic augmentation: per image a random rotation (+-10 deg), scale (0.9-1.1) and shift (+-2 px)."""
    count, _, height, _ = images.shape
    uniform = lambda low, high: torch.rand(count, generator=noise, device=noise.device) * (high - low) + low
    angle, scale = uniform(-math.pi / 18, math.pi / 18), uniform(0.9, 1.1)
    shift = 2.0 * 2 / height  # 2 px in affine_grid's [-1, 1] coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, uniform(-shift, shift)], 1),
                         torch.stack([sin, cos, uniform(-shift, shift)], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    moved = F.grid_sample(images.float(), grid.to(images.device), align_corners=False)  # zero padding: black
    return moved.round().clamp(0, 255).to(torch.uint8)


def train_fixed(data: ImageData, device: torch.device, recipe: Recipe, seed: int, title: str,
                augment: Augment | None = None) -> SmallCNN:
    """The fixed recipe on uint8 `data`: sampling with replacement-free per-pass permutations."""
    torch.manual_seed(seed)
    images, labels = data.images.to(device), data.labels.to(device)
    batch = min(recipe.batch_size, images.shape[0])
    model = SmallCNN(images.shape[1], data.num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.steps)
    order = torch.Generator(device=device).manual_seed(seed)
    per_pass = images.shape[0] // batch
    model.train()
    with TaskProgress(title, recipe.steps) as progress:
        for step in range(recipe.steps):
            if step % per_pass == 0:
                perm = torch.randperm(images.shape[0], device=device, generator=order)
            rows = perm[(step % per_pass) * batch : (step % per_pass + 1) * batch]
            inputs = images[rows] if augment is None else augment(images[rows], order)
            loss = F.cross_entropy(model(inputs), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if (step + 1) % 50 == 0 or step + 1 == recipe.steps:
                progress.advance(step + 1 - progress.done)
    return model.eval().requires_grad_(False)


def test_accuracy(train: ImageData, test: ImageData, device: torch.device, recipe: Recipe, seed: int, title: str,
                  augment: Augment | None = None) -> float:
    return accuracy(train_fixed(train, device, recipe, seed, title, augment), test, device)


def classification_accuracy_score(samples: ImageData, test: ImageData, device: torch.device, recipe: Recipe,
                                  seed: int = 0) -> float:
    """CAS: trained on the labelled samples alone, accuracy on the real test split."""
    return test_accuracy(samples, test, device, recipe, seed, "CAS: classifier on the samples")


def real_subset(train: ImageData, percent: float, seed: int) -> ImageData:
    count = max(int(round(train.images.shape[0] * percent / 100)), train.num_classes)
    rows = torch.randperm(train.images.shape[0], generator=torch.Generator().manual_seed(1000 + seed))[:count]
    return ImageData(train.images[rows], train.labels[rows], train.num_classes)


def joined(a: ImageData, b: ImageData) -> ImageData:
    return ImageData(torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels]), a.num_classes)


def mean_std(values: list[float]) -> tuple[float, float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    return float(tensor.mean()), float(tensor.std()) if len(values) > 1 else 0.0


def augmentation_gain(samples: ImageData, train: ImageData, test: ImageData, device: torch.device, recipe: Recipe,
                      percents: list[float], seeds: list[int], cache: Path) -> dict[str, float]:
    """Per k in `percents`: test accuracy (mean, std over `seeds`) of real k% alone, real + samples,
    real + classic augmentation; `augment_gain_k{k}` = (real + samples) - real alone, in points of accuracy."""
    values: dict[str, float] = {}
    for percent in percents:
        runs: dict[str, list[float]] = {"real": [], "with_samples": [], "classic": []}
        for seed in seeds:
            real = real_subset(train, percent, seed)
            for variant, augment in (("real", None), ("classic", random_affine)):
                path = cache / f"k{percent:g}_seed{seed}_{variant}_{recipe.tag}.pt"
                if path.is_file():
                    score = float(torch.load(path, weights_only=True)["accuracy"])
                else:
                    score = test_accuracy(real, test, device, recipe, seed, f"{percent:g}% real, {variant}", augment)
                    save_atomic({"accuracy": score}, path)
                runs[variant].append(score)
            runs["with_samples"].append(test_accuracy(joined(real, samples), test, device, recipe, seed,
                                                      f"{percent:g}% real + samples"))
        k = f"k{percent:g}"
        for variant, scores in runs.items():
            values[f"acc_{variant}_{k}"], values[f"acc_{variant}_{k}_std"] = mean_std(scores)
        values[f"augment_gain_{k}"] = values[f"acc_with_samples_{k}"] - values[f"acc_real_{k}"]
        values[f"augment_gain_classic_{k}"] = values[f"acc_classic_{k}"] - values[f"acc_real_{k}"]
    return values
