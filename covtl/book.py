"""What the book's pages compute: ours beside the papers', read from result files only.

Every number a page shows comes from a file a run wrote (``results/<profile>/...``: the plan,
each run's ``metrics.json`` and ``predictions.csv``) or from the papers' numbers transcribed
once in ``book/data/paper_numbers.csv``; nothing is typed into a page.

- :func:`comparison` -- one paper table: the paper's value and ours (mean over seeds with a 95%
  interval from the hierarchical bootstrap over seeds and test patients, :mod:`covtl.ledger`)
  for every row, in the paper's scale (percent or fraction; LEEP in bits, as paper A's).
- :func:`paired_tests` -- the claims ledger's lines of one table (:func:`covtl.ledger.claims`).
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

from . import ledger
from .io import json_float
from .metrics import aggregate_seeds
from .paper import TABLES, load_paper_numbers

__all__ = ["Results", "claims", "comparison", "near_duplicate_test_images", "paired_tests", "results"]

REPO = Path(__file__).resolve().parents[1]
METRICS = {"A1": ("top1", "top5"), "A6": ("leep",)}
DEFAULT_METRICS = ("accuracy", "f1", "auc")

def results_dir() -> Path:
    if os.environ.get("COVTL_RESULTS"):
        return Path(os.environ["COVTL_RESULTS"])
    return REPO / "results" / os.environ.get("COVTL_PROFILE", "quick")


@dataclass
class Results:
    """A profile's results folder: the plan, the study record and each run's files."""

    root: Path
    _records: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)
    _evidence: dict[tuple, ledger.Evidence] = field(default_factory=dict, repr=False, compare=False)

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

    def evidence(self, which: str = "best_val", exclude: frozenset[str] = frozenset()) -> ledger.Evidence:
        """The shared patient-resample scoring of this folder's runs (:class:`covtl.ledger.Evidence`), built once."""
        key = (which, frozenset(exclude))
        if key not in self._evidence:
            self._evidence[key] = ledger.Evidence(self, which, exclude)
        return self._evidence[key]

    @property
    def synthetic(self) -> bool:
        """Whether the runs trained on the embedded synthetic data (the smoke and quick profiles)."""
        path = self.root / "study.json"
        return bool(json.loads(path.read_text()).get("synthetic")) if path.is_file() else self.profile in (
            "smoke", "quick")

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
    """One run's value of ``metric`` from its ``metrics.json`` (NaN where the record says ``null``)."""
    if metric in ("top1", "top5"):
        best = rec["best_val"]
        return json_float(best["val_acc"] if metric == "top1" else best.get("val_top5"))
    if metric in SCORES:
        return json_float(rec["scores"].get(metric))
    test = rec["test"].get(which) or rec["test"]["last"]
    return json_float(test["covid_positive"][metric]["value"])


def cell_value(res: Results, cell: dict[str, Any], metric: str, which: str = "best_val",
               exclude: frozenset[str] = frozenset()) -> dict[str, float]:
    """Mean over the cell's seeds with a 95% interval.

    Test metrics: the hierarchical bootstrap (seeds, then test patients; :mod:`covtl.ledger`).
    Source-task accuracy and transferability scores have no test sample: a t interval over
    seeds (none for one seed). LEEP is converted to bits (see :data:`covtl.ledger.NATS_TO_BITS`).
    """
    if metric in DEFAULT_METRICS:
        c = res.evidence(which, exclude).cell(cell, metric)
        return {"mean": c.value, "low": c.low, "high": c.high, "n": c.n_seeds}
    values = [_run_value(res.record(r), metric, which) for r in cell["runs"]]
    if metric == "leep":
        values = [v * ledger.NATS_TO_BITS for v in values]
    return aggregate_seeds(values)


def comparison(table: str, res: Results | None = None, which: str = "best_val",
               exclude: frozenset[str] = frozenset()) -> pd.DataFrame:
    """The paper's rows of ``table`` with the paper's value and ours, metric by metric.

    ``learned`` says whether every seed's network learned the task (:func:`covtl.metrics.collapse_reason`);
    ``exclude``: test images left out (e.g. :func:`near_duplicate_test_images`).
    """
    res = res or results()
    paper = load_paper_numbers()
    paper = paper[paper.table == table]
    metrics = METRICS.get(table, DEFAULT_METRICS)
    test_metrics = any(m in DEFAULT_METRICS for m in metrics)
    rows = []
    for cell in res.cells(table):
        row: dict[str, Any] = {"model": cell["model"], "setting": cell["setting"], "network run": cell["backbone"]}
        for metric in metrics:
            p = paper[(paper.model == cell["model"]) & (paper.setting == cell["setting"]) & (paper.metric == metric)]
            scale = 100.0 if (not p.empty and p.scale.iloc[0] == "percent") else 1.0
            ours = cell_value(res, cell, metric, which, exclude)
            unit = ", bits" if metric == "leep" else ""
            row[f"{metric} (paper{unit})"] = float(p.value.iloc[0]) if not p.empty else np.nan
            row[f"{metric} (ours{unit})"] = _fmt(ours, scale)
        row["seeds"] = len(cell["runs"])
        if test_metrics:
            why = res.evidence(which, exclude).collapse(cell)
            row["learned"] = f"no: {why}" if why else "yes"
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(agg: dict[str, float], scale: float) -> str:
    digits = 1 if scale == 100 else 3
    mean = agg["mean"] * scale
    if np.isnan(agg.get("low", np.nan)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{agg['low'] * scale:.{digits}f}, {agg['high'] * scale:.{digits}f}]"


def near_duplicate_test_images(res: Results) -> frozenset[str]:
    """Test images with a near-duplicate in the training split, from the split audit's record (empty
    if the audit has not run)."""
    audits = [c for c in res.plan["cells"] if c["table"] == "B1"]
    for cell in audits:
        path = res.root / "runs" / cell["runs"][0] / "near_duplicates.csv"
        if path.is_file():
            d = pd.read_csv(path)
            pairs = d[d.split_a != d.split_b]
            test = pd.concat([pairs.path_a[(pairs.split_a == "test") & (pairs.split_b == "train")],
                              pairs.path_b[(pairs.split_b == "test") & (pairs.split_a == "train")]])
            return frozenset(test)
    return frozenset()


# ---------------------------------------------------------------------------- claims


def load_claims(path: Path | None = None) -> pd.DataFrame:
    return ledger.load_claims(path)


def claims(res: Results | None = None) -> pd.DataFrame:
    """The claims ledger (:func:`covtl.ledger.claims`) of ``res``."""
    res = res or results()
    return ledger.claims(res, res.evidence())


def paired_tests(table: str, res: Results | None = None) -> pd.DataFrame:
    """The ledger's lines of ``table``: every comparison its claims rest on, all seeds together."""
    led = claims(res)
    return led[led.table == table].reset_index(drop=True)


def caption(table: str) -> str:
    return TABLES.get(table, table)
