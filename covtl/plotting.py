"""Figures of the book, and the small page helpers that read result files for them.

Figures take data and return a :class:`matplotlib.figure.Figure` (seaborn styling); nothing is
saved here, and nothing is drawn through pyplot's global state, so a page shows a figure once by
making it the last expression of a cell.

- :func:`paper_vs_ours`: one panel per metric; per row the paper's number and ours (mean over
  seeds) with its 95% interval;
- :func:`overlays`: CT slices with heatmaps (Grad-CAM, attention) blended over them and the
  infection mask outlined (paper A Fig. 4, paper B Fig. 5);
- :func:`score_vs_gain`: a transferability score against the fine-tuning gain, with the rank
  correlation;
- :func:`training_curves`: losses and validation accuracy per epoch;
- :func:`region_figure`: paper A's five lobe regions drawn inside the located lung box.

Page helpers (every number a page shows comes from the results folder, the papers' CSV or the
code through these and :mod:`covtl.book`; none is typed into a page):

- :class:`TablePage`: one paper table's page: provenance, "not yet run" notes, ours beside the
  paper's (best-val and last epoch), paired tests and the figure;
- :func:`complete_results`: the results restricted to the cells whose runs all finished;
- :func:`long_comparison`, :func:`transferability_vs_gain`, :func:`localisation_table`,
  :func:`figure_maps`, :func:`split_statistics`, :func:`parameter_table`,
  :func:`dataset_inventory`, :func:`claims_ledger`, :func:`wall_times`,
  :func:`provenance_table`, :func:`compute_estimate`.

Only the *expected* absence of results (no ``plan.json`` yet, a run not finished) is turned
into a note; anything else raises, so a broken page fails the book build.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import book, ledger
from .io import json_float
from .paper import load_paper_numbers

__all__ = [
    "ASSUMED_THROUGHPUT",
    "BookFigure",
    "FLOP_FACTORS",
    "PAPER_SCALE_IMAGES",
    "TablePage",
    "claims_ledger",
    "complete_results",
    "audit_table",
    "compute_assumptions",
    "compute_estimate",
    "data_inventory",
    "dataset_inventory",
    "explain_figure",
    "figure_maps",
    "full",
    "flops_per_image",
    "localisation_table",
    "long_comparison",
    "noncovid_positive",
    "not_yet_run",
    "overlays",
    "paper_notes",
    "papermill_commands",
    "paper_vs_ours",
    "parameter_table",
    "interval_note",
    "provenance_note",
    "provenance_table",
    "rank_correlations",
    "region_examples",
    "region_figure",
    "regions_on_slices",
    "score_vs_gain",
    "scores_table",
    "split_statistics",
    "study_data_root",
    "study_totals",
    "training_curves",
    "transferability_vs_gain",
    "verdict_counts",
    "wall_times",
]

SCORES = book.SCORES
SCORE_NAMES = {"leep": "LEEP", "nce": "NCE", "logme": "LogME", "h_score": "H-score",
               "h_score_shrunk": "H-score (shrinkage)"}
METHOD_NAMES = {"gradcam": "Grad-CAM", "attention": "attention"}
METRIC_NAMES = {"accuracy": "accuracy", "f1": "F1", "auc": "AUC", "top1": "top-1", "top5": "top-5", "leep": "LEEP"}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


# ============================================================================ figures


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


def paper_vs_ours(df: pd.DataFrame, title: str | None = None) -> Figure:
    """Dot plot: one panel per metric, one line per row; ours = dot with its interval, paper = diamond.

    Args:
        df: long table with columns ``row`` (label), ``metric``, ``paper`` (NaN if the paper has
            no number), ``mean``, ``low``, ``high`` (ours; NaN when not run or no interval), all in
            the paper's scale; e.g. :func:`long_comparison`.
    """
    import seaborn as sns

    need = {"row", "metric", "paper", "mean", "low", "high"}
    if missing := need - set(df.columns):
        raise ValueError(f"paper_vs_ours needs columns {sorted(need)}; missing {sorted(missing)}")
    metrics = list(dict.fromkeys(df.metric)) or ["(nothing)"]
    rows = list(dict.fromkeys(df.row))
    fig, axes = _figure(1, len(metrics), 3.4 * len(metrics) + 1.5, 0.34 * max(len(rows), 2) + 1.4,
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


def overlays(maps: Mapping[str, Any], heatmaps: Sequence[str] | None = None, *, alpha: float = 0.45,
             cmap: str = "jet", max_images: int = 4, titles: Mapping[str, str] | None = None) -> Figure:
    """A grid, one row per image: the slice, each heatmap blended over it, the mask outlined.

    Args:
        maps: a ``maps.pt`` dict: ``images`` (N x 3 x s x s, ImageNet-normalised), heatmaps
            (N x s x s in [0, 1], e.g. ``gradcam``, ``attention``) and optionally ``masks``
            (N x 1 x s x s or N x s x s).
        heatmaps: which keys to show, in order (default: ``gradcam`` and ``attention`` if present).
        titles: column titles per heatmap key (default: the key).
    """
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
    ncols = 1 + len(keys) + (masks is not None)
    fig, axes = _figure(len(images), ncols, 2.1 * ncols, 2.1 * len(images))
    for i, image in enumerate(images):
        shown = _display_image(image)
        panels = [("CT slice", shown)]
        panels += [(titles[k], overlay(shown, np.asarray(maps[k])[i], alpha=alpha, cmap=cmap)) for k in keys]
        if masks is not None:
            panels.append(("infection mask", shown))
        for j, (name, picture) in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(picture)
            if masks is not None and j > 0 and masks[i].any():
                ax.contour(masks[i] > 0.5, levels=[0.5], colors="white", linewidths=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if i == 0:
                ax.set_title(name, fontsize=9)
    return fig


def _rank_correlation(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and its p-value; NaN (no warning) when undefined (n < 3 or a constant,
    up to a relative 1e-9)."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    def constant(v: np.ndarray) -> bool:  # rounding noise (e.g. an H-score at its maximum) is a tie
        return np.ptp(v) <= 1e-9 * max(1.0, float(np.abs(v).max()))

    if x.size < 3 or constant(x) or constant(y):
        return float("nan"), float("nan")
    from scipy.stats import spearmanr

    res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def score_vs_gain(df: pd.DataFrame, score: str | Sequence[str], gain: str = "gain") -> Figure:
    """Scatter of a transferability score (x) against the fine-tuning gain (y), one panel per score.

    Each panel's title gives Spearman's rank correlation and the number of points. ``df`` has a
    column per score, the ``gain`` column and optionally ``model`` and ``setting`` (hue, style).
    """
    import seaborn as sns

    scores = [score] if isinstance(score, str) else list(score)
    if missing := [c for c in [*scores, gain] if c not in df.columns]:
        raise ValueError(f"score_vs_gain: no column(s) {missing}; columns are {list(df.columns)}")
    ncols = min(3, len(scores))
    nrows = -(-len(scores) // ncols)
    fig, grid = _figure(nrows, ncols, 3.6 * ncols + 1.6, 3.2 * nrows)
    axes = grid.ravel()
    for ax in axes[len(scores):]:
        ax.set_visible(False)
    last = axes[len(scores) - 1]
    for ax, s in zip(axes, scores, strict=False):
        d = df[np.isfinite(df[s].astype(float)) & np.isfinite(df[gain].astype(float))]
        kw = {"hue": "model"} if "model" in d.columns and not d.empty else {}
        if "setting" in d.columns and not d.empty:
            kw["style"] = "setting"
        sns.scatterplot(data=d, x=s, y=gain, ax=ax, s=60, legend=ax is last, **kw)
        rho, p = _rank_correlation(d[s].to_numpy(dtype=float), d[gain].to_numpy(dtype=float))
        ax.set_title(f"{SCORE_NAMES.get(s, s)}: Spearman rho = {rho:.2f} (p = {p:.2g}, n = {len(d)})",
                     fontsize=9)
        ax.set_xlabel(SCORE_NAMES.get(s, s))
        ax.set_ylabel("gain (percentage points)" if gain == "gain" else gain)
        ax.ticklabel_format(axis="both", useOffset=False)
        ax.axhline(0, color="grey", lw=0.8)
    if last.get_legend() is not None:
        sns.move_legend(last, "upper left", bbox_to_anchor=(1.02, 1), fontsize=7, title_fontsize=8)
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


def full(df: pd.DataFrame, precision: int = 3):
    """A long table shown whole (pandas truncates long frames in notebooks), numbers to ``precision`` digits."""
    return df.style.format(precision=precision, na_rep="")


# ============================================================================ reading results


def _done(res: book.Results, run_id: str) -> bool:
    """A run counts once the study has marked it done (``run.json``) and its record exists."""
    folder = res.root / "runs" / run_id
    run = folder / "run.json"
    if not (run.is_file() and (folder / "metrics.json").is_file()):
        return False
    return json.loads(run.read_text()).get("status") == "done"


def complete_results(root: str | Path | None = None) -> book.Results | None:
    """The results folder with only the cells whose runs all finished; ``None`` if no plan yet."""
    raw = book.results(root)
    if not (raw.root / "plan.json").is_file():
        return None
    plan = dict(raw.plan)
    plan["cells"] = [c for c in plan["cells"] if all(_done(raw, r) for r in c["runs"])]
    out = book.Results(raw.root)
    out.plan = plan  # shadows the cached property for this instance
    return out


def _profile_guess(root: Path) -> str:
    from .profiles import PROFILES

    return root.name if root.name in PROFILES else "quick"


def not_yet_run(root: str | Path | None = None, what: str = "this page") -> str:
    """Markdown: no study results were found, and how to produce them."""
    raw = book.results(root)
    profile = _profile_guess(raw.root)
    return (f"**Not yet run.** There are no study results at `{raw.root}` (no `plan.json`), so {what} "
            f"shows the papers' numbers only. Run `covtl study --profile {profile}` and rebuild the book "
            "(`covtl book`), or point `COVTL_RESULTS` at a results folder.")


def synthetic_banner(res: book.Results | None):
    """An unmistakable warning (IPython HTML) when the results come from synthetic data; else ``None``."""
    from IPython.display import HTML

    if res is None or not res.synthetic:
        return None
    return HTML(
        '<div class="admonition warning" style="font-size:1.1em"><p class="admonition-title">'
        "Synthetic data: these numbers test the pipeline, not the papers</p><p>Every number on this page "
        f"comes from the <b>{res.profile}</b> profile, trained on covtl's embedded <b>synthetic</b> CT images "
        "with small stand-in networks. They show that the code runs end to end; they say nothing about "
        "COVID-19 CT or about the papers' claims, and the claims ledger reads <i>pipeline check</i> for "
        "all of them.</p></div>")


def _show_banner(res: book.Results | None) -> None:
    banner = synthetic_banner(res)
    if banner is not None:
        from IPython.display import display

        display(banner)


def _provenance_text(raw: book.Results) -> str:
    return raw.provenance_line() + _stand_in_note(raw) + " " + interval_note(raw)


def interval_note(res: book.Results) -> str:
    """Markdown: which sources of variance the intervals of these results cover."""
    seeds = max((len(c["runs"]) for c in res.plan["cells"] if c["table"] not in ("B1", "A6")), default=1)
    pretrain = int(res.plan.get("pretrain_seeds", 1))
    if seeds == 1:
        covered = ("the test sample only (one seed: patients resampled, the training run taken as given)")
    elif pretrain >= seeds:
        covered = (f"both the {seeds} seeds (each repeating its whole chain, pretraining included) and the test "
                   "sample (seeds resampled, then patients)")
    else:
        covered = (f"the {seeds} fine-tuning seeds and the test sample (seeds resampled, then patients); the "
                   "pretraining stages ran once, so their own run-to-run variation is not in the intervals")
    return f"Intervals are 95% hierarchical-bootstrap intervals covering {covered}."


def provenance_note(root: str | Path | None = None):
    """The provenance line of the current results (IPython Markdown), or the "not yet run" note;
    on synthetic results it first shows :func:`synthetic_banner`."""
    from IPython.display import Markdown

    raw = book.results(root)
    if not (raw.root / "plan.json").is_file() or not (raw.root / "study.json").is_file():
        return Markdown(not_yet_run(root))
    _show_banner(raw)
    return Markdown(_provenance_text(raw))


def _stand_in_note(res: book.Results) -> str:
    if res.profile == "paper":
        return ""
    if res.profile == "cpu":
        return (" The cpu profile runs at reduced scale (smaller stand-in networks, images and epochs than the "
                "papers'; the column *network run* names the network that ran): compare directions and sizes "
                "of effects with the papers', not single digits.")
    return (f" At the {res.profile} profile small stand-in networks replace the papers' (the column "
            "*network run* names the one that ran), and the numbers test the pipeline, not the papers.")


def _scale(paper: pd.DataFrame, table: str, metric: str) -> float:
    p = paper[(paper.table == table) & (paper.metric == metric)]
    return 100.0 if (not p.empty and p.scale.iloc[0] == "percent") else 1.0


def long_comparison(table: str, res: book.Results | None = None, which: str = "best_val") -> pd.DataFrame:
    """Ours and the paper's number per (row, metric), in the paper's scale: the data of :func:`paper_vs_ours`.

    Without results (``res=None``) the rows are the paper's, with ours NaN.
    """
    paper = load_paper_numbers()
    t = paper[paper.table == table]
    metrics = book.METRICS.get(table, book.DEFAULT_METRICS)
    order = list(dict.fromkeys(zip(t.model, t.setting, strict=True)))
    cells = {(c["model"], c["setting"]): c for c in res.cells(table)} if res is not None else {}
    keys = order if res is None else [k for k in order if k in cells] + [k for k in cells if k not in order]
    rows = []
    for model, setting in keys:
        for metric in metrics:
            p = t[(t.model == model) & (t.setting == setting) & (t.metric == metric)]
            scale = _scale(paper, table, metric)
            ours = {"mean": np.nan, "low": np.nan, "high": np.nan}
            if (model, setting) in cells:
                agg = book.cell_value(res, cells[(model, setting)], metric, which)
                ours = {k: agg.get(k, np.nan) * scale for k in ours}
            rows.append({"row": f"{model}, {setting}", "model": model, "setting": setting, "metric": metric,
                         "paper": float(p.value.iloc[0]) if not p.empty else np.nan, **ours})
    return pd.DataFrame(rows, columns=["row", "model", "setting", "metric", "paper", "mean", "low", "high"])


class TablePage:
    """One paper table's page: every piece returns something a notebook cell displays.

    ``TablePage("A2")`` reads ``$COVTL_RESULTS`` (see :func:`covtl.book.results_dir`). Cells whose
    runs have not finished are left out of the tables and listed in :meth:`header`.
    """

    def __init__(self, table: str, root: str | Path | None = None):
        self.table = table
        self.raw = book.results(root)
        self.res = complete_results(root)

    # ------------------------------------------------------------------ text
    def header(self, cells: bool = True):
        """Caption, provenance, and (``cells``) which rows are missing (IPython Markdown)."""
        from IPython.display import Markdown

        lines = [f"**Paper's caption.** {book.caption(self.table)}", ""]
        if self.res is None:
            lines.append(not_yet_run(self.raw.root))
            return Markdown("\n".join(lines))
        _show_banner(self.res)
        lines.append(_provenance_text(self.raw))
        if not cells:
            return Markdown("\n".join(lines))
        planned = self.raw.cells(self.table)
        pending = [c for c in planned if c not in self.res.cells(self.table)]
        if not planned:
            lines += ["", f"**No row of this table is run at the {self.res.profile} profile** (see *Rows not "
                          "run* below); the page shows the paper's numbers only."]
        if pending:
            names = ", ".join(f"{c['model']} ({c['setting']})" for c in pending)
            lines += ["", f"**Not yet run:** {len(pending)} of {len(planned)} rows have unfinished runs and are "
                          f"left out: {names}."]
        return Markdown("\n".join(lines))

    # ------------------------------------------------------------------ tables
    def comparison(self, which: str = "best_val", without_near_duplicates: bool = False):
        """The paper's value beside ours (mean [95% interval]) per row; ``which``: best_val or last;
        ``without_near_duplicates``: the test images with a near-duplicate in the training split left out."""
        if self.res is None or not self.res.cells(self.table):
            return self.paper_only()
        exclude = book.near_duplicate_test_images(self.res) if without_near_duplicates else frozenset()
        df = book.comparison(self.table, self.res, which=which, exclude=exclude)
        return df.set_index(["model", "setting"])

    def paper_only(self) -> pd.DataFrame:
        t = load_paper_numbers()
        t = t[t.table == self.table]
        wide = t.pivot_table(index=["model", "setting"], columns="metric", values="value", sort=False)
        return wide.rename(columns=lambda m: f"{m} (paper)")

    def tests(self):
        """The claims ledger's lines of this table: each claimed comparison, all seeds together."""
        from IPython.display import Markdown

        if self.res is None:
            return Markdown("Paired tests need the study results (not yet run).")
        led = claims_ledger(self.raw.root)
        led = led[led.table == self.table]
        tested = led[led["ours [95% interval]"] != ""]
        if tested.empty:
            return Markdown(f"No comparison this table's claims rest on can be tested at the {self.res.profile} "
                            "profile (see the verdicts in the claims ledger).")
        cols = ["claimed", "metric", "paper effect", "ours [95% interval]", "MDE", "p", "p (Holm)", "verdict",
                "note"]
        return tested.set_index("claim")[cols].style.format({"p": "{:.3f}", "p (Holm)": "{:.3f}"}, na_rep="")

    def not_run(self):
        """Rows of the paper that this profile skips, and why."""
        from IPython.display import Markdown

        if self.res is None:
            from .study import build_plan

            rows = [n for n in build_plan(_profile_guess(self.raw.root)).not_run if n["table"] == self.table]
        else:
            rows = self.res.not_run(self.table)
        if not rows:
            return Markdown("Every row of the paper's table is run at this profile.")
        return pd.DataFrame(rows).drop(columns="table").set_index("model")

    def notes(self):
        """The transcription notes of the paper's numbers (:func:`paper_notes`), or a line saying there are none."""
        from IPython.display import Markdown

        notes = paper_notes(self.table)
        return notes if not notes.empty else Markdown("Nothing needed interpreting: the numbers are as printed.")

    def data(self, which: str = "best_val") -> pd.DataFrame:
        """:func:`long_comparison` of this table (the paper's rows only while nothing has run)."""
        has_rows = self.res is not None and bool(self.res.cells(self.table))
        return long_comparison(self.table, self.res if has_rows else None, which)

    def figure(self, which: str = "best_val") -> Figure:
        """:func:`paper_vs_ours` of this table."""
        return paper_vs_ours(self.data(which))

    def histories(self, model: str | None = None, setting: str | None = None) -> dict[str, list]:
        """Training histories (seed 0) of the table's rows, label -> per-epoch records."""
        if self.res is None:
            return {}
        return {f"{c['model']}, {c['setting']}": self.res.record(c["runs"][0]).get("history", [])
                for c in self.res.cells(self.table)
                if (model is None or c["model"] == model) and (setting is None or c["setting"] == setting)}

    def commands(self) -> pd.DataFrame:
        """The papermill command that reruns seed 0 of each row (:func:`papermill_commands`)."""
        return papermill_commands(self.res, self.table)


