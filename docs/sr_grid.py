"""The README's SRGAN comparison grid: rows bicubic | SRResNet | SRGAN | HR on the same test images.

    python docs/sr_grid.py SRRESNET.pt SRGAN.pt OUT.png [count]

Both checkpoints go through gan-sample's own `input=test` path (SrGan.draw): the first `count`
test images, their antialiased-bicubic LR versions, each generator's EMA weights.
"""

from __future__ import annotations

import sys

import torch
from omegaconf import OmegaConf
from torchvision.utils import save_image

from gan_cli.loop.checkpoint import load_checkpoint
from gan_cli.tasks.srgan import draw
from gan_cli.core.trusted import stored_config


def rows(checkpoint: str, count: int) -> torch.Tensor:
    """(4, count, C, H, W) uint8: LR (nearest) | bicubic | SR | HR."""
    state = load_checkpoint(checkpoint)
    cfg = OmegaConf.create({"checkpoint": checkpoint, "input": "test", "num_samples": count, "batch_size": 256,
                            "nrow": 0})
    with torch.no_grad():
        drawn = draw(stored_config(state, checkpoint), state, cfg, torch.device("cpu"))
        grid = drawn.picture()
    return grid.view(4, count, *grid.shape[1:])


def main() -> None:
    srresnet, srgan, out = sys.argv[1:4]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 12
    baseline, adversarial = rows(srresnet, count), rows(srgan, count)
    assert torch.equal(baseline[3], adversarial[3]), "both checkpoints must be trained on the same dataset"
    grid = torch.cat([baseline[1], baseline[2], adversarial[2], baseline[3]])  # bicubic, SRResNet, SRGAN, HR
    save_image(grid.float() / 255, out, nrow=count, padding=2)


if __name__ == "__main__":
    main()
