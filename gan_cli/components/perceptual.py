"""Frozen feature networks for SRGAN's perceptual loss (`task.perceptual`): the MSE between the
features of the SR image and of the HR image (Ledig et al. 2017, eq. 5, "VGG loss").

    classifier  the feature classifier gan-cli trains and caches for its metrics (classifier.py),
                on labelled datasets: its last convolutional feature maps (B, 128, H/8, W/8), the
                counterpart of VGG's conv5_4 (the metrics' FD reads the pooled 128-d embedding one
                layer later, so this term pulls SR images toward real ones in the space FD measures)
    vgg19       torchvision's VGG19 architecture with the user's ImageNet weights from a local file
                (`task.vgg19_weights`, e.g. vgg19-dcbb9e9d.pth): the first `task.vgg19_layers` modules of
                `features`; 36 = after conv5_4's ReLU, the paper's VGG54
    none        no perceptual term

A network maps [-1, 1] images (B, C, H, W) to features; its weights never train (requires_grad off,
eval mode) and are not part of checkpoints (the classifier is cached on disk, VGG is the user's file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from gan_cli.core.errors import GanCliError
from gan_cli.data.datasets import ImageData
from gan_cli.evaluate import classifier
from gan_cli.evaluate.metrics import classifier_path, dataset_key

VGG19_MODULES = 37  # len(torchvision.models.vgg19().features)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ClassifierMaps(nn.Module):
    """The cached classifier's convolutional body up to its last ReLU: (B, C, H, W) -> (B, 128, h, w)."""

    def __init__(self, model: classifier.SmallCNN):
        super().__init__()
        self.body = model.body[:-2]  # drop the global average pool and the flatten

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)  # the classifier reads [-1, 1] images (uint8 / 127.5 - 1), as here


class VGG19Maps(nn.Module):
    """ImageNet-normalized RGB (gray images are repeated) through VGG19's first `layers` modules."""

    mean: Tensor  # buffers (1, 3, 1, 1)
    std: Tensor

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.features = features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        return self.features(((rgb + 1) / 2 - self.mean) / self.std)


def load_vgg19(path: str | None, layers: int) -> nn.Sequential:
    """VGG19 `features[:layers]` with the weights of a torchvision vgg19 state dict at `path`."""
    from torchvision.models.vgg import cfgs, make_layers

    advice = "or pick task.perceptual=classifier (labelled datasets) or task.perceptual=none"
    if not path:
        raise GanCliError(f"task.perceptual=vgg19 needs task.vgg19_weights=PATH to torchvision's VGG19 weights "
                          f"(vgg19-dcbb9e9d.pth), {advice}")
    if not 1 <= layers <= VGG19_MODULES:
        raise GanCliError(f"invalid value task.vgg19_layers={layers}: allowed is 1..{VGG19_MODULES} (36 = conv5_4)")
    file = Path(path).expanduser()
    if not file.is_file():
        raise GanCliError(f"task.vgg19_weights={path}: no such file ({file.resolve()}); {advice}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable or foreign file is one line
        raise GanCliError(f"task.vgg19_weights={path} is not a PyTorch weights file: "
                          f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    features = make_layers(cfgs["E"])[:layers]  # keeps torchvision's module indices: 0, 2, 5, ...
    kept = {str(i) for i in range(layers)}
    wanted = {key.removeprefix("features."): value for key, value in (state.items() if isinstance(state, dict) else ())
              if key.startswith("features.") and key.split(".")[1] in kept}
    try:
        features.load_state_dict(wanted)  # strict: every kept conv needs its weight and bias
    except RuntimeError as err:
        reason = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise GanCliError(f"task.vgg19_weights={path} is not a torchvision VGG19 state dict: {reason}") from None
    return features


def classifier_maps(cfg: DictConfig, train: ImageData, test: ImageData | None, device: torch.device,
                    vgg19: tuple[str | None, int]) -> nn.Module:
    if train.num_classes < 2:
        raise GanCliError("task.perceptual=classifier needs a labelled dataset (the feature classifier learns its "
                          "classes): use task.perceptual=vgg19 task.vgg19_weights=PATH, or task.perceptual=none")
    # The metrics' own classifier (metrics.Evaluator: same cache file), trained on first use.
    path = classifier_path(cfg, dataset_key(cfg.dataset))
    model = classifier.load_or_train(path, train, test if test is not None else train, device,
                                     epochs=cfg.eval.classifier_epochs)
    return ClassifierMaps(model)


def vgg19_maps(cfg: DictConfig, train: ImageData, test: ImageData | None, device: torch.device,
               vgg19: tuple[str | None, int]) -> nn.Module:
    return VGG19Maps(load_vgg19(*vgg19))


def no_maps(cfg: DictConfig, train: ImageData, test: ImageData | None, device: torch.device,
            vgg19: tuple[str | None, int]) -> None:
    return None


# (run config, training images, labelled test images, device, (VGG19 weights file, layers)) -> network
FeatureBuilder = Callable[[DictConfig, ImageData, "ImageData | None", torch.device, "tuple[str | None, int]"],
                          "nn.Module | None"]
NETWORKS: dict[str, FeatureBuilder] = {"classifier": classifier_maps, "vgg19": vgg19_maps, "none": no_maps}


def build_perceptual(name: str, vgg19: tuple[str | None, int], cfg: DictConfig, train: ImageData,
                     test: ImageData | None, device: torch.device) -> nn.Module | None:
    """The frozen network `task.perceptual` names (`vgg19`: its weights file and layers), on
    `device`, or None for `none`."""
    if name not in NETWORKS:
        raise GanCliError(f"invalid value task.perceptual={name!r}: allowed are {', '.join(NETWORKS)}")
    network = NETWORKS[name](cfg, train, test, device, vgg19)
    return None if network is None else network.to(device).eval().requires_grad_(False)
