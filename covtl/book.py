"""What the book's pages compute: ours beside the papers', read from result files only.

Every number a page shows comes from a file a run wrote (``results/<profile>/...``: the plan,
each run's ``metrics.json`` and ``predictions.csv``) or from the papers' numbers transcribed
once in ``book/data/paper_numbers.csv``; nothing is typed into a page.

- :func:`comparison` -- one paper table: the paper's value and ours (mean over seeds with a 95%
  interval) for every row, in the paper's scale (percent or fraction).
- :func:`paired_tests` -- the comparisons a table's claims rest on, on the same test patients:
  patient-level paired bootstrap for accuracy/F1 and DeLong for AUC.
- :func:`claims` -- the claims ledger: each claim of both papers as reproduced, within noise
  or contradicted, at the profile the results come from.

The results folder is ``$COVTL_RESULTS`` or ``results/$COVTL_PROFILE`` (default ``quick``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .metrics import aggregate_seeds, delong_test, paired_bootstrap
from .paper import TABLES, load_paper_numbers

__all__ = ["Results", "claims", "comparison", "paired_tests", "results"]

REPO = Path(__file__).resolve().parents[1]
METRICS = {"A1": ("top1", "top5"), "A6": ("leep",)}
DEFAULT_METRICS = ("accuracy", "f1", "auc")

#: the comparisons behind each table's claims: (label, (model_a, setting_a), (model_b, setting_b));
#: "*" means "every model of the table", paired with the same model
COMPARISONS: dict[str, list[tuple[str, tuple[str, str], tuple[str, str]]]] = {
    "A2": [("1 ATTN vs baseline", ("{g} Baseline", "w TL"), ("{g} 1 ATTN", "w TL")),
           ("5 ATTNs vs baseline", ("{g} Baseline", "w TL"), ("{g} 5 ATTNs", "w TL"))],
    "A3": [("ours vs MoCo", ("*", "w MoCo"), ("*", "w Ours")),
           ("ours vs SimCLR", ("*", "w SimCLR"), ("*", "w Ours"))],
    "A4": [("TL vs no TL", ("*", "w/o TL"), ("*", "w TL"))],
    "A5": [("STL-N vs no TL", ("*", "w/o TL"), ("*", "w STL-N")),
           ("STL-M vs no TL", ("*", "w/o TL"), ("*", "w STL-M"))],
    "B3": [("Trans. vs Rand.", ("*", "Rand."), ("*", "Trans."))],
    "B5": [("Self-Trans vs Trans", ("*", "Trans"), ("*", "Self-Trans"))],
    "B6": [(f"Self-Trans vs Method {i}", ("*", f"Method {i}"), ("*", "Self-Trans")) for i in (1, 2, 3, 4)],
    "B7": [("Unfrozen vs Frozen", ("*", "Frozen"), ("*", "Unfrozen"))],
}


def results_dir() -> Path:
    if os.environ.get("COVTL_RESULTS"):
        return Path(os.environ["COVTL_RESULTS"])
    return REPO / "results" / os.environ.get("COVTL_PROFILE", "quick")


@dataclass
class Results:
    """A profile's results folder: the plan, the study record and each run's files."""

    root: Path
    _records: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def plan(self) -> dict[str, Any]:
        path = self.root / "plan.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"no study results at {self.root} (plan.json missing): run `covtl study --profile "
                f"{self.root.name}` first, or set COVTL_RESULTS / COVTL_PROFILE"
            )
        return json.loads(path.read_text())

    @cached_property
    def study(self) -> dict[str, Any]:
        return json.loads((self.root / "study.json").read_text())

    @property
    def profile(self) -> str:
        return self.plan["profile"]

    def record(self, run_id: str) -> dict[str, Any]:
        """The run's ``metrics.json``, read once (a page asks for it once per metric); read-only."""
        if run_id not in self._records:
            self._records[run_id] = json.loads((self.root / "runs" / run_id / "metrics.json").read_text())
        return self._records[run_id]

    def predictions(self, run_id: str, which: str = "best_val") -> pd.DataFrame:
        df = pd.read_csv(self.root / "runs" / run_id / "predictions.csv")
        return df[df.model == which].sort_values("path").reset_index(drop=True)

    def cells(self, table: str) -> list[dict[str, Any]]:
        return [c for c in self.plan["cells"] if c["table"] == table]

    def not_run(self, table: str) -> list[dict[str, str]]:
        return [n for n in self.plan["not_run"] if n["table"] == table]

    def provenance_line(self) -> str:
        s = self.study
        prov = s.get("provenance", {})
        data = "embedded synthetic data" if s.get("synthetic") else f"data at {s.get('data_root')}"
        return (f"Numbers from the **{s['profile']}** profile on {data} (fingerprint "
                f"`{s.get('data_fingerprint')}`), commit `{str(prov.get('commit', '?'))[:12]}`, "
                f"torch {prov.get('torch')}, {s.get('runs')} runs.")


