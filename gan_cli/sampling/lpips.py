"""LPIPS (Zhang et al. 2018) from a weights file, for gan-project's and gan-draw's perceptual term
(`lpips=FILE`). gan-cli ships no LPIPS weights and downloads nothing: FILE is the state dict of the
`lpips` package's model, written where the weights are at hand:

    python -c "import lpips, torch; torch.save(lpips.LPIPS(net='vgg').state_dict(), 'lpips_vgg.pt')"

(net='alex' likewise). It holds the backbone (`net.sliceK.I.*`: torchvision's VGG16 / AlexNet
`features[I]`), the linear heads (`linK.model.1.weight`, one weight per channel of stage K) and the
input scaling. The distance is LPIPS's: scaled input, each stage's activations unit-normalized per
position, squared differences weighted by the head, spatial mean, summed over the five stages.
Grey images are repeated to three channels; images under 64 px are enlarged to 64 (bilinear) first,
as AlexNet's strides leave nothing of a 28 px digit by its last stage.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from gan_cli.core.errors import GanCliError

# torchvision `features` indices at which LPIPS's five slices end (relu1_2 ... relu5_3; relu1 ... relu5)
SLICE_ENDS = {"vgg": (4, 9, 16, 23, 30), "alex": (2, 5, 8, 10, 12)}
MIN_SIZE = 64


class LpipsFeatures(nn.Module):
    """[-1, 1] float images (B, C, H, W) -> the five stages' activations; `weights` are the heads."""

    def __init__(self, state: dict[str, Tensor], source: str):
        super().__init__()
        net = "vgg" if "net.slice5.28.weight" in state else "alex" if "net.slice5.10.weight" in state else None
        if net is None:
            raise GanCliError(f"lpips={source} is not a state dict of lpips.LPIPS(net='vgg' or 'alex'): it has "
                              "no net.slice5.* weights (write one with torch.save(lpips.LPIPS(net='vgg')"
                              ".state_dict(), FILE))")
        backbone_of = torchvision.models.vgg16 if net == "vgg" else torchvision.models.alexnet
        self.features = backbone_of(weights=None).features
        self.ends = SLICE_ENDS[net]
        backbone = {key.split(".", 2)[2]: value for key, value in state.items()
                    if key.startswith("net.slice")}  # net.slice2.5.weight -> 5.weight (features[5])
        heads = [state.get(f"lin{k}.model.1.weight", state.get(f"lins.{k}.model.1.weight")) for k in range(5)]
        try:
            self.features.load_state_dict(backbone)
        except RuntimeError as err:
            lines = str(err).splitlines()
            raise GanCliError(f"lpips={source}: its {net} backbone does not fit torchvision's: "
                              f"{(lines[1] if len(lines) > 1 else lines[0]).strip()}") from None
        channels = [m.out_channels for m in self.features if isinstance(m, nn.Conv2d)]
        widths = [channels[sum(isinstance(m, nn.Conv2d) for m in self.features[:end]) - 1] for end in self.ends]
        if any(h is None or tuple(h.shape) != (1, c, 1, 1) for h, c in zip(heads, widths, strict=True)):
            raise GanCliError(f"lpips={source}: the linear heads lin0..lin4 are missing or not of the {net} "
                              f"stages' widths {widths}")
        self.heads = nn.ParameterList([nn.Parameter(h.float().clone(), requires_grad=False)
                                       for h in heads if h is not None])
        shift = state.get("scaling_layer.shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        scale = state.get("scaling_layer.scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.register_buffer("shift", shift.float().view(1, 3, 1, 1))
        self.register_buffer("scale", scale.float().view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    @property
    def weights(self) -> list[Tensor]:
        """Each stage's head: per-channel weights (1, C, 1, 1) of the squared differences."""
        return list(self.heads)

    def forward(self, images: Tensor) -> list[Tensor]:
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        if min(x.shape[-2:]) < MIN_SIZE:
            x = nn.functional.interpolate(x, size=(MIN_SIZE, MIN_SIZE), mode="bilinear", align_corners=False)
        shift, scale = self.get_buffer("shift"), self.get_buffer("scale")
        x = (x - shift) / scale
        stages, start = [], 0
        for end in self.ends:
            for layer in self.features[start:end]:
                x = layer(x)
            stages.append(x)
            start = end
        return stages


def load_lpips(path: str, device: torch.device) -> LpipsFeatures:
    """The LPIPS network of a weights file; a missing or foreign file is one GanCliError."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise GanCliError(f"lpips={path} does not exist: give the state dict of lpips.LPIPS (see docs/projection.md)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same one-line answer
        raise GanCliError(f"lpips={path} is not a torch.save file of tensors ({type(err).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise GanCliError(f"lpips={path} is not a state dict (name -> tensor) of lpips.LPIPS")
    return LpipsFeatures(state, path).to(device)
