"""Tables for people: run records summarised for notebooks, and ours beside the papers' for the book.

Nothing here computes a metric; it reads the records the stages wrote (``metrics.json``) and
the papers' numbers transcribed in ``book/data/paper_numbers.csv``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .io import json_float

__all__ = ["SUMMARY_COLUMNS", "show", "study_summary", "summary", "write_study_summary"]


def _fmt_ci(d: dict[str, float | None]) -> str:
    value, low, high = (json_float(d.get(k)) for k in ("value", "low", "high"))  # null (NaN) prints nan
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def summary(result: dict[str, Any]) -> pd.DataFrame:
    """One row per reported quantity of a stage's record (test metrics with CIs, scores, ...)."""
    rows = []
    for which, test in result.get("test", {}).items():
        if "covid_positive" in test:
            for metric, d in test["covid_positive"].items():
                rows.append({"what": f"test ({which}) {metric}, COVID positive", "value": _fmt_ci(d)})
        elif "accuracy" in test:
            rows.append({"what": f"test ({which}) accuracy", "value": _fmt_ci(test["accuracy"])})
    history = result.get("history") or []
    if history:
        last = history[-1]
        rows.append({"what": "epochs", "value": str(len(history))})
        rows.append({"what": "last train loss", "value": f"{json_float(last['train_loss']):.4f}"})
        if "val_acc" in last:
            rows.append({"what": "last val accuracy", "value": f"{json_float(last['val_acc']):.3f}"})
    for name, value in (result.get("scores") or {}).items():
        rows.append({"what": name, "value": f"{json_float(value):.4f}"})
    for method, d in (result.get("localisation") or {}).items():
        for k, v in d.items():
            rows.append({"what": f"{method} {k}", "value": f"{json_float(v):.3f}"})
    prov = result.get("provenance", {})
    rows.append({"what": "provenance", "value": f"commit {prov.get('commit', '?')[:12]}, "
                 f"seed {prov.get('seed')}, {prov.get('device')}"})
    return pd.DataFrame(rows)


def show(result: dict[str, Any]) -> pd.DataFrame:
    """The summary, for the last line of a notebook cell."""
    return summary(result)


# ---------------------------------------------------------------------------- the study's tidy table

#: columns of ``results/<profile>/summary.csv``, one row per run x split x metric
SUMMARY_COLUMNS = ["run", "notebook", "tables", "cells", "backbone", "n_attn", "recipe", "seed",
                   "which", "split", "metric", "value", "low", "high"]


def _record_rows(rec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """(which, split, metric, value, low, high) of every scalar metric a stage's record holds."""
    rows: list[dict[str, Any]] = []

    def add(which: str, split: str, metric: str, value: Any, low: Any = None, high: Any = None) -> None:
        rows.append({"which": which, "split": split, "metric": metric, "value": json_float(value),
                     "low": json_float(low), "high": json_float(high)})

    for which, test in (rec.get("test") or {}).items():  # fine-tunes: COVID positive, with CIs
        for metric, d in (test.get("covid_positive") or {}).items():
            add(which, "test", metric, d.get("value"), d.get("low"), d.get("high"))
    best = rec.get("best_val") or {}
    if best.get("epoch", -1) >= 0:  # epoch -1: the stage had no validation split (SSTL-M)
        for metric in ("val_acc", "val_top5", "val_loss"):
            if metric in best:
                add("best_val", "val", metric, best[metric])
    for metric, value in (rec.get("scores") or {}).items():  # transferability, on the target's train split
        add("", "train", metric, value)
    for method, d in (rec.get("localisation") or {}).items():  # explain, on the lesion masks
        for metric, value in d.items():
            add("", "medseg", f"{method}_{metric}", value)
    return rows


def study_summary(plan: Mapping[str, Any], records: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """The study's numbers as one tidy table: one row per run x split x metric.

    ``plan`` is ``plan.json`` (:meth:`covtl.study.Plan.to_json`); ``records`` maps run id to its
    ``metrics.json`` (runs without a record are left out). Columns (:data:`SUMMARY_COLUMNS`): the
    run and its notebook; the paper tables and cells (``"A2: ResNet-50, w TL"``, ``;``-separated)
    that use the run directly (empty for an upstream run such as a source pretraining); backbone,
    ATTN count, recipe (or self-supervised method) and seed from the run's parameters; ``which``
    network was scored (``last`` or ``best_val`` for test metrics); ``split``: ``test`` or ``val``
    (fine-tunes: COVID positive test metrics with their 95% patient-bootstrap interval, and the
    best validation epoch's ``val_acc``/``val_loss``/``val_top5``), ``train`` (transferability
    scores on COVID19-CT's training split) or ``medseg`` (explain runs' localisation scores);
    ``value``, ``low`` and ``high`` (NaN where there is no interval or the record says ``null``).
    Values are as recorded: LEEP in nats (the book shows bits), fractions, not percent.
    """
    cells_of: dict[str, list[dict[str, Any]]] = {}
    for cell in plan.get("cells", []):
        for rid in cell["runs"]:
            cells_of.setdefault(rid, []).append(cell)
    rows = []
    for rid, spec in plan.get("runs", {}).items():
        rec = records.get(rid)
        if rec is None:
            continue
        params = spec.get("params", {})
        cells = cells_of.get(rid, [])
        base = {"run": rid, "notebook": spec.get("notebook", ""),
                "tables": ";".join(dict.fromkeys(c["table"] for c in cells)),
                "cells": ";".join(f"{c['table']}: {c['model']}, {c['setting']}" for c in cells),
                "backbone": params.get("backbone", ""), "n_attn": params.get("n_attn"),
                "recipe": params.get("recipe", params.get("method", "")), "seed": params.get("seed")}
        rows += [{**base, **r} for r in _record_rows(rec)]
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return df.astype({"n_attn": "Int64", "seed": "Int64"})


def write_study_summary(root: str | Path) -> Path:
    """Write :func:`study_summary` of the results folder ``root`` (``plan.json``, ``runs/*/metrics.json``)
    to ``root/summary.csv`` (atomically: a temp file, then rename); returns the path."""
    root = Path(root)
    plan_path = root / "plan.json"
    if not plan_path.is_file():
        raise FileNotFoundError(f"{plan_path} is missing: summary.csv is built from the study's plan "
                                "(run `covtl study` first)")
    plan = json.loads(plan_path.read_text())
    records = {}
    for rid in plan.get("runs", {}):
        path = root / "runs" / rid / "metrics.json"
        if path.is_file():
            records[rid] = json.loads(path.read_text())
    out = root / "summary.csv"
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        study_summary(plan, records).to_csv(tmp, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
