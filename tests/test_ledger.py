"""The statistics behind every interval and verdict: hierarchical bootstrap, multiplicity, the ledger's rules.

Each case has an answer known in advance: per-seed metrics that no patient resample can change,
contrasts that are constant by construction, textbook Holm / Benjamini-Hochberg examples, and
small results folders whose verdicts follow from how they were built.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from covtl import book
from covtl.metrics import (
    benjamini_hochberg,
    binary_metrics,
    bootstrap_ci,
    collapse_reason,
    hierarchical_contrast,
    holm,
    min_detectable_effect,
    patient_weights,
    weighted_metric,
)

N_PATIENTS, PER_PATIENT, B = 40, 10, 2000


def _fixed_accuracy_scores(correct_per_patient: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels all 1; in every patient exactly ``correct_per_patient`` of 10 images are right, so
    accuracy is correct_per_patient / 10 on *any* resample of patients."""
    y = np.ones(N_PATIENTS * PER_PATIENT, dtype=int)
    groups = np.repeat(np.arange(N_PATIENTS), PER_PATIENT)
    s = np.tile((np.arange(PER_PATIENT) < correct_per_patient).astype(float), N_PATIENTS)
    return y, s, groups


def _arm(per_seed_correct: list[int]) -> tuple[np.ndarray, np.ndarray]:
    w = patient_weights(N_PATIENTS, B, seed=1)[:, np.repeat(np.arange(N_PATIENTS), PER_PATIENT)]
    points, draws = [], []
    for k in per_seed_correct:
        y, s, _ = _fixed_accuracy_scores(k)
        points.append(weighted_metric("accuracy", y, s)[0])
        draws.append(weighted_metric("accuracy", y, s, w))
    return np.array(points), np.vstack(draws)


# ------------------------------------------------------------------------ weighted metrics and weights


def test_weighted_metrics_equal_the_metrics_of_the_resampled_test_set():
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 120), rng.random(120)
    s[:40] = np.round(s[:40], 1)  # ties, which AUC counts one half
    groups = np.repeat(np.arange(60), 2)
    w = patient_weights(60, 5, seed=3)[:, groups]
    assert (w.sum(axis=1) == 120).all()
    for metric in ("accuracy", "precision", "recall", "f1", "auc"):
        got = weighted_metric(metric, y, s, w)
        for b in range(5):
            idx = np.repeat(np.arange(120), w[b].astype(int))
            assert got[b] == pytest.approx(binary_metrics(y[idx], s[idx])[metric]), metric


def test_weighted_metric_refuses_mismatched_weights_and_unknown_metrics():
    with pytest.raises(ValueError, match="columns"):
        weighted_metric("accuracy", [0, 1], [0.2, 0.8], np.ones((2, 3)))
    with pytest.raises(ValueError, match="unknown metric"):
        weighted_metric("kappa", [0, 1], [0.2, 0.8])


# ------------------------------------------------------------------------ hierarchical bootstrap


def test_hierarchical_interval_is_the_spread_of_the_seeds_when_patients_cannot_move_it():
    # seeds at 0.6, 0.7, 0.8 whatever the patients: the mean of 3 seeds drawn with replacement is
    # 0.6 with probability 1/27 (> 2.5%), so the 95% interval is exactly [0.6, 0.8]
    c = hierarchical_contrast({"x": _arm([6, 7, 8])}, {"x": 1.0}, seed=0)
    assert c.value == pytest.approx(0.7)
    assert (c.low, c.high) == (pytest.approx(0.6), pytest.approx(0.8))
    fixed = hierarchical_contrast({"x": _arm([6, 7, 8])}, {"x": 1.0}, resample_seeds=False)
    assert fixed.low == pytest.approx(0.7) and fixed.high == pytest.approx(0.7)  # patients alone: no spread


def test_one_seed_gives_the_patient_bootstrap_interval():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(80), 3)
    y = np.repeat(rng.integers(0, 2, 80), 3)
    s = np.clip(0.5 + (y - 0.5) * 0.3 + rng.normal(0, 0.3, y.size), 0, 1)
    w = patient_weights(80, B, seed=0)[:, groups]
    arm = (weighted_metric("accuracy", y, s), weighted_metric("accuracy", y, s, w)[None])
    c = hierarchical_contrast({"x": arm}, {"x": 1.0})
    ci = bootstrap_ci(y, s, groups, n_boot=B, seed=5)["accuracy"]
    assert c.value == pytest.approx(ci["value"])
    assert c.low == pytest.approx(ci["low"], abs=0.02) and c.high == pytest.approx(ci["high"], abs=0.02)
    assert c.n_seeds == 1


