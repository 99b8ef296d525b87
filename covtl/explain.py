"""Where a network looks: Grad-CAM and attention maps (paper A Fig. 4; paper B Fig. 5).

Paper A (sec. 6.8) compares Grad-CAM of "the last convolutional layer right before the global
average pooling" of ResNet-50 with the map of the last ATTN of ResNet-50 + 5 ATTNs, for which
"we simply perform average on attention score maps of all the pixels". Both are computed
here from the feature API of :mod:`covtl.models.base` (``gradcam_layer``, ``last_attention``):

- :class:`GradCAM` (Selvaraju et al. 2017): a context manager that owns its hooks;
- :func:`attention_map`: the last non-local block's attention averaged over query positions;
- :func:`overlay`: a heatmap blended over a CT slice, as an RGB uint8 array for figures;
- :func:`localisation` / :func:`localisation_scores`: how much of a map falls on the
  infection masks of the medseg slices (pointing game, energy inside the mask, IoU), for the
  network's maps and for two maps that look at no image (:func:`baseline_map`): a uniform map
  (its energy inside a mask is the mask's share of the image) and a centre prior.

Every map is N x H x W at the input size, in [0, 1], scaled per image by its maximum (so
zero stays zero, ratios between pixels are kept, and an all-zero map stays all zero).

Glossary: A^k = activation map k of the target layer (h x w), alpha_k^c = spatial mean of
d y^c / d A^k, y^c = the logit of class c; n = h*w positions of the attention stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .models.attention import NonLocalBlock

__all__ = [
    "BASELINES",
    "GradCAM",
    "attention_map",
    "attention_weights",
    "baseline_map",
    "localisation",
    "localisation_scores",
    "overlay",
]


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Scale each non-negative N x H x W map by its maximum; an all-zero map stays zero."""
    peak = maps.amax(dim=(1, 2), keepdim=True)  # N x 1 x 1
    return (maps / torch.where(peak > 0, peak, torch.ones_like(peak))).clamp_(0.0, 1.0)


