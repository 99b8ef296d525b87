"""The two papers' published numbers as tidy data (``book/data/paper_numbers.csv``).

Every numeric table of Liu & Ji 2021 (paper ``A``, tables ``A1``-``A6``) and He et al. 2020 (paper ``B``,
tables ``B1``-``B7``) is transcribed once, one row per printed number, so the book can set the papers'
numbers beside ours without anyone typing numbers into pages.

Columns: ``paper``, ``table``, ``model`` (the row as the paper names it), ``setting`` (the column group or
condition), ``metric`` (lower case), ``value`` (in the paper's own scale), ``scale`` (``percent``,
``fraction``, ``count`` or ``score`` - the last for LEEP, a log-likelihood), ``source`` and ``note``
(empty unless something needed interpreting, e.g. the typo ``0.-909`` in Table 6 of paper A).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = [
    "COLUMNS",
    "DEFAULT_PATH",
    "KEY",
    "SCALES",
    "TABLES",
    "load_paper_numbers",
    "paper_table",
    "paper_value",
]

#: the CSV, found from the repository root
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "book" / "data" / "paper_numbers.csv"

COLUMNS: tuple[str, ...] = (
    "paper",
    "table",
    "model",
    "setting",
    "metric",
    "value",
    "scale",
    "source",
    "note",
)
#: one printed number per key
KEY: tuple[str, ...] = ("paper", "table", "model", "setting", "metric")
SCALES: frozenset[str] = frozenset({"percent", "fraction", "count", "score"})

#: table id -> caption as printed in the paper (paper B's small-capital captions in sentence case)
TABLES: dict[str, str] = {
    "A1": (
        "Top-1 and Top-5 accuracies (%) and performance improvements of all the six networks on ImageNet. "
        "There are two columns for each metric. The value column provides the original results, and the "
        "improv. column shows the improvements based on the baselines."
    ),
    "A2": (
        "Overall performance for COVID-19 CT image prediction of all the six models pretrained with STL-N, "
        "STL-M and SSTL-M in terms of accuracy(%), F1-score(%) and AUC(%). There are two columns for each "
        "metric. The value column provides the original results, and the improv. column shows the "
        "improvements based on the baselines."
    ),
    "A3": (
        "Comparison among different self-supervised learning methods in terms of accuracy(%), F1-score(%) "
        "and AUC(%). All the networks are first pretrained on the same supervised source tasks STL-N and "
        "STL-M, then pretrained with different SSTL-M methods on the same CT data."
    ),
    "A4": (
        "Results for COVID-19 CT image prediction of all the six networks with and without transfer learning "
        "in terms of accuracy(%), F1-score(%) and AUC(%). There are two columns for each metric. The value "
        "column provides the original results, and the improv. column shows the performance improvements of "
        "networks with transfer learning compared with networks without transfer learning."
    ),
    "A5": (
        "Results for COVID-19 CT image prediction of all the six networks without transfer learning, with "
        "STL-N and with STL-M in terms of accuracy(%), F1-score(%) and AUC(%). There are two columns for "
        "each metric. The value column provides the original results, and the improv. column shows the "
        "performance improvements of networks with each of the STL-N and STL-M compared with networks "
        "without transfer learning."
    ),
    "A6": (
        "LEEP scores for all the six networks without transfer learning, with STL-N, with both the STL-N "
        "and STL-M."
    ),
    "B1": "Dataset split",
    "B2": "Comparison of parameter numbers",
    "B3": (
        "Performance comparison between randomly initialized networks (Rand.) and ImageNet pretrained "
        "networks (Trans.)"
    ),
    "B4": "Performance of DenseNet-169 with different weights initialization mechanisms",
    "B5": "Comparison between Self-Trans and vanilla transfer learning (Trans)",
    "B6": "Performance of Self-Trans in the ablation studies",
    "B7": "Performance with the weights of the feature extractor frozen and unfrozen",
}

_REQUIRED_TEXT = ("paper", "table", "model", "setting", "metric", "value", "scale", "source")


def _fail(path: Path, msg: str, bad: pd.DataFrame | None = None, limit: int = 10) -> None:
    detail = ""
    if bad is not None and len(bad):
        shown = bad.head(limit).to_string(index=False)
        more = f"\n... and {len(bad) - limit} more" if len(bad) > limit else ""
        detail = f":\n{shown}{more}"
    raise ValueError(f"{path}: {msg}{detail}")


def load_paper_numbers(path: str | Path | None = None) -> pd.DataFrame:
    """Read and validate the paper-numbers CSV; ``value`` is a float, ``note`` an empty string if unset.

    Raises ``ValueError`` (naming the file and the offending rows) on missing or unexpected columns, empty
    required fields, non-numeric values, unknown papers/tables/scales, table ids that do not belong to
    their paper, non-integer counts, or a repeated (paper, table, model, setting, metric) key.
    """
    path = Path(path) if path is not None else DEFAULT_PATH
    if not path.is_file():
        raise FileNotFoundError(f"paper numbers not found at {path}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)

    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        _fail(path, f"missing column(s) {missing}; expected {list(COLUMNS)}")
    extra = [c for c in df.columns if c not in COLUMNS]
    if extra:
        _fail(path, f"unexpected column(s) {extra}; expected {list(COLUMNS)}")
    df = df[list(COLUMNS)].copy()
    for c in COLUMNS:
        df[c] = df[c].astype(str).str.strip()

    for c in _REQUIRED_TEXT:
        empty = df[c] == ""
        if empty.any():
            _fail(path, f"empty {c!r} in {int(empty.sum())} row(s)", df[empty])

    values = pd.to_numeric(df["value"], errors="coerce")
    bad = values.isna()
    if bad.any():
        _fail(path, "non-numeric 'value'", df[bad])
    df["value"] = values.astype(float)

    bad = ~df["paper"].isin(["A", "B"])
    if bad.any():
        _fail(path, "'paper' must be 'A' or 'B'", df[bad])
    bad = ~df["table"].isin(list(TABLES))
    if bad.any():
        _fail(path, f"unknown 'table' id (known: {sorted(TABLES)})", df[bad])
    bad = df["table"].str[0] != df["paper"]
    if bad.any():
        _fail(path, "'table' id does not belong to its 'paper'", df[bad])
    bad = ~df["scale"].isin(sorted(SCALES))
    if bad.any():
        _fail(path, f"'scale' must be one of {sorted(SCALES)}", df[bad])
    bad = df["metric"] != df["metric"].str.lower()
    if bad.any():
        _fail(path, "'metric' must be lower case", df[bad])
    counts = df["scale"] == "count"
    bad = counts & ((df["value"] < 0) | (df["value"] % 1 != 0))
    if bad.any():
        _fail(path, "'count' values must be non-negative integers", df[bad])

    dup = df.duplicated(list(KEY), keep=False)
    if dup.any():
        _fail(path, f"duplicate key {list(KEY)}", df.loc[dup, list(KEY) + ["value"]])
    return df.reset_index(drop=True)


def paper_table(table_id: str, path: str | Path | None = None) -> pd.DataFrame:
    """One table for display: rows = ``model``, columns = (``setting``, ``metric``), in the paper's order."""
    if table_id not in TABLES:
        raise ValueError(f"unknown table id {table_id!r}; known: {sorted(TABLES)}")
    df = load_paper_numbers(path)
    t = df[df["table"] == table_id]
    if t.empty:
        raise ValueError(f"table {table_id!r} has no rows in the paper numbers")
    rows = list(dict.fromkeys(t["model"]))
    cols = list(dict.fromkeys(zip(t["setting"], t["metric"], strict=True)))
    wide = t.pivot(index="model", columns=["setting", "metric"], values="value")
    wide = wide.reindex(index=rows, columns=pd.MultiIndex.from_tuples(cols, names=["setting", "metric"]))
    wide.attrs["caption"] = TABLES[table_id]
    wide.attrs["source"] = t["source"].iloc[0]
    return wide


def paper_value(
    table_id: str, model: str, setting: str, metric: str, path: str | Path | None = None
) -> float:
    """The single number printed in ``table_id`` for (model, setting, metric); ``KeyError`` if absent."""
    df = load_paper_numbers(path)
    hit = df[
        (df["table"] == table_id)
        & (df["model"] == model)
        & (df["setting"] == setting)
        & (df["metric"] == metric)
    ]
    if hit.empty:
        raise KeyError(f"no number for {(table_id, model, setting, metric)}")
    return float(hit["value"].item())
