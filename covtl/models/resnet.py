"""ResNets with 0, 1 or 5 non-local attention blocks (paper A, sec. 6.2; STUDY.md "Networks").

Built on torchvision's :class:`~torchvision.models.ResNet`, keeping its module names
(``conv1``, ``layer1`` ... ``layer4``, ``fc``) so a torchvision state dict loads with only
the new attention parameters missing. A stage that receives attention blocks becomes an
:class:`AttnStage`: its residual blocks keep their names ``layerX.<i>`` and the blocks
inserted after them are ``layerX.attn.<i>``.

Placement (paper A: "all ATTNs are added at the end of the corresponding residual blocks";
res3 = ``layer2``, res4 = ``layer3``, res5 = ``layer4``; in res3/res4 after the last two
blocks of the stage). Block indices, zero-based, for each depth:

=============  ========================  =================================================
network        1 ATTN                    5 ATTNs
=============  ========================  =================================================
ResNet-18      layer2[1]                 layer2[0,1], layer3[0,1], layer4[1]
ResNet-34      layer2[3]                 layer2[2,3], layer3[4,5], layer4[2]
ResNet-50      layer2[3]                 layer2[2,3], layer3[4,5], layer4[2]
ResNet-101     layer2[3]                 layer2[2,3], layer3[21,22], layer4[2]
=============  ========================  =================================================

(:data:`ATTN_PLACEMENT` holds the rule as data; :func:`attention_indices` resolves it.)
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from .attention import NonLocalBlock
from .base import FeatureAPI

__all__ = ["ATTN_PLACEMENT", "RESNET_DEPTHS", "AttnResNet", "AttnStage", "attention_indices"]

#: blocks per stage (layer1..layer4) and block type of each depth, as in torchvision
RESNET_DEPTHS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (tv_resnet.BasicBlock, (2, 2, 2, 2)),
    34: (tv_resnet.BasicBlock, (3, 4, 6, 3)),
    50: (tv_resnet.Bottleneck, (3, 4, 6, 3)),
    101: (tv_resnet.Bottleneck, (3, 4, 23, 3)),
}

#: number of ATTNs -> {stage: block positions counted from the end of the stage}
ATTN_PLACEMENT: dict[int, dict[str, tuple[int, ...]]] = {
    0: {},
    1: {"layer2": (-1,)},
    5: {"layer2": (-2, -1), "layer3": (-2, -1), "layer4": (-1,)},
}


def attention_indices(depth: int, n_attn: int) -> dict[str, tuple[int, ...]]:
    """Zero-based block indices after which ATTNs go, per stage, e.g. ``{"layer2": (3,)}``."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(RESNET_DEPTHS)}")
    if n_attn not in ATTN_PLACEMENT:
        raise ValueError(
            f"n_attn must be one of {sorted(ATTN_PLACEMENT)} (paper A's variants), got {n_attn}"
        )
    blocks = dict(zip(("layer1", "layer2", "layer3", "layer4"), RESNET_DEPTHS[depth][1], strict=True))
    return {
        stage: tuple(sorted(blocks[stage] + i for i in positions))
        for stage, positions in ATTN_PLACEMENT[n_attn].items()
    }


class AttnStage(nn.Module):
    """A residual stage whose block ``i`` may be followed by an attention block ``attn[i]``.

    Residual blocks are registered as ``"0"``, ``"1"``, ... exactly as in the
    ``nn.Sequential`` they come from; the attention blocks live in ``self.attn``.
    """

    def __init__(self, blocks: nn.Sequential, attn: dict[int, nn.Module]) -> None:
        super().__init__()
        for name, block in blocks.named_children():
            self.add_module(name, block)
        self._n_blocks = len(blocks)
        bad = [i for i in attn if not 0 <= i < self._n_blocks]
        if bad:
            raise ValueError(f"attention after block(s) {bad}, but the stage has {self._n_blocks}")
        self.attn = nn.ModuleDict({str(i): block for i, block in sorted(attn.items())})

    def __len__(self) -> int:
        return self._n_blocks

    def __getitem__(self, index: int) -> nn.Module:
        return self._modules[str(range(self._n_blocks)[index])]

    def __iter__(self) -> Iterator[nn.Module]:
        return (self[i] for i in range(self._n_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self):
            x = block(x)
            if str(i) in self.attn:
                x = self.attn[str(i)](x)
        return x


class AttnResNet(FeatureAPI, tv_resnet.ResNet):
    """torchvision ResNet with paper A's ATTNs and dropout before the classifier.

    Args:
        depth: 18, 34, 50 or 101.
        num_classes: outputs of ``fc``.
        n_attn: 0, 1 or 5 attention blocks (placement in the module docstring).
        dropout: probability of the dropout applied to the pooled features before ``fc``.
    """

    def __init__(
        self, depth: int, num_classes: int = 1000, n_attn: int = 0, dropout: float = 0.0
    ) -> None:
        block, layers = RESNET_DEPTHS.get(depth, (None, None))
        if block is None:
            raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(RESNET_DEPTHS)}")
        super().__init__(block, list(layers), num_classes=num_classes)
        self.depth = depth
        self.n_attn = n_attn
        for stage, indices in attention_indices(depth, n_attn).items():
            blocks = getattr(self, stage)
            channels = blocks[-1].conv1.in_channels  # a block's output width = next input
            setattr(self, stage, AttnStage(blocks, {i: NonLocalBlock(channels) for i in indices}))
        self.dropout = nn.Dropout(dropout)

    # torchvision's forward calls _forward_impl; route both through the feature API
    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)  # N x C x h x w

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.forward_maps(x)), 1)  # N x C

    @property
    def head(self) -> nn.Linear:
        return self.fc

    def set_head(self, head: nn.Linear) -> None:
        self.fc = head

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.layer4