def test_a_paired_difference_that_no_resample_changes_has_a_point_interval_and_a_small_p():
    c = hierarchical_contrast({"a": _arm([5, 5, 5]), "b": _arm([6, 6, 6])}, {"a": -1.0, "b": 1.0})
    assert (c.value, c.low, c.high) == (pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.1))
    assert c.p_value == pytest.approx(2 / (B + 1))
    assert c.p_below(0.05) == pytest.approx(1 / (B + 1))  # b - a <= 0.05 is rejected
    assert c.p_below(0.2) == 1.0


def test_seeds_are_paired_across_cells():
    # seed i of a and of b move together: the difference is 0.1 in every seed, so resampling
    # seeds cannot widen it, while each cell alone spans the seeds
    c = hierarchical_contrast({"a": _arm([4, 6, 8]), "b": _arm([5, 7, 9])}, {"a": -1.0, "b": 1.0})
    assert c.low == pytest.approx(0.1) and c.high == pytest.approx(0.1)


def test_interaction_is_the_difference_of_the_two_gains():
    arms = {"a": _arm([5, 5]), "b": _arm([8, 8]), "c": _arm([5, 5]), "d": _arm([6, 6])}
    c = hierarchical_contrast(arms, {"a": -1.0, "b": 1.0, "c": 1.0, "d": -1.0})
    assert c.value == pytest.approx(0.2) and c.low == pytest.approx(0.2)
    # both networks gain 0.3: each pair differs, the interaction is exactly 0
    same = {"a": _arm([5, 5]), "b": _arm([8, 8]), "c": _arm([5, 5]), "d": _arm([8, 8])}
    z = hierarchical_contrast(same, {"a": -1.0, "b": 1.0, "c": 1.0, "d": -1.0})
    assert z.value == pytest.approx(0.0) and z.p_value == 1.0


def test_hierarchical_contrast_refuses_mismatched_arms():
    with pytest.raises(ValueError, match="different cells"):
        hierarchical_contrast({"a": _arm([5])}, {"b": 1.0})
    with pytest.raises(ValueError, match="same seeds"):
        hierarchical_contrast({"a": _arm([5]), "b": _arm([5, 6])}, {"a": -1.0, "b": 1.0})


def test_min_detectable_effect_is_2_8_standard_errors():
    assert min_detectable_effect(0.01) == pytest.approx(0.028, abs=2e-4)


# ------------------------------------------------------------------------ multiplicity


def test_holm_textbook_case():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    np.testing.assert_allclose(holm(p)[:4], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm(p)[4])


def test_benjamini_hochberg_textbook_case():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    np.testing.assert_allclose(benjamini_hochberg(p)[:4], [0.02, 0.04, 0.04, 0.02])
    assert np.isnan(benjamini_hochberg(p)[4])


# ------------------------------------------------------------------------ collapsed networks


def test_collapse_reason():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(50), 2)
    y = np.tile([0, 1], 50)
    assert "every test image" in collapse_reason(y, np.full(100, 0.3), groups)
    noise = rng.random(100) * 0.49  # never above the threshold ... but not constant either
    noise[0] = 0.6  # one positive call, on a NonCOVID image: F1 0, AUC near 0.5
    assert "F1 is 0" in collapse_reason(y, noise, groups)
    learned = np.clip(y * 0.6 + rng.random(100) * 0.4, 0, 1)
    assert collapse_reason(y, learned, groups) == ""


# ------------------------------------------------------------------------ the ledger on a built folder

N_IMG = 400  # 200 patients x 2 images