def _upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear N x h x w -> N x H x W (a convex combination, so non-negative stays so)."""
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def _training_flags(model: nn.Module) -> dict[nn.Module, bool]:
    return {m: m.training for m in model.modules()}


def _restore_training(flags: dict[nn.Module, bool]) -> None:
    for module, training in flags.items():
        module.training = training


class GradCAM:
    """Grad-CAM (Selvaraju et al., ICCV 2017, eq. (1)-(2)) that releases its hooks on exit.

    ::

        alpha_k^c = 1/(h w) sum_{u,v} d y^c / d A^k_{uv}        (global-average-pooled gradient)
        L^c = ReLU( sum_k alpha_k^c A^k )                        (h x w, then bilinear to H x W)

    >>> with GradCAM(model) as cam:            # doctest: +SKIP
    ...     maps = cam(images)                  # N x H x W in [0, 1], predicted class
    ...     maps = cam(images, class_idx=1)     # COVID

    A forward hook on ``target_layer`` (default ``model.gradcam_layer``) keeps a copy of its
    output and registers a *tensor* hook on it for the gradient; unlike module backward hooks
    this works when an in-place op follows the layer (torchvision DenseNet's ReLU), and the
    gradient is the one with respect to the layer's own output. Gradients are taken with
    ``torch.autograd.grad`` with respect to a copy of the input, so parameters' ``.grad`` and
    ``requires_grad`` flags are never touched (a frozen backbone works). Inside the block the
    model is in eval mode; on exit, even after an exception, the hooks are removed and every
    submodule's train/eval mode is restored. Errors propagate.

    Args:
        model: a classifier returning N x K logits.
        target_layer: the module whose N x C x h x w output is weighted; it must run exactly
            once per forward pass.
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | None = None) -> None:
        if target_layer is None:
            target_layer = getattr(model, "gradcam_layer", None)
            if target_layer is None:
                raise ValueError(
                    f"{type(model).__name__} has no gradcam_layer; pass target_layer=<module>"
                )
        self.model = model
        self.target_layer = target_layer
        self.class_idx: torch.Tensor | None = None  # N, the classes of the last call
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._flags: dict[nn.Module, bool] = {}
        self._activations: list[torch.Tensor] = []
        self._gradient: torch.Tensor | None = None

    def __enter__(self) -> GradCAM:
        if self._handle is not None:
            raise RuntimeError("this GradCAM is already active; use one with-block at a time")
        self._flags = _training_flags(self.model)
        self._handle = self.target_layer.register_forward_hook(self._save_activation)
        self.model.eval()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._handle is not None:
                self._handle.remove()
        finally:
            self._handle = None
            self._activations, self._gradient = [], None
            _restore_training(self._flags)

    def _save_activation(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            kind = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(f"Grad-CAM needs a target layer with an N x C x h x w output, got {kind}")
        self._activations.append(output.detach().clone())  # copy: later in-place ops change output
        if output.requires_grad:
            output.register_hook(self._save_gradient)

    def _save_gradient(self, grad: torch.Tensor) -> None:
        self._gradient = grad.detach()

    def __call__(self, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Maps for ``x`` (N x 3 x H x W): N x H x W in [0, 1].

        ``class_idx``: None = each image's predicted class; an int = that class for all; or N
        indices. The classes used are kept in ``self.class_idx``.
        """
        if self._handle is None:
            raise RuntimeError("use GradCAM as a context manager: `with GradCAM(model) as cam: cam(x)`")
        if x.ndim != 4:
            raise ValueError(f"x must be N x C x H x W, got shape {tuple(x.shape)}")
        self._activations, self._gradient = [], None
        inp = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(inp)  # N x K
            if logits.ndim != 2:
                raise ValueError(f"the model must return N x K logits, got shape {tuple(logits.shape)}")
            idx = self._class_indices(logits, class_idx)  # N
            if len(self._activations) != 1:
                raise RuntimeError(
                    f"the target layer ran {len(self._activations)} times in one forward pass; "
                    "pass a target_layer that runs exactly once"
                )
            score = logits.gather(1, idx[:, None]).sum()  # sum_b y^{c_b}, images independent
            torch.autograd.grad(score, inp, allow_unused=True)
        if self._gradient is None:
            raise RuntimeError("no gradient reached the target layer; does the class score depend on it?")
        act, grad = self._activations[0], self._gradient  # N x C x h x w each
        self.class_idx = idx.detach()
        weights = grad.mean(dim=(2, 3), keepdim=True)  # N x C x 1 x 1, alpha_k^c
        cam = F.relu((weights * act).sum(dim=1))  # N x h x w
        self._activations, self._gradient = [], None
        return _normalise(_upsample(cam, x.shape[-2:]))

    @staticmethod
    def _class_indices(logits: torch.Tensor, class_idx: Any) -> torch.Tensor:
        n, k = logits.shape
        if class_idx is None:
            return logits.argmax(dim=1)
        idx = torch.as_tensor(class_idx, dtype=torch.long, device=logits.device)
        idx = idx.expand(n) if idx.ndim == 0 else idx
        if idx.shape != (n,):
            raise ValueError(f"class_idx must be an int or {n} indices, got shape {tuple(idx.shape)}")
        if (idx < 0).any() or (idx >= k).any():
            raise ValueError(f"class_idx must be in 0..{k - 1}, got {idx.tolist()}")
        return idx


def _last_attention(model: nn.Module) -> NonLocalBlock:
    block = getattr(model, "last_attention", None)
    if block is None:
        blocks = [m for m in model.modules() if isinstance(m, NonLocalBlock)]
        block = blocks[-1] if blocks else None
    if block is None:
        raise ValueError(
            f"{type(model).__name__} has no attention block; build it with n_attn=1 or 5 "
            "(paper A) or use GradCAM"
        )
    return block


@torch.no_grad()
def attention_weights(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last attention block's map at its own resolution: N x h x w, before any scaling.

    With A (N x n x n, A[b, i, j] = weight of key i for query j) from one eval-mode forward
    pass, the weight of position i is the mean over the n queries of A[b, i, j] (paper A,
    sec. 6.8: the average of the attention maps of all pixels); the weights sum to one.
    ``keep_attention``, ``attention`` and train/eval modes are restored afterwards.
    """
    block = _last_attention(model)
    sizes: list[torch.Size] = []
    handle = block.register_forward_hook(lambda module, inputs, output: sizes.append(output.shape[-2:]))
    keep, previous, flags = block.keep_attention, block.attention, _training_flags(model)
    try:
        block.keep_attention = True
        model.eval()
        model(x)
        attn = block.attention  # N x n(keys) x n(queries)
        h, w = sizes[-1]
        return attn.mean(dim=2).reshape(len(x), h, w)  # N x h x w
    finally:
        handle.remove()
        block.keep_attention, block.attention = keep, previous
        _restore_training(flags)


def attention_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Paper A's attention heatmap: :func:`attention_weights` upsampled to N x H x W, in [0, 1].

    Raises:
        ValueError: the model has no attention block.
    """
    return _normalise(_upsample(attention_weights(model, x), x.shape[-2:]))


def _to_numpy(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def overlay(image: Any, heatmap: Any, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """Blend ``heatmap`` (H x W, values in [0, 1]) coloured by ``cmap`` over ``image``.

    ``image`` is H x W or H x W x 3 (array or tensor; a 1 x H x W or 3 x H x W tensor is read
    channel-first); uint8 images are read as 0..255, others are min-max scaled to [0, 1].
    Returns an H x W x 3 uint8 array: (1 - alpha) * image + alpha * cmap(heatmap).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] in (1, 3):
        image = image.permute(1, 2, 0)  # C x H x W -> H x W x C
    img, heat = _to_numpy(image), _to_numpy(heatmap).astype(np.float64)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"image must be H x W or H x W x 3, got shape {img.shape}")
    if heat.shape != img.shape[:2]:
        raise ValueError(f"heatmap shape {heat.shape} does not match the image's {img.shape[:2]}")
    if img.dtype == np.uint8:
        img = img / 255.0
    else:
        img = img.astype(np.float64)
        lo, hi = img.min(), img.max()
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    colour = matplotlib.colormaps[cmap](np.clip(np.nan_to_num(heat), 0.0, 1.0))[..., :3]  # H x W x 3
    return np.round(255 * ((1 - alpha) * img + alpha * colour)).astype(np.uint8)


