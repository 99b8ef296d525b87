"""Figures of the book: data in, a figure out.

Each function takes data (data frames, arrays, a ``maps.pt`` dict) and returns a
:class:`matplotlib.figure.Figure` (seaborn styling); nothing is read from files or saved here,
and nothing is drawn through pyplot's global state, so a page shows a figure once by making it
the last expression of a cell. What the figures are drawn from is :mod:`covtl.book`'s job.

- :func:`paper_vs_ours`: one panel per metric; per row the paper's number and ours (mean over
  seeds) with its 95% interval;
- :func:`overlays`: CT slices with heatmaps (Grad-CAM, attention) blended over them in a
  perceptually uniform colour map, and the infection mask outlined (paper A Fig. 4, paper B Fig. 5);
- :func:`score_vs_gain`: transferability scores against the fine-tuning gain, with the rank
  correlation;
- :func:`training_curves`: losses and validation accuracy per epoch;
- :func:`region_figure`: paper A's five lobe regions drawn inside the located lung box;
- :func:`message_figure`: a figure that says why there is nothing to draw yet.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["HEATMAP_CMAP", "METHOD_NAMES", "METRIC_NAMES", "BookFigure", "message_figure", "overlays",
           "paper_vs_ours", "region_figure", "score_vs_gain", "training_curves"]

#: the maps an explain run scores (covtl.explain): the network's, and two that ignore the image
METHOD_NAMES = {"gradcam": "Grad-CAM", "attention": "attention", "uniform": "uniform map (no image)",
                "centre": "centre prior (no image)"}
METRIC_NAMES = {"accuracy": "accuracy", "f1": "F1", "auc": "AUC", "top1": "top-1", "top5": "top-5", "leep": "LEEP"}
#: heatmaps in a perceptually uniform map (dark = low, bright yellow = high): equal steps in the map's
#: value look like equal steps in colour, unlike ``jet``, whose bright bands invent edges
HEATMAP_CMAP = "inferno"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


class BookFigure(Figure):
    """A Figure that shows itself as a PNG in Jupyter (``_repr_png_``) without pyplot or a backend."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        return buffer.getvalue()


def _figure(nrows: int, ncols: int, width: float, height: float, **kw) -> tuple[Figure, np.ndarray]:
    import seaborn as sns

    fig = BookFigure(figsize=(width, height), layout="constrained")
    with sns.axes_style("whitegrid"):
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def message_figure(text: str) -> Figure:
    """A small figure holding only ``text`` (e.g. why there is nothing to draw yet)."""
    fig, axes = _figure(1, 1, 6.0, 1.2)
    axes[0][0].axis("off")
    axes[0][0].text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def paper_vs_ours(df: pd.DataFrame, title: str | None = None) -> Figure:
    """Dot plot: one panel per metric, one line per row; ours = dot with its interval, paper = diamond.

    Args:
        df: long table with columns ``row`` (label), ``metric``, ``paper`` (NaN if the paper has
            no number), ``mean``, ``low``, ``high`` (ours; NaN when not run or no interval), all in
            the paper's scale; e.g. :func:`covtl.book.long_comparison`.
    """
    import seaborn as sns

    need = {"row", "metric", "paper", "mean", "low", "high"}
    if missing := need - set(df.columns):
        raise ValueError(f"paper_vs_ours needs columns {sorted(need)}; missing {sorted(missing)}")
    metrics = list(dict.fromkeys(df.metric)) or ["(nothing)"]
    rows = list(dict.fromkeys(df.row))
    fig, axes = _figure(1, len(metrics), 2.3 * len(metrics) + 2.2, 0.38 * max(len(rows), 2) + 1.5,
                        sharey=True)
    pos = {r: i for i, r in enumerate(rows)}
    palette = sns.color_palette("colorblind")
    for ax, metric in zip(axes[0], metrics, strict=True):
        d = df[df.metric == metric]
        y = d.row.map(pos).to_numpy(dtype=float)
        ours = d["mean"].to_numpy(dtype=float)
        lo, hi = d["low"].to_numpy(dtype=float), d["high"].to_numpy(dtype=float)
        err = np.vstack([np.where(np.isnan(lo), 0, ours - lo), np.where(np.isnan(hi), 0, hi - ours)])
        has = ~np.isnan(ours)
        ax.errorbar(ours[has], y[has] + 0.12, xerr=err[:, has], fmt="o", color=palette[0], capsize=3,
                    label="ours (95% interval)")
        ax.scatter(d.paper, y - 0.12, marker="D", facecolors="none", edgecolors=palette[3], s=36,
                   label="paper", zorder=3)
        ax.set_title(METRIC_NAMES.get(metric, metric))
        ax.set_yticks(range(len(rows)), rows)
        ax.set_ylim(max(len(rows), 1) - 0.5, -0.5)
        if d.empty or (not has.any() and d.paper.isna().all()):
            ax.text(0.5, 0.5, "nothing to plot", transform=ax.transAxes, ha="center", va="center")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def _display_image(image) -> np.ndarray:
    """C x H x W normalised tensor/array (ImageNet mean/std) -> H x W x 3 in [0, 1]."""
    x = np.asarray(image, dtype=float)
    if x.ndim == 3 and x.shape[0] in (1, 3):
        x = np.moveaxis(x, 0, -1)
    if x.ndim == 3 and x.shape[-1] == 3:
        x = x * IMAGENET_STD + IMAGENET_MEAN
    elif x.ndim == 3:
        x = np.repeat(x, 3, axis=-1)
    return np.clip(x, 0, 1)