def _predictions(accuracy: float, seed: int, offset: int = 0) -> pd.DataFrame:
    """Test predictions of a network with the given accuracy (a fixed share of images right)."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], N_IMG // 2)
    right = np.zeros(N_IMG, dtype=bool)
    right[rng.permutation(N_IMG)[: round(accuracy * N_IMG)]] = True
    p1 = np.where(right, np.where(y == 1, 0.8, 0.2), np.where(y == 1, 0.3, 0.7))
    cls = np.where(y == 1, "CT_COVID", "CT_NonCOVID")
    return pd.DataFrame({"model": "best_val", "path": [f"/d/{c}/{i + offset}.png" for i, c in enumerate(cls)],
                         "group": [f"p{i // 2}" for i in range(N_IMG)], "label": y, "prob_0": 1 - p1, "prob_1": p1})


def _results(tmp_path: Path, cells: dict[tuple[str, str, str], list[pd.DataFrame]], synthetic: bool = False):
    """A results folder holding ``cells``: (table, model, setting) -> one predictions frame per seed.
    Cells given the same list object share their runs (as stand-ins do)."""
    plan_cells, ids = [], {}
    for (table, model, setting), preds in cells.items():
        runs = []
        for p in preds:
            rid = ids.setdefault(id(p), f"run{len(ids)}")
            folder = tmp_path / "runs" / rid
            if not folder.exists():
                folder.mkdir(parents=True)
                p.to_csv(folder / "predictions.csv", index=False)
                (folder / "run.json").write_text(json.dumps({"status": "done"}))
                (folder / "metrics.json").write_text("{}")
            runs.append(rid)
        plan_cells.append({"table": table, "model": model, "setting": setting, "backbone": "resnet18",
                           "runs": runs})
    (tmp_path / "plan.json").write_text(json.dumps({"profile": "cpu", "cells": plan_cells, "not_run": [],
                                                    "runs": {}}))
    (tmp_path / "study.json").write_text(json.dumps({"profile": "cpu", "synthetic": synthetic}))
    return book.Results(tmp_path)


def _spec(*lines: dict) -> pd.DataFrame:
    base = {"paper": "B", "statement": "test", "kind": "superiority", "margin": np.nan, "model_c": "",
            "setting_c": "", "model_d": "", "setting_d": "", "metric": "accuracy"}
    return pd.DataFrame([{**base, **line} for line in lines])


def _line(cid, table, a, b, **kw) -> dict:
    return {"id": cid, "table": table, "model_a": a[0], "setting_a": a[1], "model_b": b[0], "setting_b": b[1], **kw}


def _seeds(acc: float, n: int = 3, offset: int = 0) -> list[pd.DataFrame]:
    return [_predictions(acc, seed=s, offset=offset) for s in range(n)]


def test_ledger_verdicts_follow_the_rules(tmp_path):
    m1, m2, m4 = _seeds(0.60), _seeds(0.85), _seeds(0.85)
    res = _results(tmp_path, {("B6", "ResNet-50", "Method 1"): m1, ("B6", "ResNet-50", "Method 2"): m2,
                              ("B6", "ResNet-50", "Method 4"): m4,
                              ("B6", "ResNet-50", "Method 3"): _seeds(0.95)})
    spec = _spec(_line("up", "B6", ("ResNet-50", "Method 1"), ("ResNet-50", "Method 2")),
                 _line("down", "B6", ("ResNet-50", "Method 2"), ("ResNet-50", "Method 1")),
                 _line("ni", "B6", ("ResNet-50", "Method 4"), ("ResNet-50", "Method 2"), kind="non-inferiority",
                       margin=0.05),
                 _line("ni-bad", "B6", ("ResNet-50", "Method 3"), ("ResNet-50", "Method 2"),
                       kind="non-inferiority", margin=0.05))
    led = book.claims(res, spec=spec).set_index("claim")
    assert led.loc["up", "verdict"].startswith("reproduced")
    assert led.loc["down", "verdict"] == "contradicted"
    assert led.loc["ni", "verdict"] == "reproduced"  # equal accuracy, tight interval: not worse by 5 points
    assert led.loc["ni-bad", "verdict"] == "contradicted"  # Method 3 clearly better than Method 2
    assert (led["p (Holm)"] >= led["p"]).all()
    assert led.loc["up", "paper effect"] == "+14.0"  # the paper's Table VI: 0.83 - 0.69
    assert led.loc["up", "MDE"] != ""


def test_within_noise_and_excluding_the_papers_effect(tmp_path):
    res = _results(tmp_path, {("B6", "ResNet-50", "Method 1"): _seeds(0.80),
                              ("B6", "ResNet-50", "Method 2"): _seeds(0.80)})
    spec = _spec(_line("flat", "B6", ("ResNet-50", "Method 1"), ("ResNet-50", "Method 2")))
    led = book.claims(res, spec=spec).set_index("claim")
    # a difference near 0 with an interval of a few points excludes the paper's +14 points
    assert led.loc["flat", "verdict"] == "contradicted (excludes the paper's effect)"
    # independent networks 2 points apart on 400 images: the interval holds 0; no paper number to exclude
    noisy = _results(tmp_path / "noisy", {("B6", "X", "Method 1"): [_predictions(0.80, seed=1)],
                                          ("B6", "X", "Method 2"): [_predictions(0.82, seed=2)]})
    row = book.claims(noisy, spec=_spec(_line("n", "B6", ("X", "Method 1"), ("X", "Method 2")))).iloc[0]
    assert row["paper effect"] == "" and row.verdict == "within noise"


def test_no_verdict_from_a_network_that_did_not_learn(tmp_path):
    dead = _seeds(0.5)
    for p in dead:
        p["prob_1"], p["prob_0"] = 0.1, 0.9  # NonCOVID for every image
    res = _results(tmp_path, {("B6", "ResNet-50", "Method 1"): dead, ("B6", "ResNet-50", "Method 2"): _seeds(0.9)})
    spec = _spec(_line("x", "B6", ("ResNet-50", "Method 1"), ("ResNet-50", "Method 2")))
    row = book.claims(res, spec=spec).iloc[0]
    assert row.verdict == "no verdict: a network did not learn" and "every test image" in row.note
    assert np.isnan(row.p)
    table = book.comparison("B6", res).droplevel("model")
    assert table.loc["Method 1", "learned"].startswith("no:") and table.loc["Method 2", "learned"] == "yes"


def test_no_verdict_from_a_network_no_better_than_chance(tmp_path):
    """B7's frozen network: both classes predicted and F1 above 0, yet AUC at chance over its seeds.
    The per-seed collapse rule lets it through; the cell's AUC interval does not."""
    guess = _seeds(0.5)
    for i, p in enumerate(guess):
        p["prob_1"] = np.random.default_rng(i).random(len(p))  # scores unrelated to the labels
        p["prob_0"] = 1 - p["prob_1"]
        assert collapse_reason(p.label.to_numpy(), p.prob_1.to_numpy(), p.group.to_numpy()) == ""
    res = _results(tmp_path, {("B6", "ResNet-50", "Method 1"): guess, ("B6", "ResNet-50", "Method 2"): _seeds(0.9)})
    row = book.claims(res, spec=_spec(_line("x", "B6", ("ResNet-50", "Method 1"), ("ResNet-50", "Method 2")))).iloc[0]
    assert row.verdict == "no verdict: a network did not learn"
    assert "Method 1: no better than chance: test AUC" in row.note and "Method 2" not in row.note
    table = book.comparison("B6", res).droplevel("model")
    assert table.loc["Method 1", "learned"].startswith("no: no better than chance")
    assert table.loc["Method 2", "learned"] == "yes"


