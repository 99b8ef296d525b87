"""Paper A's Generator (sec. 5.3, eq. (4)): locate the lungs, crop five lobe regions, resize.

    X_ru, X_rm, X_rl, X_lu, X_ll = Generator(X)

**Locate.** The paper slides a 3x3 window over the image and marks the centre pixel as a
boundary pixel when the window holds more than one distinct value. On a raw CT slice almost
every window does (noise), so the map is computed on a two-level image: the slice is
thresholded (Otsu) into tissue and air, air connected to the image border (outside the body)
is removed, and what remains dark inside the body is the lungs (small specks dropped). The
boundary map of that two-level lung image is the paper's definition applied as written
(:func:`boundary_map`); the lung box is the bounding box of its boundary pixels
(:func:`lung_box`). If no lungs are found, the box is the central 80% of the image and the
result says so.

**Crop.** Each region is a location tuple (x, y, w, h) -- centre and size -- relative to the
lung box, :data:`REGION_TUPLES`. The paper fixes them from its Fig. 2 without giving numbers,
so ours are a documented choice: images are in radiological convention (the patient's right
lung on the image's left, anterior at the top); the right lung (left half of the box) is cut
into upper / middle / lower bands, the left lung (right half) into upper / lower; in an
axial slice the upper lobes lie anterior (top), the lower lobes posterior (bottom). Adjacent
regions overlap a little, since lobe borders are oblique.

**Resize.** Each crop is resized to the input size, giving 5 images per slice; the region
label of crop i is i in the order (ru, rm, rl, lu, ll).

**Augment (training).** Cut and resized as written, the five boxes have five different aspect
ratios and sizes, so the stretch of a resized crop alone tells which region it is (a shortcut
the network can learn instead of the lobes). A sec. 6.2 scales and randomly crops the regions
like the images; :func:`random_region_boxes` does it so that the shape carries nothing: each
region's box gets an area drawn as a fraction of the *mean* region area of the slice and an
aspect ratio drawn from a fixed range, both independent of the region, and a centre drawn
inside the region's own box; the box is then shifted (never cut) to lie inside the image.
Colour jitter and the rest of the pipeline are in :class:`covtl.data.transforms.RegionViews`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = [
    "REGIONS",
    "REGION_TUPLES",
    "LungBox",
    "boundary_map",
    "crop_regions",
    "lung_box",
    "lung_mask",
    "otsu_threshold",
    "random_region_boxes",
    "region_boxes",
]

REGIONS = ("ru", "rm", "rl", "lu", "ll")
#: (x_centre, y_centre, width, height) relative to the lung box, per region
REGION_TUPLES: dict[str, tuple[float, float, float, float]] = {
    "ru": (0.25, 0.22, 0.50, 0.44),
    "rm": (0.25, 0.52, 0.50, 0.30),
    "rl": (0.25, 0.80, 0.50, 0.40),
    "lu": (0.75, 0.30, 0.50, 0.60),
    "ll": (0.75, 0.76, 0.50, 0.48),
}


@dataclass(frozen=True)
class LungBox:
    """Pixel box [top, bottom) x [left, right) and whether lungs were found."""

    top: int
    left: int
    bottom: int
    right: int
    found: bool


def otsu_threshold(image: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a float image (maximises the between-class variance)."""
    hist, edges = np.histogram(image, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[np.argmax(between)])


def boundary_map(image: np.ndarray) -> np.ndarray:
    """Paper A: a pixel is a boundary pixel when its 3x3 window holds more than one value.

    Windows at the image edge are the in-image part of the 3x3 neighbourhood.
    """
    size = (3, 3)
    hi = ndimage.maximum_filter(image, size=size, mode="nearest")
    lo = ndimage.minimum_filter(image, size=size, mode="nearest")
    return hi != lo