# ============================================================================ per-page data


def papermill_commands(res: book.Results | None, table: str, out: str = "out.ipynb") -> pd.DataFrame:
    """Per row of ``table``: the papermill command that reruns its seed-0 run from its upstream checkpoint.

    The notebook must first be converted: ``jupytext --to ipynb notebooks/<stage>.py``.
    """
    cols = ["model", "setting", "run", "command"]
    if res is None:
        return pd.DataFrame(columns=cols).set_index(["model", "setting"])
    rows = []
    for cell in res.cells(table):
        rid = cell["runs"][0]
        spec = res.plan["runs"][rid]
        params = {**spec["params"], "profile": res.profile}
        if spec["upstream"]:
            params["init"] = str(res.root / "runs" / spec["upstream"] / "last.pt")
        elif spec.get("init"):
            params["init"] = spec["init"]
        data_root = res.study.get("data_root", "") if not res.study.get("synthetic") else ""
        if data_root:
            params["data_root"] = data_root
        params["out_dir"] = f"results/scratch/{rid}"
        threads = _recorded_threads(res, rid)
        if threads:  # CPU numbers depend on the thread count: repeat the run's own
            params["threads"] = threads
        args = " ".join(f"-p {k} {v}" for k, v in params.items())
        rows.append({"model": cell["model"], "setting": cell["setting"], "run": rid,
                     "command": f"papermill notebooks/{spec['notebook']}.ipynb {out} {args}"})
    return pd.DataFrame(rows, columns=cols).set_index(["model", "setting"])