def test_every_ledger_line_of_a_table_is_on_its_page(tmp_path):
    """B6's "Method 2 vs 1" once fell off its page when Method 1 learned nothing: a line without a
    verdict is still one of the table's lines, and the lines without runs share one line."""
    dead = _seeds(0.5)
    for p in dead:
        p["prob_1"], p["prob_0"] = 0.1, 0.9  # NonCOVID for every image
    _results(tmp_path, {("B6", "ResNet-50", "Method 1"): dead, ("B6", "ResNet-50", "Method 2"): _seeds(0.9)})
    shown, not_run = book.TablePage("B6", root=tmp_path).tests().parts
    assert list(shown.data.index) == ["B6-01"]
    assert shown.data.loc["B6-01", "verdict"] == "no verdict: a network did not learn"
    assert "B6-02 to B6-12" in not_run.data and "not run at the cpu profile" in not_run.data
    ledger = book.claims(book.complete_results(tmp_path))
    statements = [p.data for p in book.claims_by_statement(ledger).parts if "> " in getattr(p, "data", "")]
    assert len(statements) == ledger.statement.nunique()  # each quotation once


def test_stand_ins_and_repeated_comparisons_are_one_test(tmp_path):
    rand, trans = _seeds(0.6), _seeds(0.8)
    res = _results(tmp_path, {("B3", "ResNet-18", "Rand."): rand, ("B3", "ResNet-50", "Rand."): rand,
                              ("B3", "ResNet-18", "Trans."): trans, ("B3", "ResNet-50", "Trans."): trans})
    spec = _spec(_line("same", "B3", ("ResNet-18", "Rand."), ("ResNet-50", "Rand.")),
                 _line("r18", "B3", ("ResNet-18", "Rand."), ("ResNet-18", "Trans.")),
                 _line("r50", "B3", ("ResNet-50", "Rand."), ("ResNet-50", "Trans.")))
    led = book.claims(res, spec=spec).set_index("claim")
    assert led.loc["same", "verdict"] == "not testable"
    assert "same runs as r18" in led.loc["r50", "note"]
    assert led.loc["r50", "verdict"] == led.loc["r18", "verdict"]
    # one test in the family: Holm leaves a lone p-value as it is
    assert led.loc["r18", "p (Holm)"] == pytest.approx(led.loc["r18", "p"])