def results(root: str | Path | None = None) -> Results:
    return Results(Path(root) if root else results_dir())


# ---------------------------------------------------------------------------- values

#: the transferability scores a transferability run records (covtl.transferability.transferability_scores)
SCORES = ("leep", "nce", "logme", "h_score", "h_score_shrunk")


def _run_value(rec: dict[str, Any], metric: str, which: str = "best_val") -> float:
    if metric in ("top1", "top5"):
        best = rec["best_val"]
        return float(best["val_acc"] if metric == "top1" else best.get("val_top5", np.nan))
    if metric in SCORES:
        return float(rec["scores"].get(metric, np.nan))
    test = rec["test"].get(which) or rec["test"]["last"]
    return float(test["covid_positive"][metric]["value"])


def cell_value(res: Results, cell: dict[str, Any], metric: str, which: str = "best_val") -> dict[str, float]:
    """Mean over the cell's seeds with a 95% interval (t over seeds; one seed: patient bootstrap)."""
    values = [_run_value(res.record(r), metric, which) for r in cell["runs"]]
    agg = aggregate_seeds(values)
    if len(values) == 1 and metric in DEFAULT_METRICS:
        rec = res.record(cell["runs"][0])
        ci = (rec["test"].get(which) or rec["test"]["last"])["covid_positive"][metric]
        agg.update(low=ci["low"], high=ci["high"])
    return agg


def comparison(table: str, res: Results | None = None, which: str = "best_val") -> pd.DataFrame:
    """The paper's rows of ``table`` with the paper's value and ours, metric by metric."""
    res = res or results()
    paper = load_paper_numbers()
    paper = paper[paper.table == table]
    metrics = METRICS.get(table, DEFAULT_METRICS)
    rows = []
    for cell in res.cells(table):
        row: dict[str, Any] = {"model": cell["model"], "setting": cell["setting"], "network run": cell["backbone"]}
        for metric in metrics:
            p = paper[(paper.model == cell["model"]) & (paper.setting == cell["setting"]) & (paper.metric == metric)]
            scale = 100.0 if (not p.empty and p.scale.iloc[0] == "percent") else 1.0
            ours = cell_value(res, cell, metric, which)
            row[f"{metric} (paper)"] = float(p.value.iloc[0]) if not p.empty else np.nan
            row[f"{metric} (ours)"] = _fmt(ours, scale)
        row["seeds"] = len(cell["runs"])
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(agg: dict[str, float], scale: float) -> str:
    digits = 1 if scale == 100 else 3
    mean = agg["mean"] * scale
    if np.isnan(agg.get("low", np.nan)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{agg['low'] * scale:.{digits}f}, {agg['high'] * scale:.{digits}f}]"


# ---------------------------------------------------------------------------- paired tests