def _recorded_threads(res: book.Results, run_id: str) -> int | None:
    """The torch CPU threads a CPU run used (its provenance), or ``None`` (GPU run, or not recorded)."""
    try:
        prov = res.record(run_id).get("provenance", {})
    except FileNotFoundError:
        return None
    if str(prov.get("device", "cpu")).startswith("cuda"):
        return None
    return prov.get("cpu_threads")


def transferability_vs_gain(res: book.Results | None, metric: str = "accuracy") -> pd.DataFrame:
    """A6's scores of each source checkpoint beside the fine-tuning gain it led to (percentage points).

    Gains are over the same network fine-tuned from random init ("w/o TL"): for "w STL-N" the
    A5 row "w STL-N"; for "w STL-N w STL-M" the A4 row "w TL", whose chain also includes SSTL-M
    (the plan has no fine-tune of STL-N -> STL-M alone); "w/o TL" has gain 0 by definition.
    """
    cols = ["model", "setting", *SCORES, "gain"]
    if res is None:
        return pd.DataFrame(columns=cols)
    fine = {(c["table"], c["model"], c["setting"]): c for c in res.plan["cells"]}
    source = {"w/o TL": None, "w STL-N": ("A5", "w STL-N"), "w STL-N w STL-M": ("A4", "w TL")}
    rows = []
    for cell in res.cells("A6"):
        model, setting = cell["model"], cell["setting"]
        scores = res.record(cell["runs"][0])["scores"]
        row = {"model": model, "setting": setting, **{s: json_float(scores.get(s)) for s in SCORES}}
        target = source.get(setting)
        base = fine.get(("A5", model, "w/o TL")) if target is None else fine.get((target[0], model, "w/o TL"))
        tuned = base if target is None else fine.get((target[0], model, target[1]))
        if base is None or tuned is None:
            row["gain"] = np.nan
        else:
            diff = book.cell_value(res, tuned, metric)["mean"] - book.cell_value(res, base, metric)["mean"]
            row["gain"] = 100.0 * diff
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def rank_correlations(df: pd.DataFrame, gain: str = "gain") -> pd.DataFrame:
    """Spearman's rho (and p) of each score of :func:`transferability_vs_gain` with the gain."""
    rows = []
    for score in SCORES:
        if score not in df.columns:
            continue
        d = df[[score, gain]].astype(float).dropna()
        rho, p = _rank_correlation(d[score].to_numpy(), d[gain].to_numpy())
        rows.append({"score": SCORE_NAMES[score], "Spearman rho": rho, "p": p, "points": len(d),
                     "networks": df.loc[d.index, "model"].nunique() if "model" in df else np.nan})
    return pd.DataFrame(rows).set_index("score")