def test_runs_on_different_test_images_are_not_paired(tmp_path):
    res = _results(tmp_path, {("B6", "ResNet-50", "Method 1"): _seeds(0.6),
                              ("B6", "ResNet-50", "Method 2"): _seeds(0.9, offset=1000)})
    spec = _spec(_line("x", "B6", ("ResNet-50", "Method 1"), ("ResNet-50", "Method 2")))
    assert book.claims(res, spec=spec).verdict.iloc[0] == "not comparable"


def test_synthetic_results_read_pipeline_check(tmp_path):
    res = _results(tmp_path, {("B6", "ResNet-50", "Method 1"): _seeds(0.6),
                              ("B6", "ResNet-50", "Method 2"): _seeds(0.9)}, synthetic=True)
    spec = _spec(_line("x", "B6", ("ResNet-50", "Method 1"), ("ResNet-50", "Method 2")))
    row = book.claims(res, spec=spec).iloc[0]
    assert row.verdict == "pipeline check" and "rule reads: reproduced" in row.note


def test_interaction_claim_in_the_ledger(tmp_path):
    res = _results(tmp_path, {("A4", "R-50 Baseline", "w/o TL"): _seeds(0.70),
                              ("A4", "R-50 Baseline", "w TL"): _seeds(0.72, offset=0),
                              ("A4", "R-50 5 ATTNs", "w/o TL"): _seeds(0.70),
                              ("A4", "R-50 5 ATTNs", "w TL"): _seeds(0.90)})
    claims = book.load_claims()
    line = claims[(claims.kind == "interaction") & (claims.model_a == "R-50 5 ATTNs")
                  & (claims.metric == "accuracy")].head(1)
    row = book.claims(res, spec=line).iloc[0]
    assert row.verdict.startswith("reproduced")
    assert row["paper effect"] == "+4.7"  # Table 4: (93.9 - 84.7) - (88.2 - 83.7)


def test_near_duplicate_test_images_are_left_out(tmp_path):
    res = _results(tmp_path, {("B6", "ResNet-50", "Method 1"): _seeds(0.6)})
    cell = res.cells("B6")[0]
    some = res.predictions(cell["runs"][0]).path.head(10).tolist()
    full = book.cell_value(res, cell, "accuracy")
    fewer = res.evidence(exclude=frozenset(some))
    assert len(fewer.predictions(cell["runs"][0])) == N_IMG - 10
    assert book.cell_value(res, cell, "accuracy", exclude=frozenset(some))["mean"] != pytest.approx(full["mean"])


def test_why_a_row_did_not_run_names_the_row(tmp_path):
    from covtl.book.claims import _why_not_run

    _results(tmp_path, {("B3", "ResNet-18", "Rand."): _seeds(0.6)})
    plan = json.loads((tmp_path / "plan.json").read_text())
    plan["not_run"] = [{"table": "B3", "model": "VGG-16", "why": "VGG-16 is not run at the cpu profile"}]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    spec = _spec(_line("vgg", "B3", ("VGG-16", "Rand."), ("VGG-16", "Trans.")),
                 _line("mix", "B3", ("ResNet-18", "Rand."), ("VGG-16", "Rand.")))
    led = book.claims(book.Results(tmp_path), spec=spec).set_index("claim")
    assert (led.verdict == "not run at the cpu profile").all()
    assert led.loc["vgg", "note"] == "VGG-16 is not run at the cpu profile"  # once, though both arms lack it
    assert led.loc["mix", "note"] == "VGG-16 is not run at the cpu profile"

    not_run = [{"table": "A3", "model": "R-50 1 ATTN", "why": "budget"},
               {"table": "A3", "model": "R-50 5 ATTNs (controlled rows)", "why": "budget of the controls"},
               {"table": "A3", "model": "R-101 Baseline", "why": "R-101 is not run"}]
    assert _why_not_run(not_run, "R-50 1 ATTN", "w MoCo") == "budget"
    assert _why_not_run(not_run, "R-50 5 ATTNs", "w MoCo (controlled)") == "budget of the controls"
    assert _why_not_run(not_run, "R-50 5 ATTNs", "w MoCo") == ""  # that row ran
    assert _why_not_run(not_run, "R-101 Baseline", "w Ours") == "R-101 is not run"
