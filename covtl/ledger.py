"""Cell statistics and the claims ledger: the hierarchical bootstrap applied to a results folder.

One :class:`Evidence` object per results folder scores every finished run on the **same** patient
resamples (:func:`covtl.metrics.patient_weights` over the union of the test patients), so that a
cell's interval, a paired difference and a difference of differences all come from one
consistent set of draws, and seeds are paired across cells (seed i of one cell with seed i of
another: the same fine-tuning seed).

- :meth:`Evidence.cell` -- one cell: the mean over its seeds with a 95% interval that covers the
  seeds and the test patients.
- :meth:`Evidence.collapse` -- why a cell's network learned nothing (``""`` if it learned).
- :func:`claims` -- the ledger: every claim of ``book/data/claims.csv`` judged by the rules below.

Rules (the book's Methods chapter states them for readers):

- **superiority** (b > a) and **interaction** ((b - a) - (d - c) > 0): *reproduced* when the
  Holm-adjusted p-value is below 5% and the interval excludes 0 in the claimed direction;
  *contradicted* when the same holds the other way, or when the interval contains 0 but
  excludes the paper's own effect; *within noise* otherwise.
- **non-inferiority** (b - a > -margin; paper B's "does not surpass"): *reproduced* when the
  Holm-adjusted one-sided p-value of b - a <= -margin is below 5%; *contradicted* when a is
  shown better than b (as for superiority, the other way); *within noise* otherwise.
- No verdict from a network that did not learn (:func:`covtl.metrics.collapse_reason`), from rows
  that ran the very same runs (stand-ins), or from runs scored on different test images; a
  comparison whose runs repeat an earlier line's is that line's test, counted once.
- On synthetic data (the ``smoke`` and ``quick`` profiles) every verdict reads *pipeline check*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cached_property
from math import log
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .metrics import (
    Contrast,
    benjamini_hochberg,
    collapse_reason,
    hierarchical_contrast,
    holm,
    patient_weights,
    weighted_metric,
)
from .paper import load_paper_numbers

__all__ = ["ALPHA", "KINDS", "N_BOOT", "Evidence", "claims", "load_claims", "paper_effect"]

REPO = Path(__file__).resolve().parents[1]
N_BOOT = 10_000  # patient resamples: p-values resolve down to 2/(N_BOOT + 1), small enough for Holm over the ledger
ALPHA = 0.05
KINDS = ("superiority", "non-inferiority", "interaction")
#: nats -> bits: paper A's LEEP values are only possible in bits (LEEP >= -H(Y); see the A6 page)
NATS_TO_BITS = 1 / log(2)
#: the suffix of A Table 3's controlled rows (covtl.study): same recipe for every SSL objective
CONTROLLED = " (controlled)"


def load_claims(path: Path | None = None) -> pd.DataFrame:
    """``book/data/claims.csv``: one line per claim and metric; ``margin`` a float (NaN unless non-inferiority)."""
    path = path or REPO / "book" / "data" / "claims.csv"
    df = pd.read_csv(path, keep_default_na=False)
    unknown = sorted(set(df.kind) - set(KINDS))
    if unknown:
        raise ValueError(f"{path}: unknown claim kind(s) {unknown}; use one of {', '.join(KINDS)}")
    df["margin"] = pd.to_numeric(df.margin.replace("", np.nan))
    bad = df[(df.kind == "non-inferiority") & ~(df.margin > 0)]
    if len(bad):
        raise ValueError(f"{path}: non-inferiority claims need a positive margin: {', '.join(bad.id)}")
    bad = df[(df.kind == "interaction") & ((df.model_c == "") | (df.model_d == ""))]
    if len(bad):
        raise ValueError(f"{path}: interaction claims need rows c and d: {', '.join(bad.id)}")
    return df


def arms_of(claim) -> dict[str, tuple[str, str]]:
    """Arm name -> (model, setting) of one claim line (b - a, or (b - a) - (d - c))."""
    arms = {"a": (claim.model_a, claim.setting_a), "b": (claim.model_b, claim.setting_b)}
    if claim.kind == "interaction":
        arms.update(c=(claim.model_c, claim.setting_c), d=(claim.model_d, claim.setting_d))
    return arms


WEIGHTS = {"superiority": {"a": -1.0, "b": 1.0}, "non-inferiority": {"a": -1.0, "b": 1.0},
           "interaction": {"a": -1.0, "b": 1.0, "c": 1.0, "d": -1.0}}


def paper_effect(claim, paper: pd.DataFrame | None = None) -> float:
    """The paper's own effect for a claim line, as a fraction (NaN if a number is missing)."""
    paper = load_paper_numbers() if paper is None else paper
    t = paper[(paper.table == claim.table) & (paper.metric == claim.metric)]
    total = 0.0
    for arm, (model, setting) in arms_of(claim).items():
        setting = setting.removesuffix(CONTROLLED)  # a controlled row tests the claim of its literal row
        v = t[(t.model == model) & (t.setting == setting)]
        if v.empty:
            return float("nan")
        scale = 100.0 if v.scale.iloc[0] == "percent" else 1.0
        total += WEIGHTS[claim.kind][arm] * float(v.value.iloc[0]) / scale
    return total