def localisation_table(res: book.Results | None, table: str) -> pd.DataFrame:
    """Mean localisation scores on the lesion masks per explain run (A-Fig4, B-Fig5) and method."""
    cols = ["model", "setting", "method", "pointing_game", "energy_inside", "iou_at_half", "images"]
    if res is None:
        return pd.DataFrame(columns=cols).set_index(["model", "setting", "method"])
    rows = []
    for cell in res.cells(table):
        rec = res.record(cell["runs"][0])
        for method, scores in rec["localisation"].items():
            rows.append({"model": cell["model"], "setting": cell["setting"], "method": METHOD_NAMES.get(method, method),
                         **{k: json_float(v) for k, v in scores.items()}, "images": rec.get("n_images", np.nan)})
    return pd.DataFrame(rows, columns=cols).set_index(["model", "setting", "method"])


def figure_maps(res: book.Results | None, table: str) -> dict[str, Any]:
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


def _heatmap_keys(maps: Mapping[str, Any]) -> list[str]:
    return [k for k in maps if k not in ("images", "masks")]


def explain_figure(res: book.Results | None, table: str, max_images: int = 4) -> Figure:
    """:func:`overlays` of every heatmap of a figure's explain runs (a message until they have run)."""
    maps = figure_maps(res, table)
    if not maps:
        return _message_figure(f"the explain runs of {table} have not run yet")
    keys = _heatmap_keys(maps)
    return overlays(maps, keys, max_images=max_images, titles={k: k.replace(": ", "\n", 1) for k in keys})


def _split_audit(res: book.Results | None) -> dict[str, Any] | None:
    if res is None or not res.cells("B1"):
        return None
    return res.record(res.cells("B1")[0]["runs"][0])


