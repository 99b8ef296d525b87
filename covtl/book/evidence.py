"""What the runs of a results folder say about one cell: its value with an interval.

One :class:`Evidence` object per results folder scores every finished run on the **same** patient
resamples (:func:`covtl.metrics.patient_weights` over the union of the test patients), so that a
cell's interval, a paired difference and a difference of differences all come from one
consistent set of draws, and seeds are paired across cells (seed i of one cell with seed i of
another: the same fine-tuning seed).

- :meth:`Evidence.cell` -- one cell: the mean over its seeds with a 95% interval that covers the
  seeds and the test patients;
- :meth:`Evidence.contrast` -- a weighted sum of cells (b - a, (b - a) - (d - c)) on the same draws;
- :meth:`Evidence.collapse` -- why a cell's network is not shown to have learned (``""`` if it is);
- :func:`cell_value` -- a cell's value for any metric a table shows: test metrics through
  :class:`Evidence`, source-task accuracy and transferability scores over seeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cached_property
from math import log
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import json_float
from ..metrics import (
    Contrast,
    aggregate_seeds,
    collapse_reason,
    hierarchical_contrast,
    patient_weights,
    weighted_metric,
)

__all__ = ["DEFAULT_METRICS", "METRICS", "NATS_TO_BITS", "N_BOOT", "SCORES", "Evidence", "cell_value", "run_value"]

N_BOOT = 10_000  # patient resamples: p-values resolve down to 2/(N_BOOT + 1), small enough for Holm over the ledger
#: nats -> bits: paper A's LEEP values are only possible in bits (LEEP >= -H(Y); see the A6 page)
NATS_TO_BITS = 1 / log(2)
#: the metrics of each table (the rest: DEFAULT_METRICS, COVID-positive test metrics)
METRICS = {"A1": ("top1", "top5"), "A6": ("leep",)}
DEFAULT_METRICS = ("accuracy", "f1", "auc")
#: the transferability scores a transferability run records (covtl.transferability.transferability_scores)
SCORES = ("leep", "nce", "logme", "h_score", "h_score_shrunk")


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
        self._collapsed: dict[tuple[str, ...], str] = {}

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
        """Why the cell's network is not shown to have learned anything, or ``""``.

        Either a seed collapsed (:func:`covtl.metrics.collapse_reason`: one class for every test
        image, or F1 0 with an AUC interval that holds 0.5), or the cell as a whole is no better
        than chance: the hierarchical 95% interval of its test AUC (seeds and patients) reaches
        0.5. B7's frozen ResNet-18 stand-in learned nothing (validation accuracy fell over
        30 epochs) yet kept an F1 above 0; only the second test caught it. Answered once per set
        of runs: the ledger asks again for every line that uses the cell.
        """
        runs = tuple(cell["runs"])
        if runs not in self._collapsed:
            self._collapsed[runs] = self._collapse(cell)
        return self._collapsed[runs]

    def _collapse(self, cell: Mapping[str, Any]) -> str:
        for i, r in enumerate(cell["runs"]):
            p = self.predictions(r)
            why = collapse_reason(p.label.to_numpy(), p.prob_1.to_numpy(), p.group.astype(str).to_numpy())
            if why:
                return f"seed {i}: {why}" if len(cell["runs"]) > 1 else why
        auc = self.cell(cell, "auc")
        if auc.low <= 0.5:
            return (f"no better than chance: test AUC {auc.value:.3f} "
                    f"[{auc.low:.3f}, {auc.high:.3f}], an interval that holds 0.5")
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


def run_value(rec: Mapping[str, Any], metric: str, which: str = "best_val") -> float:
    """One run's value of ``metric`` from its ``metrics.json`` (NaN where the record says ``null``)."""
    if metric in ("top1", "top5"):
        best = rec["best_val"]
        return json_float(best["val_acc"] if metric == "top1" else best.get("val_top5"))
    if metric in SCORES:
        return json_float(rec["scores"].get(metric))
    test = rec["test"].get(which) or rec["test"]["last"]
    return json_float(test["covid_positive"][metric]["value"])


def cell_value(res, cell: Mapping[str, Any], metric: str, which: str = "best_val",
               exclude: frozenset[str] = frozenset()) -> dict[str, float]:
    """Mean over the cell's seeds with a 95% interval (``mean``, ``low``, ``high``, ``n``).

    Test metrics: the hierarchical bootstrap (seeds, then test patients; :class:`Evidence`).
    Source-task accuracy and transferability scores have no test sample: a t interval over
    seeds (none for one seed). LEEP is converted to bits (see :data:`NATS_TO_BITS`).
    """
    if metric in DEFAULT_METRICS:
        c = res.evidence(which, exclude).cell(cell, metric)
        return {"mean": c.value, "low": c.low, "high": c.high, "n": c.n_seeds}
    values = [run_value(res.record(r), metric, which) for r in cell["runs"]]
    if metric == "leep":
        values = [v * NATS_TO_BITS for v in values]
    return aggregate_seeds(values)