def _as_mask(mask: Any) -> np.ndarray:
    """H x W bool from a bool/0-1/0-255 array, tensor (H x W or 1 x H x W) or PIL image."""
    m = _to_numpy(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"mask must be H x W (or 1 x H x W), got shape {m.shape}")
    if m.dtype == bool:
        return m
    return m > (127 if m.max() > 1 else 0.5)


def localisation(heatmap: Any, mask: Any) -> dict[str, float | bool]:
    """How well a heatmap falls on a region mask (both H x W).

    - ``pointing_game``: the heatmap's maximum (first one, in row-major order) lies inside
      the mask (Zhang et al. 2018); False for an all-zero map, which points nowhere;
    - ``energy_inside``: sum of the heatmap inside the mask / its total sum (the
      energy-based pointing game of Score-CAM); **0 for an all-zero map**, never NaN;
    - ``iou_at_half``: IoU between {heatmap >= 0.5 * max} and the mask; 0 when the map is all
      zero (empty region) or when both region and mask are empty.

    An empty mask gives False / 0 / 0; filter such slices by mask size when averaging.

    Raises:
        ValueError: shapes differ, or the heatmap is negative or not finite.
    """
    heat, m = _to_numpy(heatmap).astype(np.float64), _as_mask(mask)
    if heat.shape != m.shape:
        raise ValueError(f"heatmap shape {heat.shape} and mask shape {m.shape} differ; resize the mask")
    if not np.isfinite(heat).all() or (heat < 0).any():
        raise ValueError("heatmap must be finite and non-negative")
    total, peak = heat.sum(), heat.max()
    region = heat >= 0.5 * peak if peak > 0 else np.zeros_like(m)
    union = (region | m).sum()
    return {
        "pointing_game": bool(peak > 0 and m.flat[int(np.argmax(heat))]),
        "energy_inside": float(heat[m].sum() / total) if total > 0 else 0.0,
        "iou_at_half": float((region & m).sum() / union) if union > 0 else 0.0,
    }


