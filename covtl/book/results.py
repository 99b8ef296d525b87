"""A profile's results folder, read only: the plan, the study record and each run's files.

The folder is ``$COVTL_RESULTS`` or ``results/$COVTL_PROFILE`` (default ``quick``). Only the
*expected* absence of results (no ``plan.json`` yet, a run not finished) is turned into
``None`` or a smaller plan; anything else raises, so a broken page fails the book build.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from .evidence import Evidence

__all__ = ["REPO", "Results", "complete_results", "load_results", "near_duplicate_test_images", "profile_guess",
           "results_dir", "run_done", "yours_dir"]

REPO = Path(__file__).resolve().parents[2]


def results_dir() -> Path:
    if os.environ.get("COVTL_RESULTS"):
        return Path(os.environ["COVTL_RESULTS"])
    return REPO / "results" / os.environ.get("COVTL_PROFILE", "quick")


def yours_dir() -> Path | None:
    """The reader's own results folder, shown in the book's "Your run" chapter beside the
    headline results (``$COVTL_YOURS``, set by ``covtl book --yours``); ``None`` when not given."""
    return Path(os.environ["COVTL_YOURS"]) if os.environ.get("COVTL_YOURS") else None


@dataclass
class Results:
    """A profile's results folder: the plan, the study record and each run's files.

    ``plan["cells"]`` are the cells the book shows (all of them, or only the finished ones:
    :func:`complete_results`); ``planned`` is every cell of the plan either way.
    """

    root: Path
    _records: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)
    _evidence: dict[tuple, Evidence] = field(default_factory=dict, repr=False, compare=False)

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
    def planned(self) -> list[dict[str, Any]]:
        """Every cell of the plan, finished or not."""
        return self.plan["cells"]

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

    def evidence(self, which: str = "best_val", exclude: frozenset[str] = frozenset()) -> Evidence:
        """The shared patient-resample scoring of this folder's runs (:class:`Evidence`), built once."""
        key = (which, frozenset(exclude))
        if key not in self._evidence:
            self._evidence[key] = Evidence(self, which, exclude)
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

    @property
    def runs_done(self) -> int:
        """How many runs of the plan have finished (:func:`run_done`)."""
        return sum(run_done(self, rid) for rid in self.plan["runs"])

    @property
    def complete(self) -> bool:
        """Whether the study ran to its end (``study.json``); a study still running, or stopped, is not."""
        return bool(self.study.get("complete", True))

    def provenance_line(self) -> str:
        s = self.study
        prov = s.get("provenance", {})
        data = "embedded synthetic data" if s.get("synthetic") else f"real data at {s.get('data_root')}"
        runs = (f"{s.get('runs')} runs" if self.complete else
                f"**recording in progress: {self.runs_done} of {len(self.plan['runs'])} runs finished** "
                "(rows whose runs have not finished are listed as not yet run)")
        return (f"Numbers from the **{s['profile']}** profile on {data} (fingerprint "
                f"`{s.get('data_fingerprint')}`), commit `{str(prov.get('commit', '?'))[:12]}`, "
                f"torch {prov.get('torch')}, {runs}.")


def load_results(root: str | Path | None = None) -> Results:
    """The results folder ``root`` (default :func:`results_dir`), every cell of its plan."""
    return Results(Path(root) if root else results_dir())


def run_done(res: Results, run_id: str) -> bool:
    """A run counts once the study has marked it done (``run.json``) and its record exists."""
    folder = res.root / "runs" / run_id
    run = folder / "run.json"
    if not (run.is_file() and (folder / "metrics.json").is_file()):
        return False
    return json.loads(run.read_text()).get("status") == "done"


def complete_results(root: str | Path | None = None) -> Results | None:
    """The results folder with only the cells whose runs all finished; ``None`` if no plan yet."""
    raw = load_results(root)
    if not (raw.root / "plan.json").is_file():
        return None
    plan = dict(raw.plan)
    plan["cells"] = [c for c in plan["cells"] if all(run_done(raw, r) for r in c["runs"])]
    out = Results(raw.root)
    out.plan = plan  # shadows the cached property for this instance
    out.planned = raw.plan["cells"]
    return out


def profile_guess(root: Path) -> str:
    """The profile a results folder belongs to, from its name (``quick`` if the name is no profile)."""
    from ..profiles import PROFILES

    return root.name if root.name in PROFILES else "quick"


def near_duplicate_test_images(res: Results) -> frozenset[str]:
    """Test images with a near-duplicate in the training split, from the split audit's record (empty
    if the audit has not run)."""
    for cell in res.cells("B1"):
        path = res.root / "runs" / cell["runs"][0] / "near_duplicates.csv"
        if path.is_file():
            d = pd.read_csv(path)
            pairs = d[d.split_a != d.split_b]
            test = pd.concat([pairs.path_a[(pairs.split_a == "test") & (pairs.split_b == "train")],
                              pairs.path_b[(pairs.split_b == "test") & (pairs.split_a == "train")]])
            return frozenset(test)
    return frozenset()
