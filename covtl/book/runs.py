"""The runs behind the numbers: how to rerun each, what each cost, where each ran.

- :func:`papermill_commands` -- the command that reruns seed 0 of each row of a table;
- :func:`wall_times`, :func:`study_totals` -- the compute chapter's record of this build;
- :func:`provenance_table`, :func:`environment_table` -- the reproducibility chapter's record.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .results import Results, run_done

__all__ = ["environment_table", "papermill_commands", "provenance_table", "stage_times", "study_totals", "wall_times"]


def papermill_commands(res: Results | None, table: str, out: str = "out.ipynb") -> pd.DataFrame:
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


def _recorded_threads(res: Results, run_id: str) -> int | None:
    """The torch CPU threads a CPU run used (its provenance), or ``None`` (GPU run, or not recorded)."""
    try:
        prov = res.record(run_id).get("provenance", {})
    except FileNotFoundError:
        return None
    if str(prov.get("device", "cpu")).startswith("cuda"):
        return None
    return prov.get("cpu_threads")


def wall_times(res: Results | None) -> tuple[pd.DataFrame, pd.DataFrame]:
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


def stage_times(res: Results | None) -> pd.DataFrame:
    """Compute time per stage (notebook) of the finished runs, from each run's ``run.json``: runs
    finished of those planned, their summed wall time in hours, and the mean per run in minutes,
    with a total. Runs ran side by side (``study.json``'s ``jobs``), so the study's own wall time
    is shorter than the sum."""
    cols = ["runs finished", "runs planned", "wall time, hours", "mean per run, minutes"]
    if res is None:
        return pd.DataFrame(columns=cols)
    rows: dict[str, dict[str, float]] = {}
    for rid, spec in res.plan["runs"].items():
        row = rows.setdefault(spec["notebook"], {"runs finished": 0, "runs planned": 0, "wall": 0.0})
        row["runs planned"] += 1
        if run_done(res, rid):
            row["runs finished"] += 1
            row["wall"] += float(json.loads((res.root / "runs" / rid / "run.json").read_text()).get("wall_time_s", 0))
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.loc["all stages"] = df.sum()
    df["wall time, hours"] = (df.wall / 3600).round(2)
    df["mean per run, minutes"] = (df.wall / 60 / df["runs finished"].where(df["runs finished"] > 0)).round(1)
    df.index.name = "stage"
    return df[cols].astype({"runs finished": int, "runs planned": int})


def study_totals(res: Results | None) -> pd.DataFrame:
    """The study record's totals: runs, executed and unchanged runs, wall time."""
    if res is None:
        return pd.DataFrame(columns=["value"])
    s = res.study
    hours = round(s.get("wall_time_s", 0) / 3600, 3)
    return pd.DataFrame({"value": {"profile": s["profile"], "runs in the plan": s.get("runs"),
                                   "executed by the last `covtl study`": s.get("ran"),
                                   "unchanged (reused)": s.get("skipped"),
                                   "wall time of the last `covtl study`, hours": hours}})


def provenance_table(res: Results | None) -> pd.DataFrame:
    """One row per run of the plan: id, notebook, commit, seed, device, wall time, created."""
    cols = ["run", "notebook", "commit", "seed", "device", "wall_time_s", "created"]
    if res is None:
        return pd.DataFrame(columns=cols)
    rows = []
    for rid in res.plan["runs"]:
        if not run_done(res, rid):
            rows.append({"run": rid, "notebook": res.plan["runs"][rid]["notebook"], "commit": "not yet run"})
            continue
        run = json.loads((res.root / "runs" / rid / "run.json").read_text())
        prov = res.record(rid).get("provenance", {})
        rows.append({"run": rid, "notebook": run["notebook"], "commit": str(run["provenance"].get("commit", ""))[:12],
                     "seed": run["params"].get("seed"), "device": prov.get("device", "cpu (no model)"),
                     "wall_time_s": run.get("wall_time_s"), "created": run["provenance"].get("created")})
    return pd.DataFrame(rows, columns=cols).astype({"seed": "Int64"}).set_index("run")


def environment_table(res: Results | None) -> pd.DataFrame:
    """The study's environment (``study.json`` provenance) as a two-column table."""
    if res is None:
        return pd.DataFrame(columns=["value"])
    prov = res.study.get("provenance", {})
    return pd.DataFrame({"value": {k: str(v) for k, v in prov.items()}})
