"""A tiny learnable image dataset in covtl's dataset format, for engine tests."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class ToyImages(Dataset):
    """n images 3 x size x size; class c has a brighter patch in quadrant c; 2 slices per patient."""

    def __init__(self, n: int = 24, size: int = 32, num_classes: int = 2, seed: int = 0,
                 augment: bool = False, fail_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % num_classes
        self.images = torch.randn(n, 3, size, size, generator=g) * 0.5
        h = size // 2
        for i, c in enumerate(self.labels.tolist()):
            r, q = divmod(c, 2)
            self.images[i, :, r * h : (r + 1) * h, q * h : (q + 1) * h] += 0.6
        self.augment = augment
        self.fail_at = fail_at  # raise KeyboardInterrupt at this many reads (a killed run)
        self.reads = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        if self.fail_at is not None and self.reads >= self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        x = self.images[i]
        if self.augment:  # random noise from the global torch generator, like a transform
            x = x + 0.1 * torch.randn_like(x)
        return {"image": x, "label": int(self.labels[i]), "group": f"p{i // 2}", "path": f"img{i}.png"}
