"""The study's tidy summary table (covtl.report.study_summary, results/<profile>/summary.csv)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from covtl.io import write_json_atomic
from covtl.report import SUMMARY_COLUMNS, study_summary, write_study_summary


def _ci(value: float, low: float | None = None, high: float | None = None) -> dict:
    return {"value": value, "low": value - 0.1 if low is None else low, "high": value + 0.1 if high is None else high,
            "n_boot": 10}


def _finetune(acc: float) -> dict:
    test = {"covid_positive": {"accuracy": _ci(acc), "auc": _ci(acc + 0.05, float("nan"), float("nan"))},
            "noncovid_positive": {"accuracy": acc, "auc": acc + 0.05}, "n_images": 10, "n_patients": 5}
    return {"stage": "finetune", "best_val": {"epoch": 3, "val_loss": 0.4, "val_acc": 0.8},
            "test": {"last": test, "best_val": test}, "provenance": {}}


def _results(tmp_path: Path, unfinished: bool = False) -> Path:
    """A results folder: an STL-N pretraining (upstream only), an SSTL-M run (no validation), two
    fine-tunes (one serving two cells), a transferability run and an explain run."""
    runs = {
        "stl_n-1": ("stl_n", {"backbone": "resnet18", "n_attn": 5, "recipe": "a_stl_n", "seed": 0},
                    {"best_val": {"epoch": 2, "val_loss": 2.5, "val_acc": 0.3, "val_top5": 0.6}}),
        "sstl_m-1": ("sstl_m", {"backbone": "resnet18", "n_attn": 5, "method": "moco_v2", "seed": 0},
                     {"best_val": {"epoch": -1, "val_acc": -1.0, "val_loss": float("inf")}}),
        "finetune-1": ("finetune", {"backbone": "resnet18", "n_attn": 5, "recipe": "a_finetune", "seed": 0},
                       _finetune(0.8)),
        "finetune-2": ("finetune", {"backbone": "resnet18", "n_attn": 0, "recipe": "b_transfer", "seed": 1},
                       _finetune(0.7)),
        "transferability-1": ("transferability", {"backbone": "resnet18", "n_attn": 0, "seed": 0},
                              {"scores": {"leep": -0.6, "logme": float("nan")}}),
        "explain-1": ("explain", {"backbone": "resnet18", "n_attn": 5, "seed": 0},
                      {"localisation": {"gradcam": {"pointing_game": 0.5, "iou_at_half": 0.1}}}),
    }
    cells = [{"table": "A1", "model": "R-50", "setting": "w STL-N", "backbone": "resnet18", "runs": ["stl_n-1"]},
             {"table": "A2", "model": "ResNet-50", "setting": "w TL", "backbone": "resnet18", "runs": ["finetune-1"]},
             {"table": "A4", "model": "ResNet-50", "setting": "w TL", "backbone": "resnet18", "runs": ["finetune-1"]},
             {"table": "B3", "model": "ResNet-18", "setting": "Transfer", "backbone": "resnet18",
              "runs": ["finetune-2"]},
             {"table": "A6", "model": "ResNet-50", "setting": "w TL", "backbone": "resnet18",
              "runs": ["transferability-1"]},
             {"table": "A-Fig4", "model": "ResNet-50", "setting": "w TL", "backbone": "resnet18",
              "runs": ["explain-1"]}]
    for rid, (_, _, rec) in runs.items():
        if not (unfinished and rid == "explain-1"):
            write_json_atomic(tmp_path / "runs" / rid / "metrics.json", rec)  # strict JSON: inf/nan -> null
    plan = {"profile": "cpu", "cells": cells, "not_run": [],
            "runs": {rid: {"notebook": nb, "params": params, "upstream": None, "init": ""}
                     for rid, (nb, params, _) in runs.items()}}
    write_json_atomic(tmp_path / "plan.json", plan)
    return tmp_path


def test_summary_has_one_row_per_run_split_and_metric(tmp_path):
    path = write_study_summary(_results(tmp_path))
    assert path == tmp_path / "summary.csv" and not list(tmp_path.glob(".*.tmp"))
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    assert list(df.columns) == SUMMARY_COLUMNS
    assert not df.duplicated(["run", "which", "split", "metric"]).any()
    got = df.groupby("run").size().to_dict()
    # fine-tune: 2 metrics x (last, best_val) on test + val_acc, val_loss; no row for SSTL-M (no validation)
    assert got == {"stl_n-1": 3, "finetune-1": 6, "finetune-2": 6, "transferability-1": 2, "explain-1": 2}

    row = df[(df.run == "finetune-1") & (df.which == "last") & (df.metric == "accuracy")].iloc[0]
    assert (row.split, row.value, row.low, row.high) == ("test", 0.8, pytest.approx(0.7), pytest.approx(0.9))
    assert (row.notebook, row.backbone, row.n_attn, row.recipe, row.seed) == ("finetune", "resnet18", 5,
                                                                              "a_finetune", 0)
    assert row.tables == "A2;A4" and row.cells == "A2: ResNet-50, w TL;A4: ResNet-50, w TL"
    auc = df[(df.run == "finetune-2") & (df.which == "best_val") & (df.metric == "auc")].iloc[0]
    assert auc.value == pytest.approx(0.75) and math.isnan(auc.low) and math.isnan(auc.high)
    val = df[(df.run == "finetune-2") & (df.split == "val")].set_index("metric")
    assert val.value.to_dict() == {"val_acc": 0.8, "val_loss": 0.4} and set(val.which) == {"best_val"}

    stl = df[df.run == "stl_n-1"].set_index("metric")
    assert stl.value.to_dict() == {"val_acc": 0.3, "val_top5": 0.6, "val_loss": 2.5}
    assert set(stl.tables) == {"A1"}
    scores = df[df.run == "transferability-1"].set_index("metric")
    assert set(scores.split) == {"train"} and scores.value["leep"] == -0.6 and math.isnan(scores.value["logme"])
    assert set(df[df.run == "explain-1"].metric) == {"gradcam_pointing_game", "gradcam_iou_at_half"}


def test_summary_leaves_out_runs_without_a_record_and_needs_the_plan(tmp_path):
    root = _results(tmp_path, unfinished=True)
    plan = json.loads((root / "plan.json").read_text())
    records = {rid: json.loads(p.read_text()) for rid in plan["runs"]
               if (p := root / "runs" / rid / "metrics.json").is_file()}
    df = study_summary(plan, records)
    assert "explain-1" not in set(df.run) and list(df.columns) == SUMMARY_COLUMNS
    assert study_summary({"cells": [], "runs": {}}, {}).empty
    with pytest.raises(FileNotFoundError, match="plan.json is missing"):
        write_study_summary(tmp_path / "nowhere")