#: maps that ignore the image, the floor a network's map must beat to say it looks at lesions
BASELINES = ("uniform", "centre")


def baseline_map(kind: str, height: int, width: int, sigma: float = 0.25) -> np.ndarray:
    """A map that looks at no image: ``"uniform"`` (all ones) or ``"centre"`` (an isotropic
    Gaussian at the image centre, standard deviation ``sigma`` x the shorter side), H x W in [0, 1].

    Lesions of lung CT lie in the lungs, left and right of the centre, so a centre prior is the
    simplest "looks roughly where the lungs are" map; the uniform map's energy inside a mask is
    the mask's share of the image.
    """
    if kind == "uniform":
        return np.ones((height, width))
    if kind != "centre":
        raise ValueError(f"unknown baseline map {kind!r}; choose one of {BASELINES}")
    y, x = np.mgrid[0:height, 0:width]
    s = sigma * min(height, width)
    return np.exp(-(((y - (height - 1) / 2) ** 2 + (x - (width - 1) / 2) ** 2) / (2 * s * s)))


def localisation_scores(
    model: nn.Module | None,
    dataset_with_masks: Sequence[dict],
    method: str = "gradcam",
    *,
    class_idx: int | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """:func:`localisation` of every item of a dataset whose items carry ``image`` and ``mask``.

    Args:
        model: a covtl network, already on ``device``.
        dataset_with_masks: items with ``image`` (C x H x W tensor) and ``mask`` (H x W or
            1 x H x W of the image's size, see :func:`localisation`); ``path`` is kept if present.
        method: ``"gradcam"`` (``model.gradcam_layer``), ``"attention"`` (last ATTN), or a
            map that ignores the image and the model: ``"uniform"`` or ``"centre"``
            (:func:`baseline_map`). The uniform map's pointing game is its expectation (a peak
            drawn uniformly among equal pixels hits the mask with probability = its share).
        class_idx: Grad-CAM class (None = predicted); ignored for attention.

    Returns:
        one row per item: ``index``, ``path``, ``method``, ``mask_pixels``, ``pointing_game``,
        ``energy_inside``, ``iou_at_half``.
    """
    if method not in ("gradcam", "attention", *BASELINES):
        raise ValueError(f"unknown method {method!r}; choose 'gradcam', 'attention', 'uniform' or 'centre'")
    if method in BASELINES:
        rows = []
        for index in range(len(dataset_with_masks)):
            item = dataset_with_masks[index]
            mask = _as_mask(item["mask"])
            scores = localisation(baseline_map(method, *mask.shape), mask)
            if method == "uniform":
                scores["pointing_game"] = float(mask.mean())
            rows.append({"index": index, "path": item.get("path"), "method": method,
                         "mask_pixels": int(mask.sum()), **scores})
        return pd.DataFrame(rows)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = []
    cam = GradCAM(model) if method == "gradcam" else None
    with cam if cam is not None else contextlib.nullcontext():
        for start in range(0, len(dataset_with_masks), batch_size):
            stop = min(start + batch_size, len(dataset_with_masks))
            items = [dataset_with_masks[i] for i in range(start, stop)]
            x = torch.stack([item["image"] for item in items]).to(device)  # B x C x H x W
            maps = cam(x, class_idx=class_idx) if cam is not None else attention_map(model, x)
            for offset, (item, heat) in enumerate(zip(items, maps, strict=True)):
                mask = _as_mask(item["mask"])
                rows.append({
                    "index": start + offset,
                    "path": item.get("path"),
                    "method": method,
                    "mask_pixels": int(mask.sum()),
                    **localisation(heat, mask),
                })
    return pd.DataFrame(rows)