def _pairs(res: Results, table: str) -> list[tuple[str, dict, dict]]:
    cells = {(c["model"], c["setting"]): c for c in res.cells(table)}
    models = sorted({c["model"] for c in res.cells(table)})
    groups = sorted({m.split(" ")[0] for m in models})
    out = []
    for label, (ma, sa), (mb, sb) in COMPARISONS.get(table, []):
        if ma == "*":
            pairs = [((m, sa), (m, sb)) for m in models]
        else:
            pairs = [((ma.format(g=g), sa), (mb.format(g=g), sb)) for g in groups]
        for a, b in pairs:
            if a in cells and b in cells:
                out.append((f"{label}: {b[0]}" if ma == "*" else f"{label} ({a[0].split(' ')[0]})",
                            cells[a], cells[b]))
    return out


def paired_tests(table: str, res: Results | None = None) -> pd.DataFrame:
    """Each comparison of ``table`` per seed: b - a with a patient-paired bootstrap interval
    (accuracy, F1) and DeLong's test (AUC), on the best-validation networks' test predictions."""
    res = res or results()
    rows = []
    for label, a, b in _pairs(res, table):
        for seed, (ra, rb) in enumerate(zip(a["runs"], b["runs"], strict=False)):
            pa, pb = res.predictions(ra), res.predictions(rb)
            if not pa.path.equals(pb.path):
                raise ValueError(f"{ra} and {rb} were scored on different test images; cannot pair them")
            y, groups = pa.label.to_numpy(), pa.group.astype(str).to_numpy()
            row: dict[str, Any] = {"comparison": label, "seed": seed}
            for metric in ("accuracy", "f1"):
                t = paired_bootstrap(y, pa.prob_1.to_numpy(), pb.prob_1.to_numpy(), groups,
                                     metric_name=metric, n_boot=1000, seed=seed)
                row[f"{metric} diff"] = f"{t['diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}]"
                row[f"{metric} p"] = round(t["p_value"], 3)
            try:
                d = delong_test(y, pa.prob_1.to_numpy(), pb.prob_1.to_numpy())
                row["AUC diff"], row["AUC p (DeLong)"] = f"{d['diff']:+.3f}", round(d["p_value"], 3)
            except ValueError as err:  # too few patients of a class in a tiny test set
                row["AUC diff"], row["AUC p (DeLong)"] = "n/a", str(err)
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- claims


def load_claims(path: Path | None = None) -> pd.DataFrame:
    path = path or REPO / "book" / "data" / "claims.csv"
    return pd.read_csv(path, keep_default_na=False)


def claims(res: Results | None = None) -> pd.DataFrame:
    """Every claim with our verdict: the paired, patient-level bootstrap interval of the claimed
    difference (seed 0, best-validation networks) decides -- excludes 0 in the claimed
    direction: reproduced; includes 0: within noise; excludes 0 the other way: contradicted."""
    res = res or results()
    out = []
    for c in load_claims().itertuples():
        cells = {(x["model"], x["setting"]): x for x in res.cells(c.table)}
        a, b = cells.get((c.model_a, c.setting_a)), cells.get((c.model_b, c.setting_b))
        row = {"claim": c.id, "paper": c.paper, "statement": c.statement, "table": c.table, "metric": c.metric}
        if a is None or b is None:
            row.update(verdict=f"not run at the {res.profile} profile", difference="")
            out.append(row)
            continue
        pa, pb = res.predictions(a["runs"][0]), res.predictions(b["runs"][0])
        t = paired_bootstrap(pa.label.to_numpy(), pa.prob_1.to_numpy(), pb.prob_1.to_numpy(),
                             pa.group.astype(str).to_numpy(), metric_name=c.metric, n_boot=1000)
        if t["low"] > 0:
            verdict = "reproduced"
        elif t["high"] < 0:
            verdict = "contradicted"
        else:
            verdict = "within noise"
        row.update(verdict=verdict, difference=f"{t['diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}]")
        out.append(row)
    return pd.DataFrame(out)


def caption(table: str) -> str:
    return TABLES.get(table, table)
