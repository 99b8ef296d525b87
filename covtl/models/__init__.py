"""Networks of both papers behind one factory, :func:`build_model`.

>>> from covtl.models import build_model
>>> net = build_model("resnet50", num_classes=2, n_attn=5)          # paper A, 5 ATTNs
>>> net = build_model("densenet169", num_classes=2, weights="IMAGENET1K_V1")  # paper B

Every network has the feature API of :mod:`covtl.models.base` (``forward_features``,
``forward_head``, ``head``, ``gradcam_layer``, ``last_attention``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch import nn

from .attention import NonLocalBlock, attention_matrix
from .base import FeatureAPI
from .resnet import ATTN_PLACEMENT, AttnResNet, AttnStage, attention_indices
from .weights import (
    LoadReport,
    load_state_dict_checked,
    read_state_dict,
    torchvision_weights_file,
)
from .zoo import CRNet, DenseNetClassifier, EfficientNetClassifier, VGGClassifier

__all__ = [
    "ATTN_PLACEMENT",
    "MODEL_NAMES",
    "AttnResNet",
    "AttnStage",
    "CRNet",
    "FeatureAPI",
    "LoadReport",
    "NonLocalBlock",
    "attention_indices",
    "attention_matrix",
    "build_model",
    "count_parameters",
    "has_imagenet_weights",
]

# name -> (builder(num_classes, n_attn, dropout), torchvision model name or None)
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], str | None]] = {
    "resnet18": (lambda c, a, d: AttnResNet(18, c, a, d or 0.0), "resnet18"),
    "resnet34": (lambda c, a, d: AttnResNet(34, c, a, d or 0.0), "resnet34"),
    "resnet50": (lambda c, a, d: AttnResNet(50, c, a, d or 0.0), "resnet50"),
    "resnet101": (lambda c, a, d: AttnResNet(101, c, a, d or 0.0), "resnet101"),
    "vgg16": (lambda c, a, d: VGGClassifier(c, 0.5 if d is None else d), "vgg16"),
    "densenet121": (lambda c, a, d: DenseNetClassifier(121, c, d or 0.0), "densenet121"),
    "densenet169": (lambda c, a, d: DenseNetClassifier(169, c, d or 0.0), "densenet169"),
    "efficientnet_b0": (
        lambda c, a, d: EfficientNetClassifier("b0", c, 0.2 if d is None else d),
        "efficientnet_b0",
    ),
    "efficientnet_b1": (
        lambda c, a, d: EfficientNetClassifier("b1", c, 0.2 if d is None else d),
        "efficientnet_b1",
    ),
    "crnet": (lambda c, a, d: CRNet(c, d or 0.0), None),
}

#: every name :func:`build_model` accepts
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)
#: the backbones that take attention blocks (paper A)
ATTN_MODELS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101")
#: paper B's eight backbones, in Table II's order
PAPER_B_MODELS: tuple[str, ...] = (
    "vgg16",
    "resnet18",
    "resnet50",
    "densenet121",
    "densenet169",
    "efficientnet_b0",
    "efficientnet_b1",
    "crnet",
)


def build_model(
    name: str,
    *,
    num_classes: int = 1000,
    n_attn: int = 0,
    dropout: float | None = None,
    weights: str | os.PathLike | None = None,
    download: bool = False,
) -> nn.Module:
    """Build a network by name, optionally with weights.

    Args:
        name: one of :data:`MODEL_NAMES`.
        num_classes: outputs of the classifier.
        n_attn: 0, 1 or 5 non-local blocks (ResNets only; placement in
            :mod:`covtl.models.resnet`).
        dropout: probability of the dropout before the final linear layer (default: the
            architecture's own, 0.5 for VGG-16, 0.2 for EfficientNet, else 0).
        weights: ``None`` (random init); the path of a local state-dict file or covtl
            checkpoint; or a torchvision weights name (``"IMAGENET1K_V1"``, ``"DEFAULT"``,
            ``"ResNet50_Weights.IMAGENET1K_V2"``) found in the local torch cache. New
            attention blocks keep their identity init; a head of another class count is
            re-initialised.
        download: fetch missing torchvision weights (needs network; off by default).

    Raises:
        ValueError: unknown name, attention on a network that does not take it, or weights
            that do not fit.
        FileNotFoundError: a weights file that does not exist or is not cached.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if n_attn and name not in ATTN_MODELS:
        raise ValueError(
            f"n_attn={n_attn} but {name} takes no attention blocks; only {', '.join(ATTN_MODELS)} do"
        )
    builder, tv_name = _REGISTRY[name]
    model = builder(num_classes, n_attn, dropout)
    # every classifier starts small (N(0, 0.01), zero bias), so a random-init network starts
    # near the chance-level cross-entropy: torchvision's EfficientNet head (uniform within
    # 1/sqrt(classes)) starts a 2-class task at ~4.6, nn.Linear's default at ~1.0
    nn.init.normal_(model.head.weight, std=0.01)
    nn.init.zeros_(model.head.bias)
    if weights is None:
        return model
    if _looks_like_path(weights) or tv_name is None:
        state = read_state_dict(weights)
    else:
        state = read_state_dict(torchvision_weights_file(tv_name, str(weights), download=download))
    head_weight = next(n for n, p in model.named_parameters() if p is model.head.weight)
    head_prefix = head_weight.removesuffix("weight")
    attn_prefixes = tuple(n + "." for n, _ in model.attention_blocks)
    model.load_report = load_state_dict_checked(
        model, state, allow_missing=attn_prefixes, head_prefix=head_prefix
    )
    return model


_WEIGHT_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".tar"}


def has_imagenet_weights(name: str) -> bool:
    """Whether torchvision publishes ImageNet weights for ``name`` (CRNet has none: B trained it)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return _REGISTRY[name][1] is not None


def _looks_like_path(weights: str | os.PathLike) -> bool:
    text = os.fspath(weights)
    return (
        isinstance(weights, os.PathLike)
        or os.sep in text
        or Path(text).suffix.lower() in _WEIGHT_SUFFIXES
        or Path(text).is_file()
    )


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
