"""The papers' numbers (book/data/paper_numbers.csv): load, validate, spot-check against the papers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from covtl.paper import COLUMNS, DEFAULT_PATH, KEY, TABLES, load_paper_numbers, paper_table, paper_value

ROOT = Path(__file__).resolve().parents[1]
ALL_IDS = [f"A{i}" for i in range(1, 7)] + [f"B{i}" for i in range(1, 8)]

#: rows per table: one per printed number
EXPECTED_ROWS = {
    "A1": 6 * 4,
    "A2": 6 * 6,
    "A3": 18 * 3,
    "A4": 12 * 6,
    "A5": 18 * 6,
    "A6": 18,
    "B1": 12,
    "B2": 8,
    "B3": 8 * 6,
    "B4": 4 * 3,
    "B5": 4 * 3,
    "B6": 10 * 3,
    "B7": 4 * 3,
}

# (table, model, setting, metric, value), read off the papers' tables
SPOT = [
    ("A1", "R-50 Baseline", "ImageNet val", "top1", 77.2),
    ("A1", "R-101 5 ATTNs", "ImageNet val", "top5", 94.6),
    ("A1", "R-101 1 ATTN", "ImageNet val", "improvement_top1", 0.9),
    ("A2", "R-50 5 ATTNs", "w TL", "accuracy", 93.9),
    ("A2", "R-101 5 ATTNs", "w TL", "auc", 97.8),
    ("A2", "R-101 1 ATTN", "w TL", "improvement_f1", 4.4),
    ("A3", "R-50 Baseline", "w MoCo", "accuracy", 87.3),
    ("A3", "R-101 5 ATTNs", "w SimCLR", "f1", 94.5),
    ("A3", "R-50 1 ATTN", "w SimCLR", "auc", 92.1),
    ("A4", "R-50 1 ATTN", "w/o TL", "f1", 82.4),
    ("A4", "R-101 5 ATTNs", "w TL", "improvement_auc", 10.2),
    ("A4", "R-50 5 ATTNs", "w TL", "improvement_accuracy", 9.2),
    ("A5", "R-50 5 ATTNs", "w STL-M", "accuracy", 88.7),
    ("A5", "R-101 Baseline", "w STL-N", "f1", 86.9),
    ("A5", "R-101 5 ATTNs", "w STL-M", "improvement_auc", 4.8),
    ("A6", "R-50 Baseline", "w/o TL", "leep", -0.918),
    ("A6", "R-101 Baseline", "w STL-N", "leep", -0.909),
    ("A6", "R-101 5 ATTNs", "w STL-N w STL-M", "leep", -0.865),
    ("B1", "COVID19-CT", "train/COVID", "patients", 130),
    ("B1", "COVID19-CT", "test/Non-COVID", "images", 105),
    ("B2", "ResNet-50", "Parameter numbers", "params", 25_557_032),
    ("B2", "CRNet", "Parameter numbers", "params", 546_882),
    ("B3", "VGG-16", "Rand.", "f1", 0.58),
    ("B3", "EfficientNet-b0", "Trans.", "auc", 0.89),
    ("B4", "DenseNet-169", "Pretrain on LMN", "f1", 0.82),
    ("B4", "DenseNet-169", "Pretrain first on ImageNet, then on LMN", "auc", 0.89),
    ("B5", "DenseNet-169", "Self-Trans", "auc", 0.94),
    ("B5", "ResNet-50", "Trans", "accuracy", 0.80),
    ("B6", "ResNet-50", "Method 1", "auc", 0.66),
    ("B6", "DenseNet-169", "Method 3", "f1", 0.76),
    ("B7", "DenseNet-169", "Frozen", "accuracy", 0.79),
    ("B7", "ResNet-50", "Unfrozen", "auc", 0.91),
]


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return load_paper_numbers()


def test_default_path_is_in_the_book() -> None:
    assert DEFAULT_PATH == ROOT / "book" / "data" / "paper_numbers.csv"
    assert DEFAULT_PATH.is_file()


def test_loads_and_validates(df: pd.DataFrame) -> None:
    assert list(df.columns) == list(COLUMNS)
    assert pd.api.types.is_float_dtype(df["value"])
    assert not df.duplicated(list(KEY)).any()
    assert set(df["paper"]) == {"A", "B"}
    assert all(isinstance(n, str) for n in df["note"])


def test_every_table_is_present_with_all_its_numbers(df: pd.DataFrame) -> None:
    assert set(TABLES) == set(ALL_IDS)
    counts = df["table"].value_counts().to_dict()
    assert counts == EXPECTED_ROWS


def test_tables_have_spot_checks() -> None:
    per = pd.Series([s[0] for s in SPOT]).value_counts()
    assert set(per.index) == set(ALL_IDS)
    assert (per >= 2).all()


@pytest.mark.parametrize(("table", "model", "setting", "metric", "value"), SPOT)
def test_spot_values(table: str, model: str, setting: str, metric: str, value: float) -> None:
    assert paper_value(table, model, setting, metric) == pytest.approx(value)


def test_scales(df: pd.DataFrame) -> None:
    scale = df.groupby("table")["scale"].unique().map(lambda s: tuple(sorted(s)))
    for t in ("A1", "A2", "A3", "A4", "A5"):
        assert scale[t] == ("percent",)
    assert scale["A6"] == ("score",)
    assert scale["B1"] == scale["B2"] == ("count",)
    for t in ("B3", "B4", "B5", "B6", "B7"):
        assert scale[t] == ("fraction",)
    frac = df[df["scale"] == "fraction"]["value"]
    assert frac.between(0, 1).all()
    pct = df[df["scale"] == "percent"]["value"]
    assert pct.between(0, 100).all()


def test_leep_typo_is_corrected_and_explained(df: pd.DataFrame) -> None:
    row = df[(df["table"] == "A6") & (df["model"] == "R-101 Baseline") & (df["setting"] == "w STL-N")]
    assert row["value"].item() == pytest.approx(-0.909)
    assert "0.-909" in row["note"].item()
    assert (df[df["table"] == "A6"]["value"] < 0).all()


def test_improvement_columns_match_values_except_noted(df: pd.DataFrame) -> None:
    """Improv. = value - reference, up to rounding; the two printed exceptions carry a note."""
    off = []
    for t, ref_of in (
        ("A1", lambda m, s: (m.split()[0] + " Baseline", s)),
        ("A2", lambda m, s: (m.split()[0] + " Baseline", s)),
        ("A4", lambda m, s: (m, "w/o TL")),
        ("A5", lambda m, s: (m, "w/o TL")),
    ):
        d = df[df["table"] == t].set_index(["model", "setting", "metric"])
        for (m, s, met), r in d.iterrows():
            if not met.startswith("improvement_"):
                continue
            base = met.removeprefix("improvement_")
            diff = d.loc[(m, s, base), "value"] - d.loc[(*ref_of(m, s), base), "value"]
            if abs(diff - r["value"]) > 0.051:
                off.append((t, m, s, met))
                assert "recorded as printed" in r["note"]
    assert sorted(off) == [
        ("A5", "R-101 1 ATTN", "w STL-M", "improvement_accuracy"),
        ("A5", "R-50 1 ATTN", "w STL-M", "improvement_auc"),
    ]


def test_tables_agree_where_the_papers_repeat_numbers(df: pd.DataFrame) -> None:
    def sel(t: str, setting: str | None = None) -> pd.Series:
        d = df[(df["table"] == t) & ~df["metric"].str.startswith("improvement_")]
        if setting is not None:
            d = d[d["setting"] == setting]
        return d.set_index(["model", "metric"])["value"].sort_index()

    a2 = sel("A2")
    assert a2.equals(sel("A4", "w TL"))
    assert a2.equals(sel("A3", "w Ours"))
    assert sel("A4", "w/o TL").equals(sel("A5", "w/o TL"))
    assert sel("B5", "Trans").equals(sel("B3", "Trans.").loc[["DenseNet-169", "ResNet-50"]])
    b1 = df[df["table"] == "B1"]
    images = b1[b1["metric"] == "images"]
    assert images[images["setting"].str.endswith("/COVID")]["value"].sum() == 349
    assert images[images["setting"].str.endswith("/Non-COVID")]["value"].sum() == 397


def test_paper_table_pivot() -> None:
    t = paper_table("A4")
    assert list(t.index) == [f"{g} {v}" for g in ("R-50", "R-101") for v in ("Baseline", "1 ATTN", "5 ATTNs")]
    assert t.loc["R-50 Baseline", ("w TL", "accuracy")] == pytest.approx(88.2)
    assert t.columns.names == ["setting", "metric"]
    assert t.attrs["caption"] == TABLES["A4"]
    b2 = paper_table("B2")
    assert b2.shape == (8, 1)
    assert b2.loc["VGG-16"].item() == 138_357_544
    with pytest.raises(ValueError, match="unknown table"):
        paper_table("C1")


def _write(tmp_path: Path, df: pd.DataFrame) -> Path:
    p = tmp_path / "bad.csv"
    df.to_csv(p, index=False)
    return p


def test_missing_column_raises(tmp_path: Path, df: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="missing column.*scale"):
        load_paper_numbers(_write(tmp_path, df.drop(columns="scale")))


def test_duplicate_key_raises(tmp_path: Path, df: pd.DataFrame) -> None:
    dup = pd.concat([df, df.iloc[[5]]], ignore_index=True)
    with pytest.raises(ValueError, match="duplicate key"):
        load_paper_numbers(_write(tmp_path, dup))


@pytest.mark.parametrize(
    ("column", "bad", "match"),
    [
        ("value", "n/a", "non-numeric"),
        ("scale", "percentage", "'scale' must be"),
        ("table", "A9", "unknown 'table'"),
        ("table", "B1", "does not belong"),
        ("model", "", "empty 'model'"),
        ("metric", "F1", "lower case"),
    ],
)
def test_bad_cells_raise(tmp_path: Path, df: pd.DataFrame, column: str, bad: str, match: str) -> None:
    broken = df.astype({"value": object}).copy()
    broken.loc[0, column] = bad
    with pytest.raises(ValueError, match=match):
        load_paper_numbers(_write(tmp_path, broken))


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_paper_numbers(tmp_path / "nope.csv")