def lung_mask(image: np.ndarray, min_fraction: float = 0.002) -> np.ndarray:
    """Dark regions inside the body: Otsu threshold, minus air connected to the border."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:  # C x H x W -> H x W
        img = img.mean(axis=0)
    dark = img < otsu_threshold(img)
    labels, n = ndimage.label(dark)
    if n == 0:
        return np.zeros_like(dark)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = sizes >= min_fraction * img.size
    keep[border] = False
    keep[0] = False
    return keep[labels]


def lung_box(image: np.ndarray) -> LungBox:
    """Bounding box of the boundary pixels of the lung image (C x H x W or H x W)."""
    mask = lung_mask(image)
    h, w = mask.shape
    edges = boundary_map(mask.astype(np.uint8)) & ndimage.binary_dilation(mask)
    rows, cols = np.nonzero(edges)
    if rows.size == 0 or (rows.max() - rows.min()) < 0.1 * h or (cols.max() - cols.min()) < 0.1 * w:
        return LungBox(round(0.1 * h), round(0.1 * w), round(0.9 * h), round(0.9 * w), found=False)
    return LungBox(int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1, found=True)


def region_boxes(box: LungBox, height: int, width: int) -> dict[str, tuple[int, int, int, int]]:
    """Pixel boxes (top, left, bottom, right) of the five regions, clipped to the lung box."""
    bh, bw = box.bottom - box.top, box.right - box.left
    out = {}
    for name, (cx, cy, rw, rh) in REGION_TUPLES.items():
        top = box.top + round((cy - rh / 2) * bh)
        left = box.left + round((cx - rw / 2) * bw)
        bottom = box.top + round((cy + rh / 2) * bh)
        right = box.left + round((cx + rw / 2) * bw)
        top, left = max(box.top, top), max(box.left, left)
        bottom, right = min(box.bottom, max(bottom, top + 1)), min(box.right, max(right, left + 1))
        out[name] = (top, left, bottom, right)
    return out


def random_region_boxes(
    box: LungBox,
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> dict[str, tuple[int, int, int, int]]:
    """A random resized crop box (top, left, bottom, right) around each of the five regions.

    For every region, independently: area = U(scale) x the mean area of the slice's five
    :func:`region_boxes`; aspect ratio width / height log-uniform in ``ratio`` (torchvision's
    RandomResizedCrop convention); centre uniform inside the region's box. Area and aspect do
    not depend on which region it is, so after resizing to a square the stretch says nothing
    about the label. A box that crosses the image border is shifted inside, keeping its shape.
    Random numbers come from ``generator`` (default: torch's global one, as the transforms).
    """
    if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"scale and ratio must be positive (low, high) ranges, got {scale} and {ratio}")
    fixed = region_boxes(box, height, width)
    mean_area = sum((b - t) * (r - left) for t, left, b, r in fixed.values()) / len(fixed)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    out = {}
    for name, (top, left, bottom, right) in fixed.items():
        u_area, u_ratio, u_y, u_x = torch.rand(4, generator=generator).tolist()
        area = mean_area * (scale[0] + (scale[1] - scale[0]) * u_area)
        aspect = math.exp(log_lo + (log_hi - log_lo) * u_ratio)  # width / height
        h = min(height, max(1, round(math.sqrt(area / aspect))))
        w = min(width, max(1, round(math.sqrt(area * aspect))))
        cy, cx = top + (bottom - top) * u_y, left + (right - left) * u_x
        y0 = min(max(0, round(cy - h / 2)), height - h)
        x0 = min(max(0, round(cx - w / 2)), width - w)
        out[name] = (y0, x0, y0 + h, x0 + w)
    return out


def crop_regions(
    image: torch.Tensor, size: int | None = None, boxes: dict[str, tuple[int, int, int, int]] | None = None
) -> torch.Tensor:
    """Generator(X): C x H x W image -> 5 x C x size x size regions (ru, rm, rl, lu, ll).

    ``boxes`` (top, left, bottom, right) per region, e.g. from :func:`random_region_boxes`;
    by default the paper's fixed :func:`region_boxes` of the image's lung box.
    """
    if image.dim() != 3:
        raise ValueError(f"expected a C x H x W image, got shape {tuple(image.shape)}")
    _, h, w = image.shape
    size = size or h
    if boxes is None:
        boxes = region_boxes(lung_box(image.detach().cpu().float().numpy()), h, w)
    crops = []
    for top, left, bottom, right in boxes.values():
        crop = image[:, top:bottom, left:right].unsqueeze(0).float()
        crops.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0])
    return torch.stack(crops).to(image.dtype)  # 5 x C x size x size
