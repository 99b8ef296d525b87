"""Metrics against hand-computed cases, closed forms and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from covtl.metrics import aggregate_seeds, binary_metrics, bootstrap_ci, delong_test, paired_bootstrap

Y = np.array([1, 1, 0, 0, 1])
S = np.array([0.9, 0.4, 0.6, 0.1, 0.8])


def test_hand_computed_case_covid_positive():
    m = binary_metrics(Y, S)
    # predictions 1,0,1,0,1 -> TP 2, FP 1, FN 1, TN 1
    assert m == pytest.approx(
        {"accuracy": 3 / 5, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "auc": 5 / 6}
    )


def test_noncovid_positive_variant_swaps_the_roles():
    m = binary_metrics(Y, S, positive=0)
    # NonCOVID positive: TP = true negatives above = 1, FP = 1 (missed COVID), FN = 1
    assert m == pytest.approx(
        {"accuracy": 3 / 5, "precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "auc": 5 / 6}
    )


@pytest.mark.parametrize("positive", [0, 1])
def test_agrees_with_scikit_learn(positive):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.clip(y * 0.3 + rng.normal(0.35, 0.25, 300), 0, 1).round(2)  # ties included
    pred = (s >= 0.5).astype(int)
    m = binary_metrics(y, s, positive=positive)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, pos_label=positive))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred, pos_label=positive))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, pos_label=positive))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y == positive, s if positive else 1 - s))


def test_undefined_metrics_are_nan_not_zero():
    m = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(m["precision"]) and math.isnan(m["recall"]) and math.isnan(m["auc"])
    assert m["accuracy"] == 1.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        binary_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="one length"):
        binary_metrics([0, 1], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics([0, 1], [0.1, float("nan")])


def test_bootstrap_resamples_patients_not_images():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    s = np.clip(y * 0.4 + rng.normal(0.3, 0.25, 40), 0, 1)
    # each patient contributes 5 identical slices: resampling patients of the copied set is
    # resampling images of the original set, draw for draw
    y5, s5, g5 = np.repeat(y, 5), np.repeat(s, 5), np.repeat(np.arange(40), 5)
    once = bootstrap_ci(y, s, np.arange(40), n_boot=200, seed=3)
    copied = bootstrap_ci(y5, s5, g5, n_boot=200, seed=3)
    for k in ("accuracy", "recall", "auc"):
        assert copied[k]["low"] == pytest.approx(once[k]["low"])
        assert copied[k]["high"] == pytest.approx(once[k]["high"])
    # treating the 200 slices as independent would give a much narrower (wrong) interval
    naive = bootstrap_ci(y5, s5, np.arange(200), n_boot=200, seed=3)
    assert naive["accuracy"]["high"] - naive["accuracy"]["low"] < 0.7 * (
        copied["accuracy"]["high"] - copied["accuracy"]["low"]
    )
    assert once["accuracy"]["low"] <= once["accuracy"]["value"] <= once["accuracy"]["high"]


def test_bootstrap_of_a_perfect_model_is_degenerate():
    y = np.array([0, 1] * 10)
    ci = bootstrap_ci(y, y.astype(float), np.arange(20), n_boot=100)
    assert ci["accuracy"] == {"value": 1.0, "low": 1.0, "high": 1.0, "n_boot": 100}


def test_aggregate_seeds_closed_form():
    agg = aggregate_seeds([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n), sd = 1
    assert agg == pytest.approx({"mean": 2.0, "sd": 1.0, "low": 2 - half, "high": 2 + half, "n": 3})
    assert math.isnan(aggregate_seeds([0.8])["sd"])


def test_paired_bootstrap_identical_models_and_a_clear_winner():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100)
    weak = rng.uniform(0, 1, 100)
    same = paired_bootstrap(y, weak, weak, np.arange(100), n_boot=300)
    assert same["diff"] == 0 and same["p_value"] == 1.0
    strong = np.where(y == 1, 0.9, 0.1)
    win = paired_bootstrap(y, weak, strong, np.arange(100), n_boot=300)
    assert win["diff"] > 0.3 and win["low"] > 0 and win["p_value"] < 0.01


def slow_delong(y, s_a, s_b):
    """DeLong et al. 1988 written out with loops: V10, V01 per model, then the covariance."""
    pos = [i for i in range(len(y)) if y[i] == 1]
    neg = [i for i in range(len(y)) if y[i] == 0]

    def psi(x, z):
        return 1.0 if x > z else 0.5 if x == z else 0.0

    comps = []
    for s in (s_a, s_b):
        v10 = [sum(psi(s[i], s[j]) for j in neg) / len(neg) for i in pos]
        v01 = [sum(psi(s[i], s[j]) for i in pos) / len(pos) for j in neg]
        comps.append((sum(v10) / len(v10), v10, v01))

    def cov(a, b):
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        return sum((x - ma) * (z - mb) for x, z in zip(a, b, strict=True)) / (len(a) - 1)

    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = comps
    var = (cov(v10a, v10a) + cov(v10b, v10b) - 2 * cov(v10a, v10b)) / len(pos) + (
        cov(v01a, v01a) + cov(v01b, v01b) - 2 * cov(v01a, v01b)
    ) / len(neg)
    return auc_a, auc_b, var


def test_delong_matches_the_slow_formula():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 30)
    s_a = (y * 0.5 + rng.normal(0, 0.5, 30)).round(1)
    s_b = (y * 0.8 + rng.normal(0, 0.5, 30)).round(1)
    out = delong_test(y, s_a, s_b)
    auc_a, auc_b, var = slow_delong(y, s_a, s_b)
    assert out["auc_a"] == pytest.approx(auc_a) and out["auc_b"] == pytest.approx(auc_b)
    assert out["auc_a"] == pytest.approx(skm.roc_auc_score(y, s_a))
    assert out["se"] == pytest.approx(math.sqrt(var))
    assert out["z"] == pytest.approx((auc_b - auc_a) / math.sqrt(var))
    same = delong_test(y, s_a, s_a)
    assert same["diff"] == 0 and same["p_value"] == 1.0


def test_vectorised_patient_bootstrap_equals_the_loop_over_resamples():
    """bootstrap_ci's vectorised path (binary_metrics) draws the same patients as the loop a custom
    metric takes, so both give the same intervals."""
    rng = np.random.default_rng(4)
    y, s, g = rng.integers(0, 2, 150), rng.random(150), rng.integers(0, 60, 150)
    fast = bootstrap_ci(y, s, g, n_boot=300, seed=7)
    slow = bootstrap_ci(y, s, g, n_boot=300, seed=7, metric=lambda a, b: binary_metrics(a, b))
    for metric, ci in fast.items():
        for key in ("value", "low", "high", "n_boot"):
            assert ci[key] == pytest.approx(slow[metric][key], abs=1e-12), (metric, key)