def split_statistics(res: book.Results | None) -> pd.DataFrame:
    """Paper B's Table I (patients and images per class and split) beside the split audit's counts."""
    paper = load_paper_numbers()
    p = paper[paper.table == "B1"].copy()
    p["split"] = p.setting.str.split("/").str[0]
    p["class"] = p.setting.str.split("/").str[1].str.replace("Non-COVID", "NonCOVID")
    wide = p.pivot_table(index=["class", "split"], columns="metric", values="value", sort=False)
    wide = wide.rename(columns=lambda m: f"{m} (paper)")
    audit = _split_audit(res)
    if audit is not None:
        ours = pd.DataFrame(audit["tables"]["summary"]).set_index(["class", "split"])
        for m in ("patients", "images"):
            wide[f"{m} (ours)"] = ours[m].reindex(wide.index)
    cols = [c for m in ("patients", "images") for c in (f"{m} (paper)", f"{m} (ours)") if c in wide.columns]
    return wide[cols].astype("Int64")


def audit_tables(res: book.Results | None) -> dict[str, pd.DataFrame]:
    """The split audit's tables (empty dict before the audit has run)."""
    audit = _split_audit(res)
    if audit is None:
        return {}
    return {name: pd.DataFrame(rows) for name, rows in audit["tables"].items()}


def audit_table(res: book.Results | None, name: str):
    """One table of the split audit, or a note while the audit has not run."""
    from IPython.display import Markdown

    tables = audit_tables(res)
    if not tables:
        return Markdown(not_yet_run(res.root if res is not None else None, "this table"))
    if name not in tables:
        raise ValueError(f"the split audit has no table {name!r}; it has {sorted(tables)}")
    return tables[name]


def conflicting_duplicates(res: book.Results | None) -> pd.DataFrame:
    """Near-duplicate pairs across splits, with file names and whether their labels disagree."""
    tables = audit_tables(res)
    cols = ["split_a", "file_a", "class_a", "split_b", "file_b", "class_b", "distance", "labels disagree"]
    if not tables or tables["near_duplicates"].empty:
        return pd.DataFrame(columns=cols)
    d = tables["near_duplicates"]
    d = d[d.kind == "across-splits"].copy()
    d["file_a"] = d.path_a.map(lambda p: Path(p).name)
    d["file_b"] = d.path_b.map(lambda p: Path(p).name)
    d["labels disagree"] = d.class_a != d.class_b
    return d.sort_values(["labels disagree", "distance"], ascending=[False, True])[cols].reset_index(drop=True)


def audit_note(res: book.Results | None):
    """Markdown: what the current audit says about cross-split duplicates, and on which data."""
    from IPython.display import Markdown

    if res is None or _split_audit(res) is None:
        return Markdown("The split audit has not run yet for these results.")
    d = conflicting_duplicates(res)
    n, bad = len(d), int(d["labels disagree"].sum()) if len(d) else 0
    synthetic = bool(res.study.get("synthetic"))
    data = "the embedded **synthetic** data" if synthetic else f"the **real** data at `{res.study.get('data_root')}`"
    text = (f"These results are on {data}. The audit finds {n} near-duplicate pairs across splits, "
            f"{bad} of them with opposite labels.")
    if synthetic:
        text += (" The synthetic generator draws correlated slices per patient, so these pairs say nothing "
                 "about COVID19-CT itself; the real-data finding is the one documented in the audit's tests.")
    elif bad:
        text += " They are listed first below: this is the real-data finding described above."
    return Markdown(text)


