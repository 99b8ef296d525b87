"""The explanation pages (paper A's Fig. 4, paper B's Fig. 5): the maps, their scores, and
whether the networks they explain learned anything (a network that did not learn draws noise).

An explain run saves its maps with the CT slices and masks they were drawn on (``maps.pt``),
which is never committed. For a committed study the figure is therefore kept as a picture,
``<results>/figures/<table>-maps.png`` (:func:`write_maps_figure`, run by
``bench/collect_results.sh``), with a record of the explain runs it was drawn from; the page
draws the maps live when ``maps.pt`` is there and shows the picture otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..io import json_float
from ..plotting import METHOD_NAMES, message_figure, overlays
from .results import Results

__all__ = ["explain_figure", "explained_networks", "figure_maps", "localisation_table", "maps_picture",
           "write_maps_figure"]

#: the localisation scores of an explain run (covtl.explain.localisation), as the book names them
SCORE_NAMES = {"pointing_game": "pointing game", "energy_inside": "energy inside", "iou_at_half": "IoU at half maximum"}


def _as_number(v: Any) -> Any:
    """A network map's pointing game (True/False in the CSV, text when methods mix) as 1.0/0.0."""
    return {"True": 1.0, "False": 0.0}.get(v, v) if isinstance(v, str) else v


def _per_image(res: Results, run_id: str) -> pd.DataFrame | None:
    """The run's ``localisation.csv`` (one row per image and method), or ``None`` if it has none."""
    path = res.root / "runs" / run_id / "localisation.csv"
    return pd.read_csv(path) if path.is_file() else None


def localisation_table(res: Results | None, table: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Localisation scores on the lesion masks per explain run (A-Fig4, B-Fig5) and method: the
    mean over the mask slices with a 95% bootstrap interval, and each score minus the uniform
    map's on the same resampled slices ("vs uniform": above zero, the map beats a map that
    ignores the image). Slices are resampled one by one (the masks' patients are not recorded),
    with the same draws for every method of a run. Runs without per-image scores show the means."""
    from ..metrics import patient_weights
    from .tables import interval_text

    cols = ["model", "setting", "method", *SCORE_NAMES.values(), "images"]
    if res is None:
        return pd.DataFrame(columns=cols).set_index(["model", "setting", "method"])
    rows = []
    for cell in res.cells(table):
        run = cell["runs"][0]
        rec, per_image = res.record(run), _per_image(res, run)
        if per_image is None:  # an older explain run: its means only
            for method, scores in rec["localisation"].items():
                rows.append({"model": cell["model"], "setting": cell["setting"],
                             "method": METHOD_NAMES.get(method, method),
                             **{SCORE_NAMES.get(k, k): f"{json_float(v):.3f}" for k, v in scores.items()},
                             "images": rec.get("n_images", np.nan)})
            continue
        wide = {m: g.set_index("path")[list(SCORE_NAMES)].map(_as_number).astype(float)
                for m, g in per_image.groupby("method", sort=False)}
        paths = sorted(set.intersection(*(set(w.index) for w in wide.values())))
        weights = patient_weights(len(paths), n_boot, seed)  # slice multiplicities, shared by the methods
        draws = {m: weights @ w.loc[paths].to_numpy() / len(paths) for m, w in wide.items()}
        for method, w in wide.items():
            row = {"model": cell["model"], "setting": cell["setting"], "method": METHOD_NAMES.get(method, method),
                   "images": len(paths)}
            for k, (key, name) in enumerate(SCORE_NAMES.items()):
                mean = float(w.loc[paths, key].mean())
                low, high = np.percentile(draws[method][:, k], [2.5, 97.5])
                row[name] = interval_text(f"{mean:.3f}", f"{low:.3f}", f"{high:.3f}")
                if "uniform" in draws and method != "uniform":
                    diff = draws[method][:, k] - draws["uniform"][:, k]
                    d_mean = mean - float(wide["uniform"].loc[paths, key].mean())
                    lo, hi = np.percentile(diff, [2.5, 97.5])
                    row[f"{name} vs uniform"] = interval_text(f"{d_mean:+.3f}", f"{lo:+.3f}", f"{hi:+.3f}")
            rows.append(row)
    df = pd.DataFrame(rows)
    extra = [c for c in df.columns if c not in cols]
    return df.reindex(columns=cols[:-1] + extra + ["images"]).set_index(["model", "setting", "method"])


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


def _explain_runs(res: Results, table: str) -> list[str]:
    return [cell["runs"][0] for cell in res.cells(table)]


def _have_maps(res: Results, runs: list[str]) -> bool:
    """Every one of these explain runs still has its ``maps.pt``."""
    return all((res.root / "runs" / r / "maps.pt").is_file() for r in runs)


def maps_picture(root: str | Path, table: str) -> Path:
    """Where a study folder keeps the maps of ``table`` (A-Fig4, B-Fig5) as a picture."""
    return Path(root) / "figures" / f"{table}-maps.png"


def explain_figure(res: Results | None, table: str, max_images: int = 4) -> Figure | Any:
    """:func:`covtl.plotting.overlays` of every heatmap of a figure's explain runs; the committed
    picture of the same runs (:func:`write_maps_figure`) when their ``maps.pt`` is gone; a message
    until they have run."""
    runs = _explain_runs(res, table) if res is not None else []
    if runs and not _have_maps(res, runs):
        picture = maps_picture(res.root, table)
        record = picture.with_suffix(".json")
        if picture.is_file() and record.is_file() and json.loads(record.read_text()).get("runs") == runs:
            from IPython.display import Image

            return Image(filename=str(picture))
        return message_figure(f"the maps of {table}'s explain runs are not in this results folder\n"
                              "(maps.pt is never committed; bench/collect_results.sh keeps them as a picture)")
    maps = figure_maps(res, table)
    if not maps:
        return message_figure(f"the explain runs of {table} have not run yet")
    keys = [k for k in maps if k not in ("images", "masks")]
    return overlays(maps, keys, max_images=max_images, titles={k: k.replace(": ", "\n", 1) for k in keys})


def write_maps_figure(res: Results, table: str, dest: str | Path, max_images: int = 4) -> Path | None:
    """Draw the maps of ``table``'s finished explain runs (from their ``maps.pt``) into
    :func:`maps_picture` of the study folder ``dest``, with a record of the runs beside it;
    ``None`` (nothing written) until every explain run of the figure has finished."""
    runs = _explain_runs(res, table)
    if not runs or not _have_maps(res, runs):
        return None
    path = maps_picture(dest, table)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = explain_figure(res, table, max_images)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    os.replace(tmp, path)  # a picture is replaced whole, never left half-written
    path.with_suffix(".json").write_text(json.dumps(
        {"table": table, "runs": runs, "drawn_from": "maps.pt of these explain runs",
         "max_images": max_images}, indent=2) + "\n")
    return path
