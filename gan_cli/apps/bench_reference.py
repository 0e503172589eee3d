"""The loop gan-bench races gan-cli against, written the way the MNIST tutorials and the official
PyTorch DCGAN example (pytorch/examples dcgan/main.py) write it.

On purpose, and unlike gan-cli: a torchvision-style Dataset that keeps uint8 arrays and builds a
PIL image plus ToTensor/Normalize per sample, a shuffling DataLoader, D wrapped in nn.Sigmoid and
scored with nn.BCELoss, `zero_grad()`, `.item()` on the statistics every step, and a G step whose
backward also fills D's parameter gradients. G and D are the same classes, built from the same
config nodes, with the same Adam settings; the math per step is the same as gan-cli's.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from gan_cli.core.config import build


class TutorialImages(Dataset):
    """Like torchvision.datasets.MNIST / CIFAR10: uint8 arrays in memory, a PIL image and the
    transforms per `__getitem__`."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, transform: Any):
        self.data = images  # (N, H, W) grayscale or (N, H, W, 3) RGB, uint8
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = Image.fromarray(self.data[index])  # mode L or RGB, as torchvision does
        return self.transform(image), int(self.targets[index])


class ReferenceLoop:
    """The tutorial training loop over `images` (uint8 (N, C, H, W)), one D and one G step per call."""

    def __init__(self, cfg: DictConfig, images: Tensor, labels: Tensor, device: torch.device, num_workers: int):
        self.device = device
        self.generator = build(cfg.model.generator).to(device)
        self.discriminator = nn.Sequential(build(cfg.model.discriminator), nn.Sigmoid()).to(device)
        self.criterion = nn.BCELoss()
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.optim.g.lr, betas=tuple(cfg.optim.g.betas))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.optim.d.lr,
                                      betas=tuple(cfg.optim.d.betas))
        array = images.permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, C)
        array = np.array(array[..., 0] if array.shape[-1] == 1 else array)  # a copy of its own, as torchvision
        half = (0.5,) * images.shape[1]
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(half, half)])
        dataset = TutorialImages(array, labels.cpu().numpy(), transform)
        self.loader = DataLoader(dataset, batch_size=cfg.trainer.batch_size, shuffle=True, num_workers=num_workers)
        self.batches = self._epochs()

    def _epochs(self) -> Generator[tuple[Tensor, Tensor], None, None]:
        while True:  # for epoch in range(num_epochs): for i, data in enumerate(dataloader, 0): ...
            yield from self.loader

    def step(self) -> tuple[float, float, float, float, float]:
        """One iteration of the official example's loop body; returns what it prints."""
        G, D = self.generator, self.discriminator
        real, _ = next(self.batches)
        real = real.to(self.device)
        batch_size = real.size(0)
        # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
        D.zero_grad()
        label = torch.full((batch_size,), 1.0, dtype=torch.float, device=self.device)
        output = D(real)
        err_d_real = self.criterion(output, label)
        err_d_real.backward()
        d_x = output.mean().item()
        noise = torch.randn(batch_size, G.z_dim, device=self.device)
        fake = G(noise)
        label.fill_(0.0)
        output = D(fake.detach())
        err_d_fake = self.criterion(output, label)
        err_d_fake.backward()
        d_g_z1 = output.mean().item()
        err_d = err_d_real + err_d_fake
        self.opt_d.step()
        # (2) Update G: maximize log(D(G(z)))
        G.zero_grad()
        label.fill_(1.0)
        output = D(fake)
        err_g = self.criterion(output, label)
        err_g.backward()
        d_g_z2 = output.mean().item()
        self.opt_g.step()
        return err_d.item(), err_g.item(), d_x, d_g_z1, d_g_z2

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def close(self) -> None:
        """Stop the DataLoader workers."""
        self.batches.close()
