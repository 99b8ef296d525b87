"""The tables of the paper pages: ours beside the papers', read from result files only.

Every number comes from a file a run wrote (``results/<profile>/...``: the plan, each run's
``metrics.json`` and ``predictions.csv``) or from the papers' numbers transcribed once in
``book/data/paper_numbers.csv``; nothing is typed into a page. Functions return data frames;
:mod:`covtl.book.page` shows them.

- :func:`comparison` -- one paper table: the paper's value and ours (mean over seeds with a 95%
  interval) for every row, in the paper's scale (percent or fraction; LEEP in bits, as paper A's);
- :func:`long_comparison` -- the same, one line per (row, metric): the data of
  :func:`covtl.plotting.paper_vs_ours`;
- :func:`transferability_vs_gain`, :func:`rank_correlations` -- do the scores predict the gains;
- :func:`scores_table`, :func:`noncovid_positive`, :func:`parameter_table`, :func:`paper_notes`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from ..io import json_float
from ..paper import TABLES, load_paper_numbers
from .evidence import DEFAULT_METRICS, METRICS, SCORES, cell_value
from .results import Results, near_duplicate_test_images

__all__ = ["SCORE_NAMES", "caption", "comparison", "interval_text", "long_comparison", "noncovid_positive",
           "paper_notes", "paper_only", "parameter_table", "rank_correlation", "rank_correlations", "scores_table",
           "transferability_table", "transferability_vs_gain"]

#: how the book names each transferability score
SCORE_NAMES = {"leep": "LEEP", "nce": "NCE", "logme": "LogME", "h_score": "H-score",
               "h_score_shrunk": "H-score (shrinkage)"}


def caption(table: str) -> str:
    """The paper's caption of ``table``."""
    return TABLES.get(table, table)


def interval_text(value: str, low: str, high: str) -> str:
    """``value [low, high]`` joined by non-breaking spaces, so that a table never wraps an interval."""
    return f"{value}\N{NO-BREAK SPACE}[{low},\N{NO-BREAK SPACE}{high}]"


def _scale(paper: pd.DataFrame, table: str, metric: str) -> float:
    """100 where the paper prints ``metric`` of ``table`` in percent, else 1."""
    p = paper[(paper.table == table) & (paper.metric == metric)]
    return 100.0 if (not p.empty and p.scale.iloc[0] == "percent") else 1.0


def _fmt(agg: dict[str, float], scale: float) -> str:
    digits = 1 if scale == 100 else 3
    mean = agg["mean"] * scale
    if np.isnan(agg.get("low", np.nan)):
        return f"{mean:.{digits}f}"
    return interval_text(f"{mean:.{digits}f}", f"{agg['low'] * scale:.{digits}f}", f"{agg['high'] * scale:.{digits}f}")


def comparison(table: str, res: Results, which: str = "best_val", without_near_duplicates: bool = False
               ) -> pd.DataFrame:
    """The rows of ``table`` that ran, with the paper's value and ours, metric by metric.

    ``which``: the network scored (``best_val`` or ``last``); ``without_near_duplicates``: the
    test images with a near-duplicate in the training split left out. ``learned`` says whether
    the cell's network learned the task (:meth:`covtl.book.Evidence.collapse`).
    """
    paper = load_paper_numbers()
    t = paper[paper.table == table]
    metrics = METRICS.get(table, DEFAULT_METRICS)
    test_metrics = any(m in DEFAULT_METRICS for m in metrics)
    exclude = near_duplicate_test_images(res) if without_near_duplicates else frozenset()
    rows = []
    for cell in res.cells(table):  # what ran first (the network, its seeds, whether it learned), then the numbers
        row: dict[str, Any] = {"model": cell["model"], "setting": cell["setting"], "network run": cell["backbone"],
                               "seeds": len(cell["runs"])}
        if test_metrics:
            why = res.evidence(which, exclude).collapse(cell)
            row["learned"] = f"no: {why}" if why else "yes"
        for metric in metrics:
            p = t[(t.model == cell["model"]) & (t.setting == cell["setting"]) & (t.metric == metric)]
            unit = ", bits" if metric == "leep" else ""
            row[f"{metric} (paper{unit})"] = float(p.value.iloc[0]) if not p.empty else np.nan
            row[f"{metric} (ours{unit})"] = _fmt(cell_value(res, cell, metric, which, exclude),
                                                 _scale(paper, table, metric))
        rows.append(row)
    return pd.DataFrame(rows).set_index(["model", "setting"])


