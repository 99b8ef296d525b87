"""Evaluation with honest uncertainty (STUDY.md, decisions 1-3).

- :func:`binary_metrics`: accuracy, precision, recall, F1 and AUC with **COVID (label 1) as
  the positive class**; ``positive=0`` gives the NonCOVID-positive variant that the official
  Self-Trans code reports, for reconciliation with published numbers.
- :func:`bootstrap_ci`: 95% intervals by resampling **patients** (clusters), not images, of
  the test set, because slices of one patient are not independent.
- :func:`aggregate_seeds`: mean, sd and a t interval over seeds.
- :func:`paired_bootstrap` and :func:`delong_test`: two models scored on the same test set.

Glossary: y = true labels (0/1), s = score P(label 1), g = group (patient) ids, B = number of
bootstrap resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

__all__ = [
    "METRICS",
    "aggregate_seeds",
    "auc_score",
    "binary_metrics",
    "bootstrap_ci",
    "delong_test",
    "paired_bootstrap",
]

METRICS = ("accuracy", "precision", "recall", "f1", "auc")


def _check(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(y), np.asarray(s, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-d of one length, got {y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got {sorted(set(y.tolist()))[:5]}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    return y.astype(int), s


def auc_score(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve = P(s_pos > s_neg) + P(tie)/2 (Mann-Whitney); NaN if one class."""
    y, s = _check(y, s)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(s)  # average ranks handle ties
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _confusion_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall, F1 of 0/1 predictions (class 1 positive); NaN when undefined."""
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    return {
        "accuracy": float((pred == y).mean()),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"),
    }


def _oriented(y, s, threshold: float, positive: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, predictions, scores) with ``positive`` as class 1."""
    y, s = _check(y, s)
    if positive not in (0, 1):
        raise ValueError(f"positive must be 0 or 1, got {positive}")
    pred = (s >= threshold).astype(int)
    return (y, pred, s) if positive == 1 else (1 - y, 1 - pred, 1 - s)


def binary_metrics(y, s, *, threshold: float = 0.5, positive: int = 1) -> dict[str, float]:
    """Accuracy, precision, recall, F1, AUC of scores ``s`` = P(label 1) against labels ``y``.

    Args:
        positive: the class treated as positive; 1 = COVID (the study's choice), 0 =
            NonCOVID (what the official Self-Trans code computes).

    Precision (F1) is NaN when nothing is predicted positive (no positives and no
    predictions), never a silent 0.
    """
    y, pred, s = _oriented(y, s, threshold, positive)
    return {**_confusion_metrics(y, pred), "auc": auc_score(y, s)}


def _cluster_indices(groups: Sequence) -> list[np.ndarray]:
    _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.cumsum(np.bincount(inverse))[:-1])


def _resample(clusters: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    picks = rng.integers(0, len(clusters), len(clusters))
    return np.concatenate([clusters[i] for i in picks])


def bootstrap_ci(
    y,
    s,
    groups,
    *,
    metric: Callable[..., dict[str, float]] = binary_metrics,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    **metric_kwargs,
) -> dict[str, dict[str, float]]:
    """Point estimate and percentile interval of every metric, resampling patients.

    Each of ``n_boot`` resamples draws as many patients as the test set has, with
    replacement, and takes all images of each drawn patient. Resamples where a metric is
    undefined (e.g. one class only, for AUC) are left out of that metric's interval.

    Returns:
        ``{metric: {"value", "low", "high", "n_boot"}}``.
    """
    y, s = _check(y, s)
    clusters = _cluster_indices(groups)
    if len(np.asarray(groups)) != len(y):
        raise ValueError(f"{len(np.asarray(groups))} group ids for {len(y)} labels")
    rng = np.random.default_rng(seed)
    point = metric(y, s, **metric_kwargs)
    draws = {k: [] for k in point}
    for _ in range(n_boot):
        idx = _resample(clusters, rng)
        for k, v in metric(y[idx], s[idx], **metric_kwargs).items():
            draws[k].append(v)
    alpha = (1 - level) / 2
    out = {}
    for k, v in point.items():
        d = np.asarray(draws[k], dtype=float)
        d = d[np.isfinite(d)]
        low, high = (np.quantile(d, [alpha, 1 - alpha]) if d.size else (np.nan, np.nan))
        out[k] = {"value": float(v), "low": float(low), "high": float(high), "n_boot": int(d.size)}
    return out


def aggregate_seeds(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean, sample sd and a t interval for the mean over seeds (sd and interval NaN for n=1)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("no values to aggregate")
    mean = float(v.mean())
    if v.size == 1:
        return {"mean": mean, "sd": float("nan"), "low": float("nan"), "high": float("nan"), "n": 1}
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, v.size - 1) * sd / np.sqrt(v.size))
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "n": int(v.size)}


