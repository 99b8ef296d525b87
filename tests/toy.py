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


def toy_ct_slice(size: int = 64, seed: int = 0) -> torch.Tensor:
    """A 3 x size x size CT-like slice: a bright body ellipse with two dark lung ellipses."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    img = torch.zeros(size, size)
    img[(xx / 0.9) ** 2 + (yy / 0.7) ** 2 < 1] = 0.7  # body
    for cx in (-0.4, 0.4):
        img[((xx - cx) / 0.3) ** 2 + (yy / 0.5) ** 2 < 1] = 0.1  # lungs
    img = img + 0.03 * torch.randn(size, size, generator=g)
    return img.expand(3, size, size).clone()


class ToyViews(Dataset):
    """Two noisy views (and, with ``regions``, the five lobe crops) of toy CT slices."""

    def __init__(self, n: int = 32, size: int = 32, regions: bool = False) -> None:
        from covtl.regions import crop_regions

        self.images = [toy_ct_slice(size, seed=i) * (0.8 + 0.02 * i) for i in range(n)]
        self.regions = [crop_regions(x) for x in self.images] if regions else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        x = self.images[i]
        views = [x + 0.05 * torch.randn_like(x), x + 0.05 * torch.randn_like(x)]
        if self.regions is not None:
            views.append(self.regions[i])
        return {"image": views, "label": -1, "group": f"p{i}", "path": f"img{i}.png"}
