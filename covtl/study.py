"""The study runner.

So far the study has the parts that need no training: paper B's Table II (parameter
counts of the eight backbones) and the attention variants of paper A's ResNets. Later
stages (data, training, self-supervision, the book) add their runs here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .io import write_json_atomic
from .models import ATTN_MODELS, PAPER_B_MODELS, build_model, count_parameters
from .provenance import provenance

__all__ = ["run_study", "parameter_counts"]

log = logging.getLogger(__name__)


def parameter_counts(num_classes: int = 1000) -> list[dict]:
    """Parameters of paper B's backbones and paper A's ResNet variants (``num_classes`` outputs)."""
    rows = [
        {"paper": "B", "model": name, "n_attn": 0,
         "parameters": count_parameters(build_model(name, num_classes=num_classes))}
        for name in PAPER_B_MODELS
    ]
    rows += [
        {"paper": "A", "model": name, "n_attn": n_attn,
         "parameters": count_parameters(build_model(name, num_classes=num_classes, n_attn=n_attn))}
        for name in ("resnet50", "resnet101") if name in ATTN_MODELS
        for n_attn in (0, 1, 5)
    ]
    return rows


def run_study(profile: str, results: Path, data_root: str | None = None) -> Path:
    """Run every table of the study that exists so far; return the profile's result folder."""
    out = Path(results) / profile
    start = time.perf_counter()
    rows = parameter_counts()
    path = write_json_atomic(
        out / "b-table2" / "parameters.json",
        {
            "rows": rows,
            "provenance": provenance(profile=profile, data=data_root or "none (no data needed)",
                                     seed=None, device="cpu",
                                     wall_time_s=round(time.perf_counter() - start, 2)),
        },
    )
    print(f"wrote {path}")
    return out
