"""Provenance of a result file: which code, environment, device and seed produced it."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

__all__ = ["git_commit", "installed_packages", "provenance"]


def git_commit(repo: Path | None = None) -> str:
    """The checked-out commit (with ``+dirty`` if tracked files changed), or ``"unknown"``."""
    cwd = repo or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


@lru_cache(maxsize=1)
def installed_packages() -> dict[str, str]:
    """Every distribution installed in this environment, name -> version, sorted by name."""
    from importlib.metadata import distributions

    found = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(name.lower(), dist.version)
    return dict(sorted(found.items()))


def provenance(**extra: Any) -> dict[str, Any]:
    """A JSON-able record: commit, versions (every installed package), device, threads, host, time,
    plus ``extra`` (seed, data...)."""
    import torchvision

    from . import __version__

    return {
        "commit": git_commit(),
        "covtl": __version__,
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "packages": installed_packages(),
        **extra,
    }