def overlays(maps: Mapping[str, Any], heatmaps: Sequence[str] | None = None, *, alpha: float = 0.5,
             cmap: str = HEATMAP_CMAP, max_images: int = 4, titles: Mapping[str, str] | None = None) -> Figure:
    """A grid, one row per image: the slice, then each heatmap blended over it, the infection mask
    outlined on every panel; a colour bar under the heatmaps.

    Args:
        maps: a ``maps.pt`` dict: ``images`` (N x 3 x s x s, ImageNet-normalised), heatmaps
            (N x s x s in [0, 1], e.g. ``gradcam``, ``attention``) and optionally ``masks``
            (N x 1 x s x s or N x s x s).
        heatmaps: which keys to show, in order (default: ``gradcam`` and ``attention`` if present).
        cmap: the heatmaps' colour map; keep it perceptually uniform (:data:`HEATMAP_CMAP`).
        titles: column titles per heatmap key (default: the key).
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from .explain import overlay

    if "images" not in maps:
        raise ValueError("overlays needs maps['images'] (N x 3 x s x s)")
    keys = list(heatmaps) if heatmaps is not None else [k for k in ("gradcam", "attention") if k in maps]
    if unknown := [k for k in keys if k not in maps]:
        raise ValueError(f"no heatmap {unknown} in maps; keys are {sorted(maps)}")
    images = np.asarray(maps["images"])[:max_images]
    masks = np.asarray(maps["masks"])[:max_images] if "masks" in maps else None
    if masks is not None and masks.ndim == 4:
        masks = masks[:, 0]
    titles = {**{k: METHOD_NAMES.get(k, k) for k in keys}, **(titles or {})}
    ncols = 1 + len(keys)
    fig, axes = _figure(len(images), ncols, 2.5 * ncols, 2.5 * len(images) + 1.0)
    for i, image in enumerate(images):
        shown = _display_image(image)
        panels = [("CT slice" + ("\n(infection mask)" if masks is not None else ""), shown)]
        panels += [(titles[k], overlay(shown, np.asarray(maps[k])[i], alpha=alpha, cmap=cmap)) for k in keys]
        for j, (name, picture) in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(picture)
            if masks is not None and masks[i].any():
                ax.contour(masks[i] > 0.5, levels=[0.5], colors="cyan", linewidths=1.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if i == 0:
                ax.set_title(name, fontsize=14)
    if keys:
        bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=cmap), ax=axes[-1, 1:].tolist(),
                           location="bottom", shrink=0.8, aspect=30)
        bar.set_label("heatmap, low to high" + ("; infection mask outlined in cyan" if masks is not None else ""),
                      fontsize=13)
        bar.ax.tick_params(labelsize=12)
    return fig


def _widen_if_flat(ax, axis: str, values: np.ndarray) -> None:
    """Give a (nearly) constant axis a visible range around its value, so its ticks read e.g. 0.95
    to 1.05 rather than 1 +- rounding noise printed to twenty digits."""
    from .book.tables import nearly_constant

    v = values[np.isfinite(values)]
    if v.size and nearly_constant(v):
        centre = float(v.mean())
        half = 0.05 * max(1.0, abs(centre))
        (ax.set_xlim if axis == "x" else ax.set_ylim)(centre - half, centre + half)


def score_vs_gain(df: pd.DataFrame, score: str | Sequence[str], gain: str = "gain") -> Figure:
    """Scatter of transferability scores (x) against the fine-tuning gain (y), one panel per score,
    two panels a row.

    Each panel's title gives Spearman's rank correlation and the number of points. ``df`` has a
    column per score, the ``gain`` column and optionally ``model`` and ``setting`` (hue, style).
    """
    import seaborn as sns

    from .book.tables import SCORE_NAMES, rank_correlation

    scores = [score] if isinstance(score, str) else list(score)
    if missing := [c for c in [*scores, gain] if c not in df.columns]:
        raise ValueError(f"score_vs_gain: no column(s) {missing}; columns are {list(df.columns)}")
    ncols = min(2, len(scores))
    nrows = -(-len(scores) // ncols)
    fig, grid = _figure(nrows, ncols, 4.6 * ncols, 3.6 * nrows)
    axes = grid.ravel()
    for ax, s in zip(axes, scores, strict=False):
        d = df[np.isfinite(df[s].astype(float)) & np.isfinite(df[gain].astype(float))]
        kw = {"hue": "model"} if "model" in d.columns and not d.empty else {}
        if "setting" in d.columns and not d.empty:
            kw["style"] = "setting"
        sns.scatterplot(data=d, x=s, y=gain, ax=ax, s=70, legend=ax is axes[0], **kw)
        x, y = d[s].to_numpy(dtype=float), d[gain].to_numpy(dtype=float)
        rho, p = rank_correlation(x, y)
        name = SCORE_NAMES.get(s, s)
        fit = f"Spearman rho = {rho:.2f} (p = {p:.2g}, n = {len(d)})" if np.isfinite(rho) else \
            f"rank correlation undefined (n = {len(d)})"
        ax.set_title(f"{name}: {fit}", fontsize=11)
        ax.set_xlabel(name, fontsize=11)
        ax.set_ylabel("gain (percentage points)" if gain == "gain" else gain, fontsize=11)
        _widen_if_flat(ax, "x", x)
        _widen_if_flat(ax, "y", y)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.ticklabel_format(axis="both", style="plain", useOffset=False)
        ax.axhline(0, color="grey", lw=0.8)
    legend = axes[0].get_legend()
    if legend is not None:
        handles, labels = axes[0].get_legend_handles_labels()
        legend.remove()
        if len(scores) < len(axes):  # the legend takes the free panel
            spare = axes[len(scores)]
            spare.axis("off")
            spare.legend(handles, labels, loc="center", frameon=False, fontsize=10)
        else:
            fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize=10)
    for ax in axes[len(scores) + (legend is not None):]:
        ax.set_visible(False)
    return fig


def training_curves(history: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure:
    """Loss (train solid, val dashed) and validation accuracy per epoch; two panels.

    ``history`` is one run's ``history`` list (per epoch ``epoch``, ``train_loss``, ``val_loss``,
    ``val_acc``) or a mapping label -> history to compare runs.
    """
    import seaborn as sns

    runs = dict(history) if isinstance(history, Mapping) else {"run": history}
    fig, axes = _figure(1, 2, 8.0, 3.0)
    loss_ax, acc_ax = axes[0]
    for (label, hist), colour in zip(runs.items(), sns.color_palette("colorblind", len(runs)), strict=False):
        h = pd.DataFrame(list(hist))
        if h.empty:
            continue
        epoch = h["epoch"] + 1 if "epoch" in h else np.arange(1, len(h) + 1)
        if "train_loss" in h:
            loss_ax.plot(epoch, h.train_loss, "-o", ms=3, color=colour, label=f"{label} train")
        if "val_loss" in h:
            loss_ax.plot(epoch, h.val_loss, "--s", ms=3, color=colour, label=f"{label} val")
        if "val_acc" in h:
            acc_ax.plot(epoch, h.val_acc, "-o", ms=3, color=colour, label=label)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def region_figure(images: Sequence[np.ndarray], titles: Sequence[str] | None = None) -> Figure:
    """Paper A's Generator on CT slices: the located lung box and the five lobe regions.

    ``images`` are H x W (or H x W x 3) arrays; each panel shows one with the lung box (dashed)
    and the regions of :data:`covtl.regions.REGION_TUPLES` drawn in it.
    """
    import seaborn as sns
    from matplotlib.patches import Rectangle

    from .regions import lung_box, region_boxes

    fig, axes = _figure(1, max(len(images), 1), 2.8 * max(len(images), 1), 3.0)
    colours = dict(zip(("ru", "rm", "rl", "lu", "ll"), sns.color_palette("bright", 5), strict=True))
    for i, (ax, image) in enumerate(zip(axes[0], images, strict=False)):
        grey = np.asarray(image, dtype=float)
        grey = grey.mean(axis=-1) if grey.ndim == 3 else grey
        box = lung_box(grey)
        ax.imshow(grey, cmap="gray")
        ax.add_patch(Rectangle((box.left, box.top), box.right - box.left, box.bottom - box.top,
                               fill=False, ls="--", color="white", lw=1))
        for name, (top, left, bottom, right) in region_boxes(box, *grey.shape).items():
            ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, color=colours[name], lw=1.5))
            ax.text(left + 2, top + 2, name, color=colours[name], fontsize=8, va="top")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        ax.set_title((titles[i] if titles else "") + ("" if box.found else " (no lungs found)"), fontsize=8)
    return fig

