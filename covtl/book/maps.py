"""The explanation pages (paper A's Fig. 4, paper B's Fig. 5): the maps, their scores, and
whether the networks they explain learned anything (a network that did not learn draws noise).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..io import json_float
from ..plotting import METHOD_NAMES, message_figure, overlays
from .results import Results

__all__ = ["explain_figure", "explained_networks", "figure_maps", "localisation_table"]

#: the localisation scores of an explain run (covtl.explain.localisation), as the book names them
SCORE_NAMES = {"pointing_game": "pointing game", "energy_inside": "energy inside", "iou_at_half": "IoU at half maximum"}


def localisation_table(res: Results | None, table: str) -> pd.DataFrame:
    """Mean localisation scores on the lesion masks per explain run (A-Fig4, B-Fig5) and method."""
    cols = ["model", "setting", "method", *SCORE_NAMES.values(), "images"]
    if res is None:
        return pd.DataFrame(columns=cols).set_index(["model", "setting", "method"])
    rows = []
    for cell in res.cells(table):
        rec = res.record(cell["runs"][0])
        for method, scores in rec["localisation"].items():
            rows.append({"model": cell["model"], "setting": cell["setting"], "method": METHOD_NAMES.get(method, method),
                         **{SCORE_NAMES.get(k, k): json_float(v) for k, v in scores.items()},
                         "images": rec.get("n_images", np.nan)})
    return pd.DataFrame(rows, columns=cols).set_index(["model", "setting", "method"])


def explained_networks(res: Results | None, table: str) -> pd.DataFrame:
    """Per explain run of a figure: the fine-tuned network it explains and whether that network
    learned the task (:meth:`covtl.book.Evidence.collapse` on its test predictions)."""
    cols = ["model", "setting", "fine-tuning run", "learned"]
    if res is None:
        return pd.DataFrame(columns=cols).set_index(["model", "setting"])
    rows = []
    for cell in res.cells(table):
        upstream = res.plan["runs"][cell["runs"][0]]["upstream"]
        why = res.evidence().collapse({"runs": [upstream]}) if upstream else "no fine-tuned network"
        rows.append({"model": cell["model"], "setting": cell["setting"], "fine-tuning run": upstream or "",
                     "learned": f"no: {why}" if why else "yes"})
    return pd.DataFrame(rows, columns=cols).set_index(["model", "setting"])


def figure_maps(res: Results | None, table: str) -> dict[str, Any]:
    """The ``maps.pt`` of a figure's explain runs merged: shared ``images``/``masks``, one heatmap per
    (cell, method) named "<method>: <model>" (B-Fig5: "<method>: <model> (<setting>)"); empty if nothing has run."""
    import torch

    out: dict[str, Any] = {}
    if res is None:
        return out
    for cell in res.cells(table):
        maps = torch.load(res.root / "runs" / cell["runs"][0] / "maps.pt", weights_only=True)
        if "images" in out and not torch.equal(out["images"], maps["images"]):
            raise ValueError(f"the explain runs of {table} used different images; they cannot share a figure")
        out.setdefault("images", maps["images"])
        if "masks" in maps:
            out.setdefault("masks", maps["masks"])
        for method in ("gradcam", "attention"):
            if method in maps:
                # A-Fig4's "settings" name the method; B-Fig5's name the initialisation
                which = cell["model"] if cell["setting"] in METHOD_NAMES.values() else \
                    f"{cell['model']} ({cell['setting']})"
                out[f"{METHOD_NAMES[method]}: {which}"] = maps[method]
    return out


def explain_figure(res: Results | None, table: str, max_images: int = 4) -> Figure:
    """:func:`covtl.plotting.overlays` of every heatmap of a figure's explain runs (a message until they have run)."""
    maps = figure_maps(res, table)
    if not maps:
        return message_figure(f"the explain runs of {table} have not run yet")
    keys = [k for k in maps if k not in ("images", "masks")]
    return overlays(maps, keys, max_images=max_images, titles={k: k.replace(": ", "\n", 1) for k in keys})
