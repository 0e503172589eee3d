"""The docs' comparison grids: the same test images through a baseline and an adversarial run.

    python docs/baseline_grid.py BASELINE.pt ADVERSARIAL.pt OUT.png [count]

  task=srgan    rows bicubic | SRResNet (BASELINE) | SRGAN | HR
  task=pix2pix  rows input | L1 alone (BASELINE) | pix2pix | target

Both checkpoints go through gan-sample's own `input=test` path (the task's `sampling.draw`): the
first `count` test images and each generator's EMA weights.
"""

from __future__ import annotations

import sys

import torch
from hydra.utils import get_class
from omegaconf import OmegaConf
from torchvision.utils import save_image

from gan_cli.core.trusted import stored_config
from gan_cli.loop.checkpoint import load_checkpoint
from gan_cli.tasks.base import sampling_of


def rows(checkpoint: str, count: int) -> tuple[str, torch.Tensor]:
    """The task's name and its test grid as (rows, count, C, H, W) uint8, one row per kind of image."""
    state = load_checkpoint(checkpoint)
    train_cfg = stored_config(state, checkpoint)
    cfg = OmegaConf.create({"checkpoint": checkpoint, "input": "test", "num_samples": count, "batch_size": 256,
                            "nrow": 0, "direction": train_cfg.task.get("direction", "a2b")})
    with torch.no_grad():
        grid = sampling_of(get_class(train_cfg.task._target_)).draw(train_cfg, state, cfg, torch.device("cpu")).picture()
    name = train_cfg.task._target_.rsplit(".", 2)[1]
    if name == "srgan":  # rows LR | bicubic | SR | HR
        return name, grid.view(4, count, *grid.shape[1:])
    return name, grid.view(count, -1, *grid.shape[1:]).transpose(0, 1)  # input, output, target per image


def main() -> None:
    baseline_path, adversarial_path, out = sys.argv[1:4]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 12
    name, baseline = rows(baseline_path, count)
    _, adversarial = rows(adversarial_path, count)
    assert torch.equal(baseline[-1], adversarial[-1]), "both checkpoints must be trained on the same dataset"
    given = baseline[1] if name == "srgan" else baseline[0]  # bicubic | the input
    grid = torch.cat([given, baseline[-2], adversarial[-2], baseline[-1]])
    save_image(grid.float() / 255, out, nrow=count, padding=2)


if __name__ == "__main__":
    main()