class Evidence:
    """Every finished fine-tuning run of a results folder on shared patient resamples.

    ``res`` is a :class:`covtl.book.Results`; ``which`` the network scored (``best_val`` or
    ``last``); ``exclude`` test images (paths) left out, e.g. those with a near-duplicate in the
    training split.
    """

    def __init__(self, res, which: str = "best_val", exclude: Iterable[str] = (), n_boot: int = N_BOOT,
                 seed: int = 0) -> None:
        self.res, self.which, self.n_boot, self.seed = res, which, n_boot, seed
        self.exclude = frozenset(_key(p) for p in exclude)
        self._draws: dict[tuple[str, str], tuple[float, np.ndarray]] = {}
        self._preds: dict[str, pd.DataFrame] = {}

    # ------------------------------------------------------------------ inputs
    def predictions(self, run_id: str) -> pd.DataFrame:
        if run_id not in self._preds:
            df = self.res.predictions(run_id, self.which)
            if self.exclude:
                df = df[~df.path.map(_key).isin(self.exclude)].reset_index(drop=True)
            self._preds[run_id] = df
        return self._preds[run_id]

    @cached_property
    def _runs(self) -> list[str]:
        return sorted({r for c in self.res.plan["cells"] for r in c["runs"]
                       if (self.res.root / "runs" / r / "predictions.csv").is_file()})

    @cached_property
    def patients(self) -> dict[str, int]:
        """Patient id -> column of the resample weights: the union of every scored test set."""
        ids = sorted({g for r in self._runs for g in self.predictions(r).group.astype(str)})
        return {g: i for i, g in enumerate(ids)}

    @cached_property
    def weights(self) -> np.ndarray:
        return patient_weights(max(1, len(self.patients)), self.n_boot, self.seed)

    def draws(self, run_id: str, metric: str) -> tuple[float, np.ndarray]:
        """(metric on the whole test set, metric on each of the shared patient resamples)."""
        key = (run_id, metric)
        if key not in self._draws:
            p = self.predictions(run_id)
            y, s = p.label.to_numpy(), p.prob_1.to_numpy()
            cols = p.group.astype(str).map(self.patients).to_numpy()
            point = float(weighted_metric(metric, y, s)[0])
            self._draws[key] = (point, weighted_metric(metric, y, s, self.weights[:, cols]))
        return self._draws[key]

    def arm(self, cell: Mapping[str, Any], metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(point per seed, draws seeds x B) of one cell, for :func:`covtl.metrics.hierarchical_contrast`."""
        got = [self.draws(r, metric) for r in cell["runs"]]
        return np.array([g[0] for g in got]), np.vstack([g[1] for g in got])

    # ------------------------------------------------------------------ answers
    def cell(self, cell: Mapping[str, Any], metric: str) -> Contrast:
        """The cell's mean over seeds with its hierarchical interval (seeds and test patients)."""
        return hierarchical_contrast({"x": self.arm(cell, metric)}, {"x": 1.0}, seed=self.seed)

    def contrast(self, cells: Mapping[str, Mapping[str, Any]], weights: Mapping[str, float], metric: str) -> Contrast:
        return hierarchical_contrast({k: self.arm(c, metric) for k, c in cells.items()}, weights, seed=self.seed)

    def collapse(self, cell: Mapping[str, Any]) -> str:
        """Why the cell's network learned nothing (the first collapsed seed), or ``""``."""
        for i, r in enumerate(cell["runs"]):
            p = self.predictions(r)
            why = collapse_reason(p.label.to_numpy(), p.prob_1.to_numpy(), p.group.astype(str).to_numpy())
            if why:
                return f"seed {i}: {why}" if len(cell["runs"]) > 1 else why
        return ""

    def same_test_images(self, cells: Iterable[Mapping[str, Any]]) -> bool:
        """Whether seed i of every cell was scored on the same test images (for every i)."""
        cells = list(cells)
        k = {len(c["runs"]) for c in cells}
        if len(k) != 1:
            return False
        for i in range(k.pop()):
            paths = [tuple(self.predictions(c["runs"][i]).path) for c in cells]
            if len(set(paths)) != 1:
                return False
        return True


def _key(path: str) -> str:
    """A test image's identity across data roots: its class folder and file name."""
    p = Path(str(path))
    return f"{p.parent.name}/{p.name}"


def _pts(x: float) -> str:
    return "" if not np.isfinite(x) else f"{100 * x:+.1f}"


def claims(res, evidence: Evidence | None = None, spec: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ledger on the finished runs of ``res`` (a :class:`covtl.book.Results`).

    One row per claim line: the paper's effect, ours with its hierarchical 95% interval and
    minimum detectable effect (all in percentage points), the raw, Holm-adjusted and
    Benjamini-Hochberg p-values, and the verdict (see the module docstring). ``spec``: the claim
    lines (default :func:`load_claims`).
    """
    ev = evidence or Evidence(res)
    spec = load_claims() if spec is None else spec
    paper = load_paper_numbers()
    rows, seen = [], {}
    for c in spec.itertuples():
        cells = {(x["model"], x["setting"]): x for x in res.cells(c.table)}
        arms = {k: cells.get(v) for k, v in arms_of(c).items()}
        row: dict[str, Any] = {"claim": c.id, "paper": c.paper, "table": c.table, "kind": c.kind,
                               "claimed": _claimed(c), "metric": c.metric, "statement": c.statement,
                               "paper effect": "", "ours [95% interval]": "",
                               "MDE": "", "p": np.nan, "verdict": "", "note": "", "_p": np.nan, "_c": None,
                               "_e": paper_effect(c, paper)}
        rows.append(row)
        if any(a is None for a in arms.values()):
            row["verdict"] = f"not run at the {res.profile} profile"
            continue
        runs = {k: tuple(a["runs"]) for k, a in arms.items()}
        if runs["a"] == runs["b"] or (c.kind == "interaction" and runs["c"] == runs["d"]):
            row["verdict"] = "not testable"
            row["note"] = "both rows ran the very same networks (one stand-in for two of the paper's)"
            continue
        collapsed = {k: ev.collapse(a) for k, a in arms.items()}
        if any(collapsed.values()):
            row["verdict"] = "no verdict: a network did not learn"
            row["note"] = "; ".join(f"{a['model']}, {a['setting']}: {why}"
                                    for (k, a) in arms.items() if (why := collapsed[k]))
            continue
        if not ev.same_test_images(arms.values()):
            row["verdict"] = "not comparable"
            row["note"] = "the runs were scored on different test images"
            continue
        con = ev.contrast(arms, WEIGHTS[c.kind], c.metric)
        row["ours [95% interval]"] = f"{_pts(con.value)} [{_pts(con.low)}, {_pts(con.high)}]"
        row["MDE"] = f"{100 * con.mde:.1f}" if np.isfinite(con.mde) else ""
        row["_c"] = con
        key = (c.kind, c.metric, tuple(sorted(runs.items())))
        if key in seen:  # e.g. one stand-in for ResNet-18 and ResNet-50: the same test twice
            row["note"] = f"the same runs as {seen[key]}: counted once"
            row["_dup"] = seen[key]
            continue
        seen[key] = c.id
        row["_p"] = con.p_below(-c.margin) if c.kind == "non-inferiority" else con.p_value
    df = pd.DataFrame(rows)
    df["p"] = df["_p"]
    df["p (Holm)"] = holm(df["_p"].to_numpy())
    df["q (BH)"] = benjamini_hochberg(df["_p"].to_numpy())
    if "_dup" in df:  # a repeated comparison shows its first line's values
        first = df.set_index("claim")
        for i in df.index[df["_dup"].notna()]:
            src = first.loc[df.at[i, "_dup"]]
            df.loc[i, ["p", "p (Holm)", "q (BH)"]] = src[["p", "p (Holm)", "q (BH)"]].to_numpy()
    df["paper effect"] = df["_e"].map(_pts)
    for i in df.index[df["_c"].notna()]:
        df.at[i, "verdict"] = _verdict(df.at[i, "kind"], df.at[i, "_c"], df.at[i, "p (Holm)"], df.at[i, "_e"])
        if res.synthetic:
            note = df.at[i, "note"]
            df.at[i, "note"] = (f"{note}; " if note else "") + f"rule reads: {df.at[i, 'verdict']}"
            df.at[i, "verdict"] = "pipeline check"
    return df.drop(columns=[c for c in ("_p", "_c", "_dup", "_e") if c in df])


def _claimed(c) -> str:
    b, a = f"{c.model_b}, {c.setting_b}", f"{c.model_a}, {c.setting_a}"
    if c.kind == "non-inferiority":
        return f"{b} not worse than {a} by {100 * c.margin:.0f} points or more"
    if c.kind == "interaction":
        return f"({b}) - ({a}) > ({c.model_d}, {c.setting_d}) - ({c.model_c}, {c.setting_c})"
    return f"{b} > {a}"


def _verdict(kind: str, con: Contrast, p_adj: float, effect: float) -> str:
    """The verdict of one tested line from its contrast, its adjusted p-value and the paper's effect."""
    significant = np.isfinite(p_adj) and p_adj < ALPHA
    if kind == "non-inferiority":  # p_adj tests "b - a <= -margin"; a shown better than b contradicts
        if con.high < 0:
            return "contradicted"
        return "reproduced" if significant else "within noise"
    if significant and con.low > 0:
        return "reproduced" if not (np.isfinite(effect) and effect > 0 and con.high < effect) \
            else "reproduced (smaller effect than the paper's)"
    if significant and con.high < 0:
        return "contradicted"
    if np.isfinite(effect) and effect > 0 and con.high < effect and con.low <= 0:
        return "contradicted (excludes the paper's effect)"
    return "within noise"
