"""A history of generated images for the discriminator (Shrivastava et al. 2017; CycleGAN uses
50): D is updated on a mix of the newest fakes and older ones, so it cannot chase only G's latest
trick and the two do not oscillate.

The authors' `ImagePool` decides per image in Python; this one does the same draw for the whole
batch on the device: while the pool fills, fakes go in and come back unchanged; once full, each
fake comes back with probability 1/2 and otherwise is swapped with a random stored one (distinct
slots, so the writes never collide). It is an nn.Module so its contents are part of the
checkpoint and a resumed run continues bitwise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class ImagePool(nn.Module):
    images: Tensor  # a buffer (B, C, H, W) once the first batch is in; empty before

    def __init__(self, size: int = 50):
        super().__init__()
        self.size = size
        self.filled = 0  # a Python int (no device sync); saved through get_extra_state
        self.register_buffer("images", torch.empty(0), persistent=True)

    def get_extra_state(self) -> int:
        return self.filled

    def set_extra_state(self, state: int) -> None:
        self.filled = int(state)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        stored = state_dict.get(prefix + "images")
        if stored is not None:  # the pool's shape follows the images, known only after the first batch
            self.images = torch.empty_like(stored, device=self.images.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def query(self, fakes: Tensor) -> Tensor:
        """fakes (B, C, H, W), detached -> the batch D sees (B, C, H, W)."""
        if self.size == 0:
            return fakes
        if self.images.numel() == 0:
            self.images = fakes.new_zeros(self.size, *fakes.shape[1:])
        fresh = min(fakes.shape[0], self.size - self.filled)  # still filling: store and return as is
        self.images[self.filled : self.filled + fresh] = fakes[:fresh]
        self.filled += fresh
        rest = fakes[fresh:][: self.size]  # a batch larger than the pool: the extra images pass through
        if rest.shape[0] == 0:
            return fakes
        slots = torch.randperm(self.size, device=fakes.device)[: rest.shape[0]]
        swap = (torch.rand(rest.shape[0], device=fakes.device) < 0.5).view(-1, 1, 1, 1)
        stored = self.images[slots]
        self.images[slots] = torch.where(swap, rest, stored)
        returned = torch.where(swap, stored, rest)
        return torch.cat([fakes[:fresh], returned, fakes[fresh + rest.shape[0]:]])
