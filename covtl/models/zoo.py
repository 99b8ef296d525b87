"""Paper B's backbones other than ResNet: VGG-16, DenseNet-121/169, EfficientNet-b0/b1, CRNet.

The torchvision networks are built by torchvision's own builders (``weights=None``) and
their top-level modules are adopted unchanged, so module names (hence state-dict keys) are
torchvision's and its ImageNet weights load as they are. Only ``forward`` is ours, split into
``forward_features`` / ``forward_head`` (see :mod:`covtl.models.base`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .base import FeatureAPI

__all__ = ["CRNet", "DenseNetClassifier", "EfficientNetClassifier", "VGGClassifier"]


class VGGClassifier(FeatureAPI, nn.Module):
    """VGG-16 (torchvision ``vgg16``); features = the 4096-d output of the second FC layer.

    ``dropout`` is torchvision's: the probability of both dropouts in the classifier MLP,
    the second of which sits right before the final linear layer.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        tv = torchvision.models.vgg16(weights=None, num_classes=num_classes, dropout=dropout)
        self.features, self.avgpool, self.classifier = tv.features, tv.avgpool, tv.classifier
        self.dropout = nn.Identity()  # already inside classifier[:-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)  # N x 25088
        return self.classifier[:-1](x)  # N x 4096

    @property
    def head(self) -> nn.Linear:
        return self.classifier[-1]

    def set_head(self, head: nn.Linear) -> None:
        self.classifier[-1] = head

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.features


class DenseNetClassifier(FeatureAPI, nn.Module):
    """DenseNet-121/169 (torchvision); ``dropout`` is applied to the pooled features.

    torchvision's forward ends with an in-place ReLU on the feature map, which breaks
    backward hooks on ``features``; ours is out of place.
    """

    def __init__(self, depth: int, num_classes: int = 1000, dropout: float = 0.0) -> None:
        super().__init__()
        builders = {121: torchvision.models.densenet121, 169: torchvision.models.densenet169}
        if depth not in builders:
            raise ValueError(f"unsupported DenseNet depth {depth}; choose one of {sorted(builders)}")
        tv = builders[depth](weights=None, num_classes=num_classes)
        self.features, self.classifier = tv.features, tv.classifier
        self.dropout = nn.Dropout(dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.features(x))  # N x C x h x w, not in place
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    @property
    def head(self) -> nn.Linear:
        return self.classifier

    def set_head(self, head: nn.Linear) -> None:
        self.classifier = head

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.features


class EfficientNetClassifier(FeatureAPI, nn.Module):
    """EfficientNet-b0/b1 (torchvision); ``dropout`` is torchvision's pre-classifier dropout."""

    def __init__(self, variant: str, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        builders = {"b0": torchvision.models.efficientnet_b0, "b1": torchvision.models.efficientnet_b1}
        if variant not in builders:
            raise ValueError(f"unsupported EfficientNet {variant!r}; choose one of {sorted(builders)}")
        tv = builders[variant](weights=None, num_classes=num_classes, dropout=dropout)
        self.features, self.avgpool, self.classifier = tv.features, tv.avgpool, tv.classifier

    @property
    def dropout(self) -> nn.Module:  # type: ignore[override]
        return self.classifier[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)  # N x 1280

    @property
    def head(self) -> nn.Linear:
        return self.classifier[1]

    def set_head(self, head: nn.Linear) -> None:
        self.classifier[1] = head

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.features


class CRNet(FeatureAPI, nn.Module):
    """CRNet of paper B (sec. III-B, Fig. 3), built from the text.

    (conv32-bn-relu), maxpool, (conv64-relu), maxpool, (conv128-relu), maxpool, global
    avgpool, classification layer; every conv 7x7, stride 1; every maxpool 3x3, stride 2.

    Choices the text leaves open: "same" padding (3) for the convs; the text calls the
    global pool both "global" and "2x2, stride 2" -- we use a global (adaptive 1x1) average
    pool, so the network accepts any input size and the classifier sees 128 features;
    convs keep their bias. With 1000 classes this gives 635,752 parameters, not Table II's
    546,882: no reading of the text we tried (kernel 3/5/7, with/without conv bias, 1 or 3
    input channels, BN in every block, 2/1000 classes, 2x2 pooled features) reaches 546,882,
    so the published count cannot be reproduced from the text (tests/test_models.py records
    both numbers).
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=7, stride=1, padding=3),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(32, 64, kernel_size=7, stride=1, padding=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 128, kernel_size=7, stride=1, padding=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(128, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)  # N x 128

    @property
    def head(self) -> nn.Linear:
        return self.fc

    def set_head(self, head: nn.Linear) -> None:
        self.fc = head

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.features