def paired_bootstrap(
    y,
    s_a,
    s_b,
    groups,
    *,
    metric_name: str = "accuracy",
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    **metric_kwargs,
) -> dict[str, float]:
    """Difference (b - a) of one metric for two models on the same patients, with its interval.

    Both models are scored on the same resampled patients in every draw. The two-sided
    p-value is ``2 * min(P(diff <= 0), P(diff >= 0))`` over the draws (at least 1/B).
    """
    y, s_a = _check(y, s_a)
    _, s_b = _check(y, s_b)
    clusters = _cluster_indices(groups)
    rng = np.random.default_rng(seed)

    threshold, positive = metric_kwargs.get("threshold", 0.5), metric_kwargs.get("positive", 1)
    if metric_name not in METRICS:
        raise ValueError(f"unknown metric {metric_name!r}; choose one of {', '.join(METRICS)}")
    ya, pa, sa = _oriented(y, s_a, threshold, positive)
    _, pb, sb = _oriented(y, s_b, threshold, positive)

    def one(idx, pred, score):  # only the compared metric: AUC's ranking is the costly one
        if metric_name == "auc":
            return auc_score(ya[idx], score[idx])
        return _confusion_metrics(ya[idx], pred[idx])[metric_name]

    def diff(idx):
        return one(idx, pb, sb) - one(idx, pa, sa)

    point = diff(np.arange(len(y)))
    d = np.array([diff(_resample(clusters, rng)) for _ in range(n_boot)])
    d = d[np.isfinite(d)]
    alpha = (1 - level) / 2
    p = min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))
    return {
        "metric": metric_name,
        "diff": float(point),
        "low": float(np.quantile(d, alpha)),
        "high": float(np.quantile(d, 1 - alpha)),
        "p_value": float(max(p, 1 / len(d))),
        "n_boot": int(d.size),
    }


def _placements(y: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """DeLong's structural components: AUC, V10 (per positive) and V01 (per negative)."""
    pos, neg = s[y == 1], s[y == 0]
    cmp = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # m x n
    return float(cmp.mean()), cmp.mean(axis=1), cmp.mean(axis=0)


def delong_test(y, s_a, s_b) -> dict[str, float]:
    """DeLong et al. (1988) test of two correlated AUCs on the same images.

    Returns the two AUCs, their difference (b - a), its standard error, z and the two-sided
    p-value. Images are treated as independent here (DeLong's assumption); the
    patient-level alternative is :func:`paired_bootstrap` with ``metric_name="auc"``.
    """
    y, s_a = _check(y, s_a)
    _, s_b = _check(y, s_b)
    m, n = int(y.sum()), int((1 - y).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positives and 2 negatives, got {m} and {n}")
    auc_a, v10_a, v01_a = _placements(y, s_a)
    auc_b, v10_b, v01_b = _placements(y, s_b)
    s10 = np.cov(np.vstack([v10_a, v10_b]))  # 2 x 2
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    cov = s10 / m + s01 / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = auc_b - auc_a
    if var <= 0:
        z, p = (0.0, 1.0) if diff == 0 else (float("inf") * np.sign(diff), 0.0)
    else:
        z = diff / np.sqrt(var)
        p = float(2 * stats.norm.sf(abs(z)))
    return {
        "auc_a": auc_a, "auc_b": auc_b, "diff": diff,
        "se": float(np.sqrt(max(var, 0.0))), "z": float(z), "p_value": float(p),
    }
