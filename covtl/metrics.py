"""Evaluation with honest uncertainty (STUDY.md, decisions 1-3).

- :func:`binary_metrics`: accuracy, precision, recall, F1 and AUC with **COVID (label 1) as
  the positive class**; ``positive=0`` gives the NonCOVID-positive variant that the official
  Self-Trans code reports, for reconciliation with published numbers.
- :func:`bootstrap_ci`: 95% intervals by resampling **patients** (clusters), not images, of
  the test set, because slices of one patient are not independent.
- :func:`aggregate_seeds`: mean, sd and a t interval over seeds.
- :func:`paired_bootstrap` and :func:`delong_test`: two models scored on the same test set.
- :func:`patient_weights`, :func:`weighted_metric`, :func:`hierarchical_contrast`: the
  hierarchical bootstrap behind every interval and verdict of the book -- resample seeds, then
  patients of the shared test set, and score any linear contrast of cells (one cell, a paired
  difference, a difference of differences) on the same draws.
- :func:`holm` and :func:`benjamini_hochberg`: multiplicity adjustment across a family of tests;
  :func:`min_detectable_effect`: the smallest effect a test of given standard error detects.
- :func:`collapse_reason`: why a network counts as having learned nothing (or ``""``).

Glossary: y = true labels (0/1), s = score P(label 1), g = group (patient) ids, B = number of
bootstrap resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "METRICS",
    "Contrast",
    "aggregate_seeds",
    "auc_score",
    "benjamini_hochberg",
    "binary_metrics",
    "bootstrap_ci",
    "collapse_reason",
    "delong_test",
    "hierarchical_contrast",
    "holm",
    "min_detectable_effect",
    "paired_bootstrap",
    "patient_weights",
    "weighted_metric",
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
    if len(np.asarray(groups)) != len(y):
        raise ValueError(f"{len(np.asarray(groups))} group ids for {len(y)} labels")
    rng = np.random.default_rng(seed)
    point = metric(y, s, **metric_kwargs)
    if metric is binary_metrics:  # vectorised: the same resamples, as patient multiplicities
        _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        n_clusters = int(inverse.max()) + 1
        picks = rng.integers(0, n_clusters, (n_boot, n_clusters))  # the draws _resample makes, in order
        counts = np.bincount((picks + n_clusters * np.arange(n_boot)[:, None]).ravel(),
                             minlength=n_boot * n_clusters).reshape(n_boot, n_clusters)
        w = counts[:, inverse].astype(float)
        draws = {k: weighted_metric(k, y, s, w, **metric_kwargs) for k in point}
    else:
        clusters = _cluster_indices(groups)
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


# ---------------------------------------------------------------------------- hierarchical bootstrap


def patient_weights(n_patients: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """``n_boot`` x ``n_patients`` multiplicities of a patient bootstrap (row ``b``: how often each
    patient is drawn in resample ``b``; every row sums to ``n_patients``).

    Weighting every image by its patient's multiplicity is the same as concatenating the drawn
    patients' images, so :func:`weighted_metric` on these weights equals the metric of the
    resampled test set, without building it.
    """
    if n_patients < 1 or n_boot < 1:
        raise ValueError(f"need at least one patient and one resample, got {n_patients} and {n_boot}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=n_boot).astype(float)


def _weighted_auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC (ties count one half) of every row of image weights ``w`` (B x n)."""
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted, w = s[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # one block per distinct score
    pos = np.add.reduceat(w * (y_sorted == 1), starts, axis=1)  # B x levels
    neg = np.add.reduceat(w * (y_sorted == 0), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)


def weighted_metric(metric: str, y, s, w: np.ndarray | None = None, *, threshold: float = 0.5,
                    positive: int = 1) -> np.ndarray:
    """One metric of scores ``s`` against labels ``y`` for every row of image weights ``w`` (B x n).

    ``w=None`` is one row of ones (the plain metric). Rows where the metric is undefined
    (AUC with one class; precision/F1 with nothing predicted positive) are NaN, as in
    :func:`binary_metrics`, whose values this reproduces for integer weights.
    """
    y, pred, s = _oriented(y, s, threshold, positive)
    w = np.ones((1, y.size)) if w is None else np.atleast_2d(np.asarray(w, dtype=float))
    if w.shape[1] != y.size:
        raise ValueError(f"weights have {w.shape[1]} columns for {y.size} images")
    if metric == "auc":
        return _weighted_auc(y, s, w)
    tp = w @ ((pred == 1) & (y == 1))
    fp = w @ ((pred == 1) & (y == 0))
    fn = w @ ((pred == 0) & (y == 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "accuracy":
            return (w @ (pred == y)) / w.sum(axis=1)
        if metric == "precision":
            return np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        if metric == "recall":
            return np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        if metric == "f1":
            return np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


#: z_(1 - alpha/2) + z_(power) for a two-sided 5% test with 80% power
_MDE_FACTOR = float(stats.norm.ppf(0.975) + stats.norm.ppf(0.8))


def min_detectable_effect(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true effect a two-sided level-``alpha`` test with standard error ``se``
    detects with probability ``power`` (normal approximation: (z_(1-alpha/2) + z_power) * se)."""
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se)


@dataclass(frozen=True)
class Contrast:
    """A contrast of cells with its hierarchical-bootstrap distribution.

    ``value`` is the contrast of the seed means on the whole test set; ``low``/``high`` the
    percentile interval; ``se`` the bootstrap standard deviation; ``p_value`` the two-sided
    bootstrap p-value against 0 (at least 2/(B+1)); ``mde`` the minimum detectable effect
    (:func:`min_detectable_effect`); ``draws`` the B bootstrap values (NaN-free).
    """

    value: float
    low: float
    high: float
    se: float
    p_value: float
    mde: float
    n_seeds: int
    n_boot: int
    draws: np.ndarray

    def p_below(self, bound: float) -> float:
        """One-sided bootstrap p-value of H0: contrast <= ``bound`` (small when the draws sit above it)."""
        return float((1 + (self.draws <= bound).sum()) / (1 + self.draws.size))

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("value", "low", "high", "se", "p_value", "mde", "n_seeds", "n_boot")}


def hierarchical_contrast(
    arms: Mapping[str, tuple[np.ndarray, np.ndarray]],
    weights: Mapping[str, float],
    *,
    level: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = True,
) -> Contrast:
    """The hierarchical bootstrap of a linear contrast of cells: seeds, then test patients.

    Args:
        arms: cell name -> (``point``, ``draws``): ``point`` is the metric of each seed's network
            on the whole test set (length k, the seeds), ``draws`` the same metric on each
            patient resample (k x B, the **same** B patient resamples for every arm and seed:
            build them with :func:`patient_weights` and :func:`weighted_metric`). Seed i of one
            arm is paired with seed i of every other (the same fine-tuning seed).
        weights: cell name -> coefficient: ``{"a": -1, "b": 1}`` for b - a, ``{"x": 1}`` for one
            cell, ``{"a": -1, "b": 1, "c": 1, "d": -1}`` for the interaction (b - a) - (d - c).
        resample_seeds: draw the k seeds with replacement in every resample (so the interval
            covers seed-to-seed variation as well as the test sample); with one seed only the
            patients vary.

    In resample b the seeds j_1..j_k are drawn once and used for every arm, and the contrast
    is sum_arm weight * mean_i draws[arm][j_i, b].
    """
    if set(arms) != set(weights):
        raise ValueError(f"arms {sorted(arms)} and weights {sorted(weights)} name different cells")
    shapes = {name: np.asarray(d).shape for name, (_, d) in arms.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"every arm needs the same seeds and resamples (k x B), got {shapes}")
    k, n_boot = next(iter(shapes.values()))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, k, (n_boot, k)) if (resample_seeds and k > 1) else np.tile(np.arange(k), (n_boot, 1))
    cols = np.arange(n_boot)[:, None]
    value, draws = 0.0, np.zeros(n_boot)
    for name, w in weights.items():
        point, d = np.asarray(arms[name][0], dtype=float), np.asarray(arms[name][1], dtype=float)
        if point.shape != (k,):
            raise ValueError(f"arm {name!r}: {point.shape} point values for {k} seeds")
        value += w * float(point.mean())
        draws = draws + w * d[picks, cols].mean(axis=1)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        nan = float("nan")
        return Contrast(value, nan, nan, nan, nan, nan, k, 0, draws)
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    se = float(draws.std(ddof=1)) if draws.size > 1 else float("nan")
    tail = min((draws <= 0).sum(), (draws >= 0).sum())
    p = min(1.0, 2 * (1 + tail) / (1 + draws.size))
    return Contrast(float(value), float(low), float(high), se, float(p), min_detectable_effect(se), k,
                    int(draws.size), draws)


def _ranked(p_values: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p as floats, an all-NaN output, the indices of the finite p-values in ascending order)."""
    p = np.asarray(p_values, dtype=float)
    ok = np.flatnonzero(np.isfinite(p))
    return p, np.full(p.shape, np.nan), ok[np.argsort(p[ok], kind="stable")]


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error); NaN entries stay NaN and are not counted."""
    p, out, order = _ranked(p_values)
    m = order.size
    if m:
        out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg q-values (false discovery rate); NaN entries stay NaN and are not counted."""
    p, out, order = _ranked(p_values)
    m = order.size
    if m:
        q = p[order] * m / np.arange(1, m + 1)
        out[order] = np.minimum(1.0, np.minimum.accumulate(q[::-1])[::-1])
    return out


def collapse_reason(y, s, groups, *, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0) -> str:
    """Why a network's test predictions show it learned nothing, or ``""`` if they do not.

    Collapsed: it predicts one class for every test image, or its F1 (COVID positive) is 0 while
    the patient-bootstrap 95% interval of its AUC contains 0.5.
    """
    y, s = _check(y, s)
    pred = (s >= threshold).astype(int)
    if np.unique(pred).size == 1:
        return f"predicts {'COVID' if pred[0] == 1 else 'NonCOVID'} for every test image"
    f1 = weighted_metric("f1", y, s, threshold=threshold)[0]
    if f1 == 0:
        _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        w = patient_weights(int(inverse.max()) + 1, n_boot, seed)[:, inverse]
        aucs = weighted_metric("auc", y, s, w)
        aucs = aucs[np.isfinite(aucs)]
        low, high = np.quantile(aucs, [0.025, 0.975]) if aucs.size else (0.0, 1.0)
        if low <= 0.5 <= high:
            return f"F1 is 0 and the AUC interval [{low:.2f}, {high:.2f}] contains 0.5"
    return ""
