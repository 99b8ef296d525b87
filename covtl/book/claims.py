"""The claims ledger: every claim of ``book/data/claims.csv`` judged on a results folder.

:func:`claims` is the one place a verdict is decided; the ledger page, each table's page and
the verdict counts all read its lines. Rules (the book's Methods chapter states them for readers):

- **superiority** (b > a) and **interaction** ((b - a) - (d - c) > 0): *reproduced* when the
  Holm-adjusted p-value is below 5% and the interval excludes 0 in the claimed direction;
  *contradicted* when the same holds the other way, or when the interval contains 0 but
  excludes the paper's own effect; *within noise* otherwise.
- **non-inferiority** (b - a > -margin; paper B's "does not surpass"): *reproduced* when the
  Holm-adjusted one-sided p-value of b - a <= -margin is below 5%; *contradicted* when a is
  shown better than b (as for superiority, the other way); *within noise* otherwise.
- No verdict from a network that did not learn (:meth:`covtl.book.Evidence.collapse`: a seed
  collapsed, or the cell's test AUC interval holds 0.5), from rows that ran the very same runs
  (stand-ins), or from runs scored on different test images; a comparison whose runs repeat an
  earlier line's is that line's test, counted once.
- A row the profile does not run reads *not run at the profile*; a planned row whose runs have
  not finished, *not yet run*.
- On synthetic data (the ``smoke`` and ``quick`` profiles) every verdict reads *pipeline check*.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..metrics import Contrast, benjamini_hochberg, holm
from ..paper import load_paper_numbers
from .evidence import Evidence
from .results import REPO, Results
from .tables import interval_text

__all__ = ["ALPHA", "CONTROLLED", "KINDS", "NOT_RUN", "NOT_YET_RUN", "arms_of", "claims", "load_claims",
           "paper_effect", "verdict_counts"]

ALPHA = 0.05
KINDS = ("superiority", "non-inferiority", "interaction")
#: the suffix of A Table 3's controlled rows (covtl.plan): same recipe for every SSL objective
CONTROLLED = " (controlled)"
#: the verdicts of lines whose rows have no runs to read (at the profile, or yet)
NOT_RUN = "not run at the {profile} profile"
NOT_YET_RUN = "not yet run"
WEIGHTS = {"superiority": {"a": -1.0, "b": 1.0}, "non-inferiority": {"a": -1.0, "b": 1.0},
           "interaction": {"a": -1.0, "b": 1.0, "c": 1.0, "d": -1.0}}
#: the columns of the ledger, in order
COLUMNS = ["claim", "paper", "table", "kind", "claimed", "metric", "statement", "paper effect",
           "ours [95% interval]", "MDE", "p", "verdict", "note", "p (Holm)", "q (BH)"]


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


def _pts(x: float) -> str:
    return "" if not np.isfinite(x) else f"{100 * x:+.1f}"


def claims(res: Results | None, evidence: Evidence | None = None, spec: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ledger on the finished runs of ``res`` (:func:`covtl.book.complete_results`; ``None``:
    nothing has run yet, every line reads *not yet run*).

    One row per claim line: the paper's effect, ours with its hierarchical 95% interval and
    minimum detectable effect (all in percentage points), the raw, Holm-adjusted and
    Benjamini-Hochberg p-values, and the verdict (see the module docstring). ``spec``: the claim
    lines (default :func:`load_claims`); ``evidence``: default ``res.evidence()``.
    """
    spec = load_claims() if spec is None else spec
    paper = load_paper_numbers()
    planned = {(c["table"], c["model"], c["setting"]) for c in res.planned} if res is not None else set()
    rows, seen = [], {}
    for c in spec.itertuples():
        row: dict[str, Any] = {"claim": c.id, "paper": c.paper, "table": c.table, "kind": c.kind,
                               "claimed": _claimed(c), "metric": c.metric, "statement": c.statement,
                               "paper effect": "", "ours [95% interval]": "",
                               "MDE": "", "p": np.nan, "verdict": "", "note": "", "_p": np.nan, "_c": None,
                               "_e": paper_effect(c, paper)}
        rows.append(row)
        if res is None:
            row["verdict"] = NOT_YET_RUN
            continue
        cells = {(x["model"], x["setting"]): x for x in res.cells(c.table)}
        arms = {k: cells.get(v) for k, v in arms_of(c).items()}
        if any(a is None for a in arms.values()):
            all_planned = all((c.table, *v) in planned for v in arms_of(c).values())
            row["verdict"] = NOT_YET_RUN if all_planned else NOT_RUN.format(profile=res.profile)
            if not all_planned:
                skipped = [v for v in arms_of(c).values() if (c.table, *v) not in planned]
                row["note"] = _not_run_note(res, c.table, skipped)
            continue
        runs = {k: tuple(a["runs"]) for k, a in arms.items()}
        if runs["a"] == runs["b"] or (c.kind == "interaction" and runs["c"] == runs["d"]):
            row["verdict"] = "not testable"
            row["note"] = "both rows ran the very same networks (one stand-in for two of the paper's)"
            continue
        ev = evidence or res.evidence()
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
        row["ours [95% interval]"] = interval_text(_pts(con.value), _pts(con.low), _pts(con.high))
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
    return df[COLUMNS]


def _why_not_run(not_run: list[dict[str, str]], model: str, setting: str) -> str:
    """The plan's reason that the row (``model``, ``setting``) did not run ("" if it gives none).

    The plan names a row's model, or the model with the rows it leaves out in brackets
    ("R-50 5 ATTNs (controlled rows)"); the bracketed one wins when the setting names those rows.
    """
    exact = [n["why"] for n in not_run if n["model"] == model]
    part = [n["why"] for n in not_run if n["model"].startswith(model + " (")
            and n["model"][len(model) + 2:].split()[0].rstrip(")") in setting]
    return (part or exact or [""])[0]


def _not_run_note(res: Results, table: str, rows: list[tuple[str, str]]) -> str:
    """Which of a line's rows the profile skips and why: "R-50 1 ATTN: its 6-hour budget on 2 cores"."""
    notes: dict[str, str] = {}
    for model, setting in rows:
        why = _why_not_run(res.not_run(table), model, setting)
        if not why:
            continue
        label = f"{model}, {setting}" if CONTROLLED in setting else model
        # "not run at the cpu profile (its budget)" -> "its budget"; "VGG-16 is not run ..." as it is
        notes[label] = why[why.index("(") + 1:-1] if why.startswith("not run at") and why.endswith(")") else why
    parts: list[str] = []
    for label, why in notes.items():
        model = label.split(", ")[0]
        if label != model and model in notes:  # the network's own reason covers its settings
            continue
        # "VGG-16 is not run ..." names its row already; "its budget" needs the row's name
        text = why if why.startswith(label.split()[0]) else f"{label}: {why}"
        if text not in parts:
            parts.append(text)
    return "; ".join(parts)


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


def verdict_counts(ledger: pd.DataFrame) -> pd.DataFrame:
    """Claims per paper and table by verdict, with totals."""
    counts = ledger.groupby(["paper", "table", "verdict"]).size().unstack("verdict", fill_value=0)
    counts.loc[("all", ""), :] = counts.sum()
    counts["claims"] = counts.sum(axis=1)
    return counts.astype(int)
