"""The README's StyleGAN2 figures, drawn with gan-sample from a StyleGAN2 and a DCGAN checkpoint.

    python docs/stylegan2_figures.py STYLEGAN2.pt DCGAN.pt [OUT_DIR]

OUT_DIR (default docs/stylegan2) gets samples.png and dcgan_samples.png (10 x 10 grids, the
conditional model's rows the classes 0-9), truncation.png (seeds 0-9 in the columns, each with the
class its seed draws under class=all, i.e. 0-9; rows psi 1.0, 0.7, 0.5, 0.0), mix_coarse.png and
mix_fine.png (rows seeds 1-4, columns seeds 5-9) and walk.gif (seeds 11-15 and back to 11, 50 frames).
Every image goes through gan-sample's own code (gan_cli/sampling/sample.py), as a user would draw it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from torchvision.utils import save_image

from gan_cli.apps.cli import CONFIG_DIR
from gan_cli.sampling.sample import sample

PSIS = (1.0, 0.7, 0.5, 0.0)


def draw(checkpoint: str, out: Path, *overrides: str) -> Path:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("sample", overrides=[f"checkpoint={checkpoint}", f"out={out}", "device=cpu", *overrides])
    return sample(cfg)


def truncation_strip(checkpoint: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [np.load(draw(checkpoint, Path(tmp) / f"psi{psi}.npz", "seeds=0-9", "class=all",
                             f"truncation={psi}"))["arr_0"] for psi in PSIS]  # each (10, H, W, C) uint8
    images = torch.from_numpy(np.concatenate(rows)).permute(0, 3, 1, 2).float() / 255
    save_image(images, out, nrow=10, padding=2)


def main() -> None:
    stylegan2, dcgan = sys.argv[1:3]
    out = Path(sys.argv[3] if len(sys.argv) > 3 else "docs/stylegan2")
    out.mkdir(parents=True, exist_ok=True)
    draw(stylegan2, out / "samples.png", "class=all", "num_samples=100")
    draw(dcgan, out / "dcgan_samples.png", "num_samples=100")
    truncation_strip(stylegan2, out / "truncation.png")
    for group in ("coarse", "fine"):
        draw(stylegan2, out / f"mix_{group}.png", "seeds=[1,2,3,4]", "mix_seeds=[5,6,7,8,9]", f"mix={group}")
    draw(stylegan2, out / "walk.gif", "seeds=[11,12,13,14,15,11]", "interpolate=50", "fps=10")


if __name__ == "__main__":
    main()
