"""The feature API every covtl classifier exposes (after timm's ``forward_features``).

LEEP needs the source head's probabilities and the penultimate features; Grad-CAM needs the
last convolutional stage; the attention figure needs the last attention block; the stage
hand-off needs to swap the classifier. One small mixin gives every network the same names:

- ``forward_features(x)``: N x 3 x H x W -> N x D pooled penultimate features;
- ``forward_head(f)``: N x D -> N x classes logits (dropout, then the final linear layer);
- ``forward(x) = forward_head(forward_features(x))``;
- ``head`` / ``set_head``: the final ``nn.Linear``; ``reset_head(num_classes)`` replaces it;
- ``gradcam_layer``: the module whose output map Grad-CAM weights;
- ``attention_blocks`` / ``last_attention``: the non-local blocks, in forward order.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import NonLocalBlock

__all__ = ["FeatureAPI"]


class FeatureAPI:
    """Mixin for ``nn.Module`` classifiers; subclasses define the abstract members."""

    dropout: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def head(self) -> nn.Linear:  # pragma: no cover - abstract
        raise NotImplementedError

    def set_head(self, head: nn.Linear) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def gradcam_layer(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def reset_head(self, num_classes: int) -> nn.Linear:
        """Replace the classifier by a freshly initialised one with ``num_classes`` outputs."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        old = self.head
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        self.set_head(new)
        return new

    @property
    def attention_blocks(self) -> list[tuple[str, NonLocalBlock]]:
        return [(n, m) for n, m in self.named_modules() if isinstance(m, NonLocalBlock)]

    @property
    def last_attention(self) -> NonLocalBlock | None:
        blocks = self.attention_blocks
        return blocks[-1][1] if blocks else None
