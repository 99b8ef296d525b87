"""Strict JSON result files (covtl.io) and readers that take ``null`` back as NaN."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from covtl.io import dumps_json, json_float, strict_json, write_json_atomic
from covtl.report import summary


def _reject(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def test_nan_and_inf_are_written_as_null(tmp_path):
    obj = {"a": float("nan"), "b": [1.0, float("inf"), (-float("inf"), 2)], "c": {"d": np.float64("nan")},
           "e": np.float32("nan"), "f": np.float32(0.5), "g": "NaN", "h": None, "i": 3}
    path = write_json_atomic(tmp_path / "x" / "m.json", obj)
    back = json.loads(path.read_text(), parse_constant=_reject)  # no NaN/Infinity tokens in the file
    assert back == {"a": None, "b": [1.0, None, [None, 2]], "c": {"d": None}, "e": None, "f": 0.5,
                    "g": "NaN", "h": None, "i": 3}
    assert list(tmp_path.joinpath("x").iterdir()) == [path]  # no temp file left
    assert json.loads(dumps_json({"x": math.nan}), parse_constant=_reject) == {"x": None}
    assert strict_json((1.5, math.inf)) == [1.5, None]


def test_unconvertible_value_fails_and_keeps_the_old_file(tmp_path):
    path = write_json_atomic(tmp_path / "m.json", {"ok": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_readers_take_null_as_nan():
    assert math.isnan(json_float(None)) and json_float(2) == 2.0
    record = {"test": {"last": {"covid_positive": {"auc": {"value": 0.5, "low": None, "high": None}}}},
              "history": [{"train_loss": 0.7, "val_acc": None}], "scores": {"leep": None},
              "provenance": {"commit": "abc", "seed": 0, "device": "cpu"}}
    rows = dict(zip(*summary(record).T.values, strict=True))
    assert rows["test (last) auc, COVID positive"] == "0.500 [nan, nan]"
    assert rows["last val accuracy"] == "nan" and rows["leep"] == "nan"


def test_book_values_take_null_as_nan():
    from covtl.book.evidence import run_value as _run_value

    assert math.isnan(_run_value({"scores": {"leep": None}}, "leep"))
    assert math.isnan(_run_value({"best_val": {"val_acc": 0.5, "val_top5": None}}, "top5"))
    rec = {"test": {"best_val": {"covid_positive": {"f1": {"value": None}}}}}
    assert math.isnan(_run_value(rec, "f1"))
