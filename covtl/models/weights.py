"""Loading weights: a local state-dict file, or torchvision's published ImageNet weights.

Nothing here downloads unless asked (``download=True``): covtl runs offline. torchvision
weights are looked up in the local torch cache (``$TORCH_HOME/hub/checkpoints``, see
:func:`torch.hub.get_dir`); when the file is not there the error says which file to fetch and
where to put it. Every checkpoint is read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn

__all__ = [
    "LoadReport",
    "download_file",
    "load_state_dict_checked",
    "read_state_dict",
    "torchvision_weights",
    "torchvision_weights_file",
]

# torchvision's old DenseNet checkpoints name layers 'norm.1' etc. (see torchvision.models.densenet)
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)
# torchvision file names end in the first hex digits of the file's sha256: resnet50-0676ba61.pth
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


@dataclass
class LoadReport:
    """What :func:`load_state_dict_checked` did, key by key."""

    loaded: list[str] = field(default_factory=list)
    missing_allowed: list[str] = field(default_factory=list)  # e.g. new attention blocks
    head_reset: list[str] = field(default_factory=list)  # head keys skipped: class count differs


def torchvision_weights(tv_name: str, weights: str) -> torchvision.models.WeightsEnum:
    """Resolve ``"IMAGENET1K_V1"``, ``"DEFAULT"`` or ``"ResNet50_Weights.IMAGENET1K_V1"``."""
    enum = torchvision.models.get_model_weights(tv_name)
    member = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
    try:
        return enum[member] if member != "DEFAULT" else enum.DEFAULT
    except KeyError:
        valid = ", ".join(["DEFAULT", *enum.__members__])
        raise ValueError(
            f"unknown torchvision weights {weights!r} for {tv_name}; choose one of {valid}, or "
            "give the path of a local state-dict file"
        ) from None


def download_file(url: str, dest: Path, sha256_prefix: str | None = None) -> Path:
    """Download ``url`` to ``dest`` with :func:`covtl.data.fetch.download` (resumable; the file
    appears at ``dest`` only once complete and, when ``sha256_prefix`` is given, its sha256
    starts with it). A mismatching download leaves no file and raises ``ValueError``.
    """
    from ..data.fetch import ChecksumMismatchError, download

    try:
        download(url, dest, sha256_prefix=sha256_prefix)
    except ChecksumMismatchError as err:
        raise ValueError(f"{err} (corrupt download or wrong URL)") from None
    return Path(dest)


def torchvision_weights_file(
    tv_name: str, weights: str, *, download: bool = False, url: str | None = None
) -> Path:
    """Path of torchvision's weights file in the local torch cache.

    With ``download=True`` a missing file is fetched from ``url`` (default: torchvision's
    published URL, or ``$COVTL_WEIGHTS_MIRROR/<file name>`` when that variable names a mirror)
    and checked against the hash prefix in its published file name.
    """
    enum = torchvision_weights(tv_name, weights)
    file_name = enum.url.rsplit("/", 1)[-1]
    path = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if path.is_file():
        return path
    if not download:
        raise FileNotFoundError(
            f"torchvision weights {enum} are not in the local torch cache and covtl does not "
            f"download by default. Download {enum.url} by hand and put it at {path} (or set "
            "TORCH_HOME to the folder whose hub/checkpoints holds it), pass download=True on a "
            "machine that is online, or give the path of a local state-dict file instead."
        )
    mirror = os.environ.get("COVTL_WEIGHTS_MIRROR")
    url = url or (f"{mirror.rstrip('/')}/{file_name}" if mirror else enum.url)
    match = _HASH_IN_NAME.search(file_name)
    return download_file(url, path, match.group(1) if match and len(match.group(1)) >= 8 else None)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict (or a covtl/torchvision checkpoint holding one) with weights_only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise ValueError(
            f"cannot read weights file {path}: {err.__class__.__name__}: {err}. It must be a "
            "state dict saved with torch.save (tensors only; pickled code is refused)."
        ) from err
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"weights file {path} holds no state dict (expected a mapping of names to tensors, "
            "or a checkpoint with a 'model' or 'state_dict' entry)"
        )
    state = {k.removeprefix("module."): v for k, v in obj.items()}  # DataParallel checkpoints
    for key in list(state):
        if m := _DENSENET_OLD_KEY.match(key):
            state[m.group(1) + m.group(2)] = state.pop(key)
    return state


def load_state_dict_checked(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    allow_missing: tuple[str, ...] = (),
    head_prefix: str | None = None,
) -> LoadReport:
    """Load ``state`` into ``model``, refusing anything but the expected differences.

    Args:
        allow_missing: key prefixes that may be absent from ``state`` (they keep their init).
        head_prefix: keys of the classifier; if their shapes differ (another class count),
            they are skipped and the model's freshly initialised head is kept.

    Raises:
        ValueError: naming unexpected keys, missing keys, or shape mismatches.
    """
    own = model.state_dict()
    report = LoadReport()
    filtered: dict[str, torch.Tensor] = {}
    mismatched = []
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            if head_prefix and key.startswith(head_prefix):
                report.head_reset.append(key)
                continue
            mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            filtered[key] = value
    unexpected = sorted(set(filtered) - set(own))
    missing = sorted(set(own) - set(state))
    # BatchNorm's step counters are absent from older torchvision checkpoints; they are not weights
    not_allowed = [
        k for k in missing if not k.startswith(allow_missing) and not k.endswith("num_batches_tracked")
    ]
    problems = []
    if mismatched:
        problems.append("shape mismatches: " + "; ".join(mismatched[:5]))
    if unexpected:
        problems.append(f"{len(unexpected)} keys the model does not have, e.g. {unexpected[:5]}")
    if not_allowed:
        problems.append(f"{len(not_allowed)} keys missing from the weights, e.g. {not_allowed[:5]}")
    if problems:
        raise ValueError(
            f"weights do not fit {model.__class__.__name__}: " + " | ".join(problems)
            + ". Check that the weights were saved from the same architecture (name, depth, "
            "n_attn)."
        )
    model.load_state_dict(filtered, strict=False)
    report.loaded = sorted(filtered)
    report.missing_allowed = missing
    return report