def paper_only(table: str) -> pd.DataFrame:
    """The paper's numbers of ``table``, one row per (model, setting), one column per metric."""
    t = load_paper_numbers()
    t = t[t.table == table]
    wide = t.pivot_table(index=["model", "setting"], columns="metric", values="value", sort=False)
    return wide.rename(columns=lambda m: f"{m} (paper)")


def long_comparison(table: str, res: Results | None = None, which: str = "best_val") -> pd.DataFrame:
    """Ours and the paper's number per (row, metric), in the paper's scale: the data of
    :func:`covtl.plotting.paper_vs_ours`. Without results (``res=None``) the rows are the
    paper's, with ours NaN.
    """
    paper = load_paper_numbers()
    t = paper[paper.table == table]
    metrics = METRICS.get(table, DEFAULT_METRICS)
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
                agg = cell_value(res, cells[(model, setting)], metric, which)
                ours = {k: agg.get(k, np.nan) * scale for k in ours}
            rows.append({"row": f"{model}, {setting}", "model": model, "setting": setting, "metric": metric,
                         "paper": float(p.value.iloc[0]) if not p.empty else np.nan, **ours})
    return pd.DataFrame(rows, columns=["row", "model", "setting", "metric", "paper", "mean", "low", "high"])


def paper_notes(table: str) -> pd.DataFrame:
    """The transcription notes of a table's paper numbers (typos, inconsistencies), if any."""
    p = load_paper_numbers()
    p = p[(p.table == table) & (p.note != "")]
    return p[["model", "setting", "metric", "value", "note"]].reset_index(drop=True)


# ---------------------------------------------------------------------------- transferability


def scores_table(res: Results | None) -> pd.DataFrame:
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


def transferability_vs_gain(res: Results | None, metric: str = "accuracy") -> pd.DataFrame:
    """A6's scores of each source checkpoint beside the fine-tuning gain it led to (percentage points).

    Gains are over the same network fine-tuned from random init ("w/o TL"): for "w STL-N" the
    A5 row "w STL-N"; for "w STL-N w STL-M" the A4 row "w TL", whose chain also includes SSTL-M
    (the plan has no fine-tune of STL-N -> STL-M alone); "w/o TL" has gain 0 by definition.
    Scores as recorded (LEEP in nats), under their code names (:data:`SCORE_NAMES` names them).
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
            diff = cell_value(res, tuned, metric)["mean"] - cell_value(res, base, metric)["mean"]
            row["gain"] = 100.0 * diff
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def transferability_table(scores: pd.DataFrame) -> pd.DataFrame:
    """:func:`transferability_vs_gain` for reading: the scores' names, three decimals, the gain to one."""
    names = {**SCORE_NAMES, "leep": "LEEP (nats)", "gain": "gain (points)"}
    return scores.round({**dict.fromkeys(SCORES, 3), "gain": 1}).rename(columns=names)


def rank_correlation(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and its p-value; NaN (no warning) when undefined (n < 3 or a constant,
    up to a relative 1e-9: rounding noise, e.g. an H-score at its maximum, is a tie)."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or nearly_constant(x) or nearly_constant(y):
        return float("nan"), float("nan")
    from scipy.stats import spearmanr

    res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def nearly_constant(v: np.ndarray) -> bool:
    """Whether ``v`` is constant up to a relative 1e-9 (rounding noise)."""
    v = np.asarray(v, dtype=float)
    return v.size == 0 or np.ptp(v) <= 1e-9 * max(1.0, float(np.abs(v).max()))


def rank_correlations(df: pd.DataFrame, gain: str = "gain") -> pd.DataFrame:
    """Spearman's rho (and p) of each score of :func:`transferability_vs_gain` with the gain."""
    rows = []
    for score in SCORES:
        if score not in df.columns:
            continue
        d = df[[score, gain]].astype(float).dropna()
        rho, p = rank_correlation(d[score].to_numpy(), d[gain].to_numpy())
        rows.append({"score": SCORE_NAMES[score], "Spearman rho": rho, "p": p, "points": len(d),
                     "networks": df.loc[d.index, "model"].nunique() if "model" in df else np.nan})
    return pd.DataFrame(rows).set_index("score")


# ---------------------------------------------------------------------------- other paper tables


def noncovid_positive(table: str, res: Results | None, which: str = "best_val") -> pd.DataFrame:
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


def _plain(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def parameter_table(res: Results | None) -> tuple[pd.DataFrame, pd.DataFrame]:
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
