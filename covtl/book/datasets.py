"""The data chapter's tables: what the data root holds, and what the split audit found.

- :func:`split_statistics` -- paper B's Table I beside the audit's counts;
- :func:`audit_table`, :func:`conflicting_duplicates`, :func:`audit_note` -- the split audit's record;
- :func:`data_inventory` -- images, groups and classes per dataset and split of the data root;
- :func:`regions_on_slices` -- paper A's lobe regions drawn on training slices of the data root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from IPython.display import Markdown
from matplotlib.figure import Figure

from ..paper import load_paper_numbers
from ..plotting import message_figure, region_figure
from .page import not_yet_run
from .results import Results

__all__ = ["DATASET_ROLES", "audit_note", "audit_table", "conflicting_duplicates", "data_inventory",
           "dataset_inventory", "region_examples", "regions_on_slices", "split_statistics", "study_data_root"]

DATASET_ROLES = {
    "covid-ct": "target task (fine-tune), SSTL-M images, LEEP target split",
    "covidx": "STL-M source task (chest X-rays, 3 classes)",
    "lung-ct-unlabeled": "paper B's unlabeled CT stage (LUNA's role)",
    "natural": "STL-N source task (natural images)",
    "medseg": "infection masks for scoring Grad-CAM and attention maps",
}


def _split_audit(res: Results | None) -> dict[str, Any] | None:
    if res is None or not res.cells("B1"):
        return None
    return res.record(res.cells("B1")[0]["runs"][0])


def split_statistics(res: Results | None) -> pd.DataFrame:
    """Paper B's Table I (patients and images per class and split) beside the split audit's counts."""
    paper = load_paper_numbers()
    p = paper[paper.table == "B1"].copy()
    p["split"] = p.setting.str.split("/").str[0]
    p["class"] = p.setting.str.split("/").str[1].str.replace("Non-COVID", "NonCOVID")
    wide = p.pivot_table(index=["class", "split"], columns="metric", values="value", sort=False)
    wide = wide.rename(columns=lambda m: f"{m} (paper)")
    audit = _split_audit(res)
    if audit is not None:
        ours = pd.DataFrame(audit["tables"]["summary"]).set_index(["class", "split"])
        for m in ("patients", "images"):
            wide[f"{m} (ours)"] = ours[m].reindex(wide.index)
    cols = [c for m in ("patients", "images") for c in (f"{m} (paper)", f"{m} (ours)") if c in wide.columns]
    return wide[cols].astype("Int64")


def _audit_tables(res: Results | None) -> dict[str, pd.DataFrame]:
    """The split audit's tables (empty dict before the audit has run)."""
    audit = _split_audit(res)
    if audit is None:
        return {}
    return {name: pd.DataFrame(rows) for name, rows in audit["tables"].items()}


def audit_table(res: Results | None, name: str) -> pd.DataFrame | Markdown:
    """One table of the split audit, or a note while the audit has not run."""
    tables = _audit_tables(res)
    if not tables:
        return Markdown(not_yet_run(res.root if res is not None else None, "this table"))
    if name not in tables:
        raise ValueError(f"the split audit has no table {name!r}; it has {sorted(tables)}")
    return tables[name]


def conflicting_duplicates(res: Results | None) -> pd.DataFrame:
    """Near-duplicate pairs across splits, with file names and whether their labels disagree."""
    tables = _audit_tables(res)
    cols = ["split_a", "file_a", "class_a", "split_b", "file_b", "class_b", "distance", "labels disagree"]
    if not tables or tables["near_duplicates"].empty:
        return pd.DataFrame(columns=cols)
    d = tables["near_duplicates"]
    d = d[d.kind == "across-splits"].copy()
    d["file_a"] = d.path_a.map(lambda p: Path(p).name)
    d["file_b"] = d.path_b.map(lambda p: Path(p).name)
    d["labels disagree"] = d.class_a != d.class_b
    return d.sort_values(["labels disagree", "distance"], ascending=[False, True])[cols].reset_index(drop=True)


def audit_note(res: Results | None) -> Markdown:
    """What the current audit says about cross-split duplicates, and on which data."""
    if res is None or _split_audit(res) is None:
        return Markdown("The split audit has not run yet for these results.")
    d = conflicting_duplicates(res)
    n, bad = len(d), int(d["labels disagree"].sum()) if len(d) else 0
    synthetic = bool(res.study.get("synthetic"))
    data = "the embedded **synthetic** data" if synthetic else f"the **real** data at `{res.study.get('data_root')}`"
    text = (f"These results are on {data}. The audit finds {n} near-duplicate pairs across splits, "
            f"{bad} of them with opposite labels.")
    if synthetic:
        text += (" The synthetic generator draws correlated slices per patient, so these pairs say nothing "
                 "about COVID19-CT itself; the real-data finding is the one documented in the audit's tests.")
    elif bad:
        text += " They are listed first below: this is the real-data finding described above."
    return Markdown(text)


def dataset_inventory(data_root: str | Path) -> pd.DataFrame:
    """Images, groups (patients / volumes) and classes per dataset and split under ``data_root``."""
    from ..data import datasets as ds

    rows = []
    for name, cls in ds.DATASETS.items():
        for split in cls.SPLITS:
            d = ds.load_dataset(name, ds.locate(data_root, name), split)
            rows.append({"dataset": name, "folder": ds.FOLDERS[name], "split": split, "images": len(d.records),
                         "groups": d.records.group.nunique(), "classes": len(d.classes) or "unlabeled",
                         "role": DATASET_ROLES.get(name, "")})
    return pd.DataFrame(rows).set_index(["dataset", "split"])


def study_data_root(res: Results | None) -> Path | None:
    """The data root the results were computed on, if it exists on this machine."""
    if res is None:
        return None
    root = Path(str(res.study.get("data_root", "")))
    return root if str(root) and root.is_dir() else None


def data_inventory(res: Results | None) -> pd.DataFrame | Markdown:
    """:func:`dataset_inventory` of the results' data root, or a note when it is not available here."""
    root = study_data_root(res)
    if root is None:
        return Markdown("The data root of these results is not available on this machine (or nothing has "
                        "run yet), so the inventory is not shown.")
    return dataset_inventory(root)


def region_examples(data_root: str | Path, n: int = 4) -> tuple[list[np.ndarray], list[str]]:
    """``n`` COVID19-CT training slices (alternating classes, evenly spaced) as grey arrays, with names."""
    from ..data import datasets as ds
    from ..data.images import load_image

    records = ds.load_dataset("covid-ct", ds.locate(data_root, "covid-ct"), "train").records
    picks = [r for label in (1, 0) for r in records[records.label == label].iloc[:: max(1, len(records) // n)]
             .head((n + 1) // 2).itertuples()][:n]
    images = [np.asarray(load_image(r.path, mode="L"), dtype=float) / 255.0 for r in picks]
    return images, [("COVID " if r.label == 1 else "NonCOVID ") + Path(r.path).name[:24] for r in picks]


def regions_on_slices(res: Results | None, n: int = 4) -> Figure:
    """:func:`covtl.plotting.region_figure` on ``n`` training slices of the results' COVID19-CT
    (a message if the data root is not here)."""
    root = study_data_root(res)
    if root is None:
        return message_figure("no data root available: the regions are drawn once the study has run")
    images, names = region_examples(root, n)
    return region_figure(images, names)