def _plain(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def parameter_table(res: book.Results | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(paper B's Table II beside our counts, paper A's six networks); 1000 classes as in the paper."""
    paper = load_paper_numbers()
    p = paper[paper.table == "B2"].set_index("model")["value"]
    path = res.root / "b-table2" / "parameters.json" if res is not None else None
    if path is None or not path.is_file():
        b = pd.DataFrame({"paper": p.astype("Int64")})
        return b, pd.DataFrame(columns=["model", "n_attn", "parameters"])
    rows = pd.DataFrame(json.loads(path.read_text())["rows"])
    # covtl's names are the paper's without case and separators ("EfficientNet-b0" = "efficientnet_b0")
    to_paper = {_plain(name): name for name in p.index}
    b = rows[rows.paper == "B"].assign(model=lambda d: d.model.map(lambda m: to_paper.get(_plain(m), m)))
    b = b.set_index("model")
    table = pd.DataFrame({"paper": p, "ours": b.parameters.reindex(p.index)})
    table["ours - paper"] = table.ours - table.paper
    table["ratio"] = (table.ours / table.paper).round(4)
    a = rows[rows.paper == "A"].copy()
    base = a[a.n_attn == 0].set_index("model").parameters
    a["added by ATTNs"] = a.parameters - a.model.map(base)
    return table.astype({"paper": "Int64", "ours": "Int64", "ours - paper": "Int64"}), \
        a.drop(columns="paper").reset_index(drop=True)


DATASET_ROLES = {
    "covid-ct": "target task (fine-tune), SSTL-M images, LEEP target split",
    "covidx": "STL-M source task (chest X-rays, 3 classes)",
    "lung-ct-unlabeled": "paper B's unlabeled CT stage (LUNA's role)",
    "natural": "STL-N source task (natural images)",
    "medseg": "infection masks for scoring Grad-CAM and attention maps",
}


def dataset_inventory(data_root: str | Path) -> pd.DataFrame:
    """Images, groups (patients / volumes) and classes per dataset and split under ``data_root``."""
    from .data import datasets as ds

    rows = []
    for name, cls in ds.DATASETS.items():
        for split in cls.SPLITS:
            d = ds.load_dataset(name, ds.locate(data_root, name), split)
            rows.append({"dataset": name, "folder": ds.FOLDERS[name], "split": split, "images": len(d.records),
                         "groups": d.records.group.nunique(), "classes": len(d.classes) or "unlabeled",
                         "role": DATASET_ROLES.get(name, "")})
    return pd.DataFrame(rows).set_index(["dataset", "split"])


def _message_figure(text: str) -> Figure:
    fig, axes = _figure(1, 1, 6.0, 1.2)
    axes[0][0].axis("off")
    axes[0][0].text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def study_data_root(res: book.Results | None) -> Path | None:
    """The data root the results were computed on, if it exists on this machine."""
    if res is None:
        return None
    root = Path(str(res.study.get("data_root", "")))
    return root if str(root) and root.is_dir() else None


def data_inventory(res: book.Results | None):
    """:func:`dataset_inventory` of the results' data root, or a note when it is not available here."""
    from IPython.display import Markdown

    root = study_data_root(res)
    if root is None:
        return Markdown("The data root of these results is not available on this machine (or nothing has "
                        "run yet), so the inventory is not shown.")
    return dataset_inventory(root)


def regions_on_slices(res: book.Results | None, n: int = 4) -> Figure:
    """:func:`region_figure` on ``n`` training slices of the results' COVID19-CT (a message if absent)."""
    root = study_data_root(res)
    if root is None:
        return _message_figure("no data root available: the regions are drawn once the study has run")
    images, names = region_examples(root, n)
    return region_figure(images, names)


def region_examples(data_root: str | Path, n: int = 4) -> tuple[list[np.ndarray], list[str]]:
    """``n`` COVID19-CT training slices (alternating classes, evenly spaced) as grey arrays, with names."""
    from .data import datasets as ds
    from .data.images import load_image

    records = ds.load_dataset("covid-ct", ds.locate(data_root, "covid-ct"), "train").records
    picks = [r for label in (1, 0) for r in records[records.label == label].iloc[:: max(1, len(records) // n)]
             .head((n + 1) // 2).itertuples()][:n]
    images = [np.asarray(load_image(r.path, mode="L"), dtype=float) / 255.0 for r in picks]
    return images, [("COVID " if r.label == 1 else "NonCOVID ") + Path(r.path).name[:24] for r in picks]


def claims_ledger(root: str | Path | None = None) -> pd.DataFrame:
    """The claims ledger (:func:`covtl.book.claims`) on finished runs; unfinished pairs say so."""
    res = complete_results(root)
    if res is None:
        led = book.load_claims().rename(columns={"id": "claim"})
        led["verdict"] = "not yet run"
        return led[["claim", "paper", "table", "kind", "metric", "statement", "verdict"]]
    led = book.claims(res)
    raw = book.results(root)
    planned = {(c["table"], c["model"], c["setting"]) for c in raw.plan["cells"]}
    spec = book.load_claims().set_index("id")
    for i, row in led.iterrows():
        c = spec.loc[row.claim]
        rows = [(c.table, m, s) for m, s in ledger.arms_of(c).values()]
        if str(row.verdict).startswith("not run") and all(r in planned for r in rows):
            led.at[i, "verdict"] = "not yet run"
    return led


def verdict_counts(ledger: pd.DataFrame) -> pd.DataFrame:
    """Claims per paper and table by verdict, with totals."""
    counts = ledger.groupby(["paper", "table", "verdict"]).size().unstack("verdict", fill_value=0)
    counts.loc[("all", ""), :] = counts.sum()
    counts["claims"] = counts.sum(axis=1)
    return counts.astype(int)


def wall_times(res: book.Results | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(wall time per finished run, per table summed over the runs of its cells' chains).

    A run shared by several tables (e.g. an STL-N network) counts in each of them; the study
    total in ``study.json`` counts it once.
    """
    if res is None:
        return (pd.DataFrame(columns=["run", "notebook", "wall_time_s"]),
                pd.DataFrame(columns=["table", "runs", "wall_time_s"]))
    runs = res.plan["runs"]
    per_run = []
    for rid, spec in runs.items():
        path = res.root / "runs" / rid / "run.json"
        rec = json.loads(path.read_text()) if path.is_file() else {}
        per_run.append({"run": rid, "notebook": spec["notebook"], "wall_time_s": rec.get("wall_time_s", np.nan)})
    per_run = pd.DataFrame(per_run)
    times = per_run.set_index("run").wall_time_s

    def chain(rid: str) -> list[str]:
        up = runs[rid]["upstream"]
        return (chain(up) if up else []) + [rid]

    per_table = []
    for table in dict.fromkeys(c["table"] for c in res.plan["cells"]):
        ids = {r for c in res.cells(table) for run in c["runs"] for r in chain(run)}
        per_table.append({"table": table, "runs": len(ids), "wall_time_s": float(times.reindex(sorted(ids)).sum())})
    return per_run, pd.DataFrame(per_table)


def provenance_table(res: book.Results | None) -> pd.DataFrame:
    """One row per finished run: id, notebook, commit, seed, device, wall time, created."""
    cols = ["run", "notebook", "commit", "seed", "device", "wall_time_s", "created"]
    if res is None:
        return pd.DataFrame(columns=cols)
    rows = []
    for rid in res.plan["runs"]:
        if not _done(res, rid):
            rows.append({"run": rid, "notebook": res.plan["runs"][rid]["notebook"], "commit": "not yet run"})
            continue
        run = json.loads((res.root / "runs" / rid / "run.json").read_text())
        prov = res.record(rid).get("provenance", {})
        rows.append({"run": rid, "notebook": run["notebook"], "commit": str(run["provenance"].get("commit", ""))[:12],
                     "seed": run["params"].get("seed"), "device": prov.get("device", "cpu (no model)"),
                     "wall_time_s": run.get("wall_time_s"), "created": run["provenance"].get("created")})
    return pd.DataFrame(rows, columns=cols).astype({"seed": "Int64"}).set_index("run")


def environment_table(res: book.Results | None) -> pd.DataFrame:
    """The study's environment (``study.json`` provenance) as a two-column table."""
    if res is None:
        return pd.DataFrame(columns=["value"])
    prov = res.study.get("provenance", {})
    return pd.DataFrame({"value": {k: str(v) for k, v in prov.items()}})


# ============================================================================ compute estimate

#: images per epoch of each source dataset at the paper's scale (the study's data are smaller)
PAPER_SCALE_IMAGES: dict[str, int] = {
    "natural": 1_281_167,  # ImageNet-1k (ILSVRC 2012) training images; paper A sec. 6.2 "1.2 million"
    "covidx": 16_898,  # paper A sec. 6.1: COVIDx "contains 16898 images in total" (its train split is smaller)
    "lung-ct-unlabeled": 1_000,  # paper B sec. IV-A: 500 LUNA subjects, two slices each
    # covid-ct: the training split of paper B's Table I (book/data/paper_numbers.csv)
}
#: forward passes (in units of one forward, a backward = two) per training image and method
FLOP_FACTORS: dict[str, float] = {
    "supervised": 3,  # forward + backward
    "frozen": 1,  # forward through a frozen backbone; the linear head is negligible
    "moco": 4,  # query forward + backward (3), key forward (1)
    "simclr": 6,  # two views, both with gradients
    "region_moco": 19,  # MoCo (4) + five lobe regions at the input size, forward + backward (15)
    "rotation": 3,  # one rotated view, forward + backward (B's rotation-prediction SSL stage)
    "rotation_joint": 6,  # B's Method 4: the images for the classifier and a rotated copy for the rotation head
    "score": 1,  # transferability: one forward pass over the target training split, once
}
#: assumed sustained training throughput of one GPU, FLOP/s (stated on the compute page)
ASSUMED_THROUGHPUT = 30e12


@cache
def flops_per_image(backbone: str, n_attn: int = 0, size: int = 224, num_classes: int = 2) -> float:
    """Forward FLOPs of one image (torch.utils.flop_counter, on the meta device: nothing is computed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model

    with torch.device("meta"):
        model = build_model(backbone, num_classes=num_classes, **({"n_attn": n_attn} if n_attn else {})).eval()
        x = torch.empty(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


@lru_cache(maxsize=1)
def _covid_ct_train_images() -> int:
    """COVID19-CT's training images as paper B's Table I gives them."""
    b1 = load_paper_numbers().query("table == 'B1' and metric == 'images'")
    return int(b1[b1.setting.str.startswith("train/")].value.sum())


def _images_per_epoch(notebook: str, params: Mapping[str, Any]) -> tuple[str, int]:
    covid_train = _covid_ct_train_images()
    dataset = {"stl_n": "natural", "stl_m": "covidx", "finetune": "covid-ct",
               "transferability": "covid-ct"}.get(notebook, params.get("dataset", "covid-ct"))
    return dataset, PAPER_SCALE_IMAGES.get(dataset, covid_train)


def _factor(notebook: str, params: Mapping[str, Any], recipe) -> str:
    if notebook == "transferability":
        return "score"
    if notebook == "sstl_m":
        from .ssl import cost_method

        method = cost_method(params.get("method", ""), params.get("region_weight"))
        return {"a_region_moco": "region_moco", "simclr": "simclr", "rotation": "rotation"}.get(
            method, "moco" if method.startswith("moco") else "supervised")
    if recipe is not None and recipe.freeze_backbone:
        return "frozen"
    return "rotation_joint" if recipe is not None and recipe.rotation_aux else "supervised"


def compute_estimate(profile: str = "paper",
                     throughput: float = ASSUMED_THROUGHPUT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Estimated training FLOPs and GPU-hours of every run of ``build_plan(profile)``, and per table.

    FLOPs of a run = epochs x images per epoch x factor x forward FLOPs per image (at the recipe's
    image size); GPU-hours = FLOPs / throughput / 3600. Evaluation passes (validation each epoch,
    test once) and the split audit / explain runs are left out (a few percent at most). Images
    per epoch are the paper-scale sizes of :data:`PAPER_SCALE_IMAGES` whatever the profile.
    Per table, a run shared by several tables counts in each; the total counts it once.
    """
    from .recipes import get_recipe, scale_recipe
    from .study import build_plan

    plan = build_plan(profile)
    rows = []
    for run in plan.runs:
        p = dict(run.params)
        if run.notebook in ("split_audit", "explain"):
            continue
        recipe = scale_recipe(get_recipe(p["recipe"]), profile) if "recipe" in p else None
        epochs = recipe.epochs if recipe is not None else 1
        size = recipe.image_size if recipe is not None else scale_recipe(get_recipe("a_finetune"), profile).image_size
        dataset, images = _images_per_epoch(run.notebook, p)
        factor = _factor(run.notebook, p, recipe)
        fwd = flops_per_image(p["backbone"], p.get("n_attn", 0), size)
        flops = epochs * images * FLOP_FACTORS[factor] * fwd
        rows.append({"run": run.id, "notebook": run.notebook, "backbone": p["backbone"], "n_attn": p.get("n_attn", 0),
                     "dataset": dataset, "images/epoch": images, "epochs": epochs, "size": size, "factor": factor,
                     "forward GFLOPs/image": fwd / 1e9, "PFLOPs": flops / 1e15,
                     "GPU-hours": flops / throughput / 3600})
    per_run = pd.DataFrame(rows).set_index("run")

    per_table = []
    for table in dict.fromkeys(c.table for c in plan.cells):
        ids = {r.id for c in plan.cells if c.table == table for run in c.runs for r in run.chain()}
        ids &= set(per_run.index)
        per_table.append({"table": table, "runs": len(ids), "GPU-hours": per_run.loc[sorted(ids), "GPU-hours"].sum()})
    per_table = pd.DataFrame(per_table).set_index("table")
    per_table.loc["study (each run once)"] = [len(per_run), per_run["GPU-hours"].sum()]
    return per_run, per_table.astype({"runs": int})


# ============================================================================ method tables


@contextmanager
def _quiet_tqdm_import():
    """Importing covtl.train in a kernel without ipywidgets makes ``tqdm.auto`` warn; that is noise here."""
    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        yield


def attention_placement() -> pd.DataFrame:
    """Zero-based block indices after which ATTNs go, per ResNet depth and variant (covtl.models.resnet)."""
    from .models.resnet import RESNET_DEPTHS, attention_indices

    rows = []
    for depth in RESNET_DEPTHS:
        for n_attn in (1, 5):
            where = attention_indices(depth, n_attn)
            rows.append({"network": f"ResNet-{depth}", "ATTNs": n_attn,
                         "after blocks": ", ".join(f"{stage}{list(idx)}" for stage, idx in where.items())})
    order = [f"ResNet-{d}" for d in RESNET_DEPTHS]
    return pd.DataFrame(rows).pivot(index="network", columns="ATTNs", values="after blocks").reindex(order)


def region_tuples() -> pd.DataFrame:
    """Paper A's relative location tuples (x, y, w, h) of the five regions inside the lung box."""
    from .regions import REGION_TUPLES

    return pd.DataFrame(REGION_TUPLES, index=["x (centre)", "y (centre)", "width", "height"]).T


def recipes_table(profile: str = "paper") -> pd.DataFrame:
    """Every training recipe at ``profile`` (``paper`` = as the papers give them), with its source."""
    from dataclasses import asdict

    from .recipes import RECIPES, scale_recipe

    rows = [asdict(scale_recipe(r, profile)) for r in RECIPES.values()]
    cols = ["name", "optimizer", "lr", "momentum", "weight_decay", "batch_size", "epochs", "schedule",
            "milestones", "step_size", "cosine_period", "dropout", "image_size", "freeze_backbone", "source"]
    return pd.DataFrame(rows)[cols].set_index("name")


def ssl_settings() -> pd.DataFrame:
    """The self-supervised methods' settings (covtl.ssl.SSL_METHODS), before the queue cap."""
    with _quiet_tqdm_import():
        from .ssl import SSL_METHODS

    return pd.DataFrame({name: {"module": cls.__name__, **kw} for name, (cls, kw) in SSL_METHODS.items()}).T


def profiles_table() -> pd.DataFrame:
    """What each profile selects (covtl.profiles): recipes' scale, data caps, seeds, variants."""
    from .profiles import PROFILES

    return pd.DataFrame([p.as_row() for p in PROFILES.values()]).set_index("profile")


def plan_estimate(profile: str = "cpu") -> pd.DataFrame:
    """``covtl study --dry-run``'s estimate of a profile's plan, per stage, from covtl/costs.json."""
    from .study import dry_run

    report = dry_run(profile)
    rows = [{"stage": f"{stage} (single-thread CPU time)", "runs": n, "hours": round(t / 3600, 2)}
            for stage, (n, t) in report.by_stage().items()]
    rows.append({"stage": f"whole plan (wall time, {report.jobs} jobs)", "runs": len(report.runs),
                 "hours": round(report.wall_s / 3600, 2)})
    return pd.DataFrame(rows).set_index("stage")


def stand_ins() -> pd.DataFrame:
    """The network that runs for each paper network at each profile (blank: not run)."""
    from .profiles import PROFILES

    return pd.DataFrame({name: dict(p.backbones) for name, p in PROFILES.items()}).fillna("")


def crnet_gap(num_classes: int = 1000) -> pd.DataFrame:
    """CRNet's parameter count as built from paper B's text beside Table II's."""
    from .models import build_model, count_parameters

    ours = count_parameters(build_model("crnet", num_classes=num_classes))
    paper = load_paper_numbers().query("table == 'B2' and model == 'CRNet'").value.iloc[0]
    return pd.DataFrame({"parameters": {"covtl (from the text)": ours, "paper B, Table II": int(paper),
                                        "difference": ours - int(paper)}})


# ============================================================================ small page tables


def paper_notes(table: str) -> pd.DataFrame:
    """The transcription notes of a table's paper numbers (typos, inconsistencies), if any."""
    p = load_paper_numbers()
    p = p[(p.table == table) & (p.note != "")]
    return p[["model", "setting", "metric", "value", "note"]].reset_index(drop=True)


def scores_table(res: book.Results | None) -> pd.DataFrame:
    """LEEP, NCE, LogME and H-score of every A6 source checkpoint, beside the paper's LEEP."""
    paper = load_paper_numbers().query("table == 'A6' and metric == 'leep'")
    p = paper.set_index(["model", "setting"]).value.rename("LEEP (paper)")
    if res is None or not res.cells("A6"):
        return p.to_frame()
    rows = {(c["model"], c["setting"]): res.record(c["runs"][0])["scores"] for c in res.cells("A6")}
    ours = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(SCORES)).astype(float)  # null -> NaN
    ours.columns = [f"{SCORE_NAMES[s]} (ours)" for s in ours.columns]
    ours.index = pd.MultiIndex.from_tuples(ours.index, names=["model", "setting"])
    return p.to_frame().join(ours, how="right")


def noncovid_positive(table: str, res: book.Results | None, which: str = "best_val") -> pd.DataFrame:
    """Seed-0 test metrics with COVID positive (covtl) and NonCOVID positive (official Self-Trans code)."""
    cols = ["model", "setting", "metric", "COVID positive", "NonCOVID positive"]
    if res is None:
        return pd.DataFrame(columns=cols).set_index(["model", "setting", "metric"])
    rows = []
    for cell in res.cells(table):
        test = res.record(cell["runs"][0])["test"]
        test = test.get(which) or test["last"]
        for m in ("precision", "recall", "f1", "auc"):
            rows.append({"model": cell["model"], "setting": cell["setting"], "metric": m,
                         "COVID positive": round(json_float(test["covid_positive"][m]["value"]), 3),
                         "NonCOVID positive": round(json_float(test["noncovid_positive"][m]), 3)})
    wide = pd.DataFrame(rows, columns=cols).set_index(["model", "setting", "metric"]).unstack("metric")
    order = [(side, m) for side in ("COVID positive", "NonCOVID positive")
             for m in ("precision", "recall", "f1", "auc")]
    return wide.reindex(columns=pd.MultiIndex.from_tuples(order, names=[None, "metric"]))


def compute_assumptions(throughput: float = ASSUMED_THROUGHPUT) -> pd.DataFrame:
    """The constants behind :func:`compute_estimate`, with what they mean."""
    covid_train = _images_per_epoch("finetune", {})[1]
    rows = [("assumed sustained throughput, TFLOP/s", throughput / 1e12,
             "mixed-precision training on one A100-class GPU (an assumption, not a measurement)"),
            ("= ResNet-50 training images/s at 224 px", throughput / (FLOP_FACTORS["supervised"]
                                                                      * flops_per_image("resnet50")),
             "what the assumption means for the most common network")]
    rows += [(f"images/epoch: {name}", n, "paper scale") for name, n in
             {**PAPER_SCALE_IMAGES, "covid-ct (train)": covid_train}.items()]
    rows += [(f"forward passes per image: {name}", k, "") for name, k in FLOP_FACTORS.items()]
    table = pd.DataFrame(rows, columns=["quantity", "value", "meaning"]).set_index("quantity")
    table["value"] = [f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}" for v in table.value]
    return table


def study_totals(res: book.Results | None) -> pd.DataFrame:
    """The study record's totals: runs, executed and unchanged runs, wall time."""
    if res is None:
        return pd.DataFrame(columns=["value"])
    s = res.study
    hours = round(s.get("wall_time_s", 0) / 3600, 3)
    return pd.DataFrame({"value": {"profile": s["profile"], "runs in the plan": s.get("runs"),
                                   "executed by the last `covtl study`": s.get("ran"),
                                   "unchanged (reused)": s.get("skipped"),
                                   "wall time of the last `covtl study`, hours": hours}})
