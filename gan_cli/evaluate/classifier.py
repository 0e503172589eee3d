"""A small CNN classifier trained on the dataset's own training split, for machines without
InceptionV3 weights: its penultimate features feed FID/KID, its logits give the class histogram
of generated samples.

Strided convolutions instead of pooling keep it cheap (about 2 M multiply-adds per 28x28 image):
four epochs of MNIST take about 20 s on an idle 2-core AVX-512 CPU, 170 s on one thread of a
busy AVX2-only one, and reach 99% test accuracy. It trains once per dataset (then cached), with
a progress bar.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_cli.data.datasets import ImageData
from gan_cli.reporting.progress import TaskProgress

log = logging.getLogger("gan_cli")


class SmallCNN(nn.Module):
    """uint8 images (B, C, H, W) -> logits (B, num_classes); `features` gives the (B, 128)
    penultimate activations. Any image size >= 8 works (global average pooling)."""

    num_features = 128  # torchmetrics reads this instead of probing with a 299x299 dummy image

    def __init__(self, channels: int, num_classes: int, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        widths = [channels, width, 2 * width, 4 * width]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            # 3x3 stride-2: 28 -> 14 -> 7 -> 4
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, 4 * width)
        self.embed = nn.Sequential(nn.Linear(4 * width, self.num_features), nn.ReLU())
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, images: Tensor) -> Tensor:
        x = images.float().div(127.5).sub(1.0)  # uint8 -> [-1, 1], the GAN's own scaling
        return self.embed(self.body(x))  # (B, 128)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))  # (B, num_classes)


class ClassifierFeatures(nn.Module):
    """The feature extractor the metrics see: uint8 images -> (B, 128)."""

    def __init__(self, classifier: SmallCNN):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier.features(images)


MIN_STEPS = 200  # small datasets (fake, a few hundred images) still get enough updates to learn
PROGRESS_EVERY = 20  # steps between progress updates


def train_classifier(
    data: ImageData, device: torch.device, *, epochs: int, batch_size: int = 128, seed: int = 0
) -> SmallCNN:
    """Adam with a one-cycle schedule on the (device-resident) uint8 training images."""
    torch.manual_seed(seed)  # fixed init; the caller's RNG streams are saved and restored around us
    images, labels = data.images.to(device), data.labels.to(device)
    batch_size = min(batch_size, images.shape[0])
    model = SmallCNN(images.shape[1], data.num_classes).to(device)
    steps_per_epoch = images.shape[0] // batch_size
    total_steps = max(epochs * steps_per_epoch, MIN_STEPS)
    passes = -(-total_steps // steps_per_epoch)  # epochs, or more for a small dataset (MIN_STEPS)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=total_steps)
    order = torch.Generator(device=device).manual_seed(seed)
    model.train()
    with TaskProgress("feature classifier (once)", total_steps, quiet_seconds=0) as progress:
        for step in range(total_steps):
            position = step % steps_per_epoch
            if position == 0:
                perm = torch.randperm(images.shape[0], device=device, generator=order)
            rows = perm[position * batch_size : (position + 1) * batch_size]
            loss = F.cross_entropy(model(images[rows]), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if (step + 1) % PROGRESS_EVERY == 0 or step + 1 == total_steps:  # loss.item(): a host sync
                progress.advance(step + 1 - progress.done, f"epoch {step // steps_per_epoch + 1}/{passes} "
                                 f"loss {loss.item():.3f}")
    return model.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(model: SmallCNN, data: ImageData, device: torch.device, batch_size: int = 1000) -> float:
    correct = 0
    for start in range(0, data.images.shape[0], batch_size):
        logits = model(data.images[start : start + batch_size].to(device))
        correct += int((logits.argmax(1) == data.labels[start : start + batch_size].to(device)).sum())
    return correct / max(data.images.shape[0], 1)


def load_or_train(
    path: Path, train: ImageData, test: ImageData, device: torch.device, *, epochs: int, seed: int = 0
) -> SmallCNN:
    """The classifier cached at `path`, or a new one trained on `train`, scored on `test` and saved."""
    channels = train.images.shape[1]
    if path.is_file():
        state = torch.load(path, map_location=device, weights_only=True)
        model = SmallCNN(channels, train.num_classes).to(device)
        model.load_state_dict(state["model"])
        log.info("eval: classifier from %s (test accuracy %.2f%%)", path, 100 * state["test_accuracy"])
        return model.eval().requires_grad_(False)
    log.info("eval: training the feature classifier on %d images for %d epochs (once; cached at %s)",
             train.images.shape[0], epochs, path)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = train_classifier(train, device, epochs=epochs, seed=seed)
    seconds = time.perf_counter() - started
    test_accuracy = accuracy(model, test, device)
    log.info("eval: classifier trained in %.0f s, test accuracy %.2f%%", seconds, 100 * test_accuracy)
    state = {"model": model.state_dict(), "test_accuracy": test_accuracy, "train_seconds": seconds, "epochs": epochs}
    save_atomic(state, path)
    return model


def save_atomic(obj: object, path: Path) -> None:
    """Write then rename, so a concurrent run never reads half a cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{time.time_ns()}.tmp")
    torch.save(obj, partial)
    partial.replace(path)
