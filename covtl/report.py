"""Tables for people: run records summarised for notebooks, and ours beside the papers' for the book.

Nothing here computes a metric; it reads the records the stages wrote (``metrics.json``) and
the papers' numbers transcribed in ``book/data/paper_numbers.csv``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["show", "summary"]


def _fmt_ci(d: dict[str, float]) -> str:
    return f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"


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
        rows.append({"what": "last train loss", "value": f"{last['train_loss']:.4f}"})
        if "val_acc" in last:
            rows.append({"what": "last val accuracy", "value": f"{last['val_acc']:.3f}"})
    for name, value in (result.get("scores") or {}).items():
        rows.append({"what": name, "value": f"{value:.4f}"})
    for method, d in (result.get("localisation") or {}).items():
        for k, v in d.items():
            rows.append({"what": f"{method} {k}", "value": f"{v:.3f}"})
    prov = result.get("provenance", {})
    rows.append({"what": "provenance", "value": f"commit {prov.get('commit', '?')[:12]}, "
                 f"seed {prov.get('seed')}, {prov.get('device')}"})
    return pd.DataFrame(rows)


def show(result: dict[str, Any]) -> pd.DataFrame:
    """The summary, for the last line of a notebook cell."""
    return summary(result)
