"""Transferability scores: how well a source model should transfer, without finetuning it.

Paper A (Liu & Ji 2021, sec. 5.5, eq. (7); Table 6, Fig. 3) ranks its pretraining stages by
LEEP; STUDY.md decision 5 fixes how: the source model's *own* head, the target *train* split,
and never NaN. LogME, NCE and H-score are computed beside it as cross-checks.

Each score is a pure function, numpy in, float out (after TLlib's ``tllib/ranking``):

- :func:`leep`: Nguyen et al. 2020, from source-head probabilities (higher = better, <= 0);
- :func:`logme`: You et al. 2021, from penultimate features (higher = better);
- :func:`nce`: Tran et al. 2019, from source-head hard predictions (higher = better, <= 0);
- :func:`h_score`: Bao et al. 2019, from penultimate features (higher = better, >= 0);
  ``shrinkage=True`` is the shrinkage-based H-score of Ibrahim et al. 2022 ("Newer is not
  always better: rethinking transferability metrics", ICLR 2023), which stays informative when
  D >= N, where the plain estimate always equals its maximum Y - 1 (any labelling of N points is
  linearly separable in D >= N - 1 dimensions). With ResNet features (D = 512 or 2048) on
  COVID19-CT's 425 training images that is the case the book meets.

:func:`collect` runs a model over a target loader once; :func:`transferability_scores`
computes all four from what it collected.

Glossary: N = number of target samples, Z = number of source classes, Y = number of target
classes (``max(label) + 1``), D = feature dimension, theta(x) = source-head softmax (N x Z).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["collect", "h_score", "leep", "logme", "nce", "transferability_scores"]

#: tolerance on the row sums of probability matrices (float32 softmax rounds to ~1e-7)
PROB_ATOL = 1e-4


def _check_labels(labels: Any, n: int | None = None, name: str = "target_labels") -> np.ndarray:
    """Labels as an int64 vector of class indices 0..Y-1 (integer-valued floats are accepted)."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-d (N,), got shape {y.shape}")
    if n is not None and len(y) != n:
        raise ValueError(f"{name} has {len(y)} entries but there are {n} samples")
    if len(y) == 0:
        raise ValueError(f"{name} is empty; need at least one sample")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise ValueError(f"{name} must be integer class indices, got non-integer values")
    elif y.dtype.kind not in "iub":
        raise ValueError(f"{name} must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise ValueError(f"{name} must be class indices 0..Y-1, got {y.min()}")
    return y


def _check_features(features: Any) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be 2-d (N x D), got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or inf")
    return f


def leep(source_probs: Any, target_labels: Any) -> float:
    """Log Expected Empirical Prediction (Nguyen et al., ICML 2020, eq. (1)-(2); paper A eq. (7)).

    With theta(x_i) the source head's softmax over Z source classes::

        P(y, z) = 1/N sum_{i: y_i = y} theta(x_i)_z          empirical joint, Y x Z
        P(y | z) = P(y, z) / P(z),  P(z) = sum_y P(y, z)
        LEEP = 1/N sum_i log( sum_z P(y_i | z) theta(x_i)_z )

    A source class that receives no probability mass (P(z) = 0) contributes nothing: its
    conditional is set to 0 instead of 0/0 (TLlib's version returns NaN there). The value is
    <= 0, and 0 exactly when the source prediction determines the target label.

    Args:
        source_probs: N x Z, non-negative rows summing to one (within ``PROB_ATOL``).
        target_labels: N integer labels 0..Y-1.
    """
    theta = np.asarray(source_probs, dtype=np.float64)
    if theta.ndim != 2 or theta.shape[1] == 0:
        raise ValueError(f"source_probs must be N x Z with Z >= 1, got shape {theta.shape}")
    y = _check_labels(target_labels, len(theta))
    if not np.isfinite(theta).all() or (theta < 0).any():
        raise ValueError("source_probs must be finite and non-negative (pass softmax outputs, not logits)")
    sums = theta.sum(axis=1)
    if not np.allclose(sums, 1.0, rtol=0.0, atol=PROB_ATOL):
        worst = sums[np.argmax(np.abs(sums - 1.0))]
        raise ValueError(f"rows of source_probs must sum to 1, one sums to {worst:.6g} (apply a softmax)")
    theta = theta / sums[:, None]  # N x Z, exact rows
    onehot = np.eye(y.max() + 1)[y]  # N x Y
    joint = onehot.T @ theta / len(y)  # Y x Z
    marginal = joint.sum(axis=0)  # Z
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # Y x Z
    eep = (cond[y] * theta).sum(axis=1)  # N, in (0, 1]
    return float(np.mean(np.log(np.minimum(eep, 1.0))))  # min: rounding can give 1 + 1e-16


def _evidence(sigma: np.ndarray, x2: np.ndarray, res_x2: float, n: int, d: int, t: float,
              eps: float) -> tuple[float, float, float]:
    """One fixed-point step of LogME at t = alpha / beta; returns (alpha, beta, log evidence / N)."""
    gamma = (sigma / (sigma + t)).sum()  # effective number of parameters
    m2 = (sigma * x2 / (sigma + t) ** 2).sum()  # m^T m
    res2 = (x2 * (t / (sigma + t)) ** 2).sum() + res_x2  # ||F m - y||^2
    alpha, beta = gamma / (m2 + eps), (n - gamma) / (res2 + eps)
    logdet = np.log(alpha + beta * sigma).sum() + (d - len(sigma)) * np.log(alpha)  # log|A|
    evidence = (n * np.log(beta) + d * np.log(alpha) - n * np.log(2 * np.pi)
                - beta * res2 - alpha * m2 - logdet) / 2
    return alpha, beta, evidence / n


def logme(features: Any, target_labels: Any, max_iter: int = 1000, tol: float = 1e-6) -> float:
    """Log of the Maximum Evidence (You et al., ICML 2021, Algorithm 1), averaged over classes.

    Each class c gives a regression target y = 1[label = c] on the features F (N x D) under
    the prior w ~ N(0, alpha^-1 I) and noise N(0, beta^-1). With A = alpha I + beta F^T F and
    m = beta A^-1 F^T y, the log evidence is::

        L(alpha, beta) = N/2 log beta + D/2 log alpha - N/2 log 2 pi
                         - beta/2 ||F m - y||^2 - alpha/2 m^T m - 1/2 log |A|

    maximised by MacKay's fixed point gamma = sum_i beta s_i / (alpha + beta s_i),
    alpha = gamma / m^T m, beta = (N - gamma) / ||F m - y||^2 (s_i = squared singular values
    of F). Everything is computed on one thin SVD of F, so the cost per iteration is O(min(N, D)).
    As in the authors' code, 1e-5 is added to both denominators so that a perfect fit
    (possible when D >= N) gives a large finite value instead of inf. Returns the mean over
    classes of L / N.

    Args:
        features: N x D penultimate features.
        target_labels: N integer labels 0..Y-1.
        max_iter, tol: stop when alpha / beta changes by less than ``tol`` (relative).
    """
    f = _check_features(features)
    y = _check_labels(target_labels, len(f))
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)  # u: N x k, s: k
    sigma = s**2
    scores = []
    for c in range(y.max() + 1):
        target = (y == c).astype(np.float64)  # N
        x = u.T @ target  # k, coordinates of y in the column space of F
        x2 = x**2
        res_x2 = max(float(target @ target - x2.sum()), 0.0)  # the part of y outside that space
        t = 1.0  # alpha / beta, from alpha = beta = 1
        for _ in range(max_iter):
            alpha, beta, _ = _evidence(sigma, x2, res_x2, n, d, t, eps=1e-5)
            t_new = alpha / beta
            converged = abs(t_new - t) / t < tol
            t = t_new
            if converged:
                break
        scores.append(_evidence(sigma, x2, res_x2, n, d, t, eps=1e-5)[2])
    return float(np.mean(scores))


def nce(source_labels_pred: Any, target_labels: Any) -> float:
    """Negative Conditional Entropy (Tran et al., ICCV 2019, eq. (2) and Theorem 1).

    With Z the source model's hard prediction (argmax of its head) and the empirical joint
    P(y, z) = #{i: y_i = y, z_i = z} / N::

        NCE = -H(Y | Z) = sum_{y, z} P(y, z) log( P(y, z) / P(z) )

    0 when z determines y; -H(Y) >= -log Y when z is independent of y.

    Args:
        source_labels_pred: N integer source predictions.
        target_labels: N integer labels 0..Y-1.
    """
    z = _check_labels(source_labels_pred, name="source_labels_pred")
    y = _check_labels(target_labels, len(z))
    n_y = y.max() + 1
    joint = np.bincount(z * n_y + y, minlength=(z.max() + 1) * n_y).reshape(-1, n_y) / len(y)  # Z x Y
    marginal = joint.sum(axis=1, keepdims=True)  # Z x 1
    nonzero = joint > 0
    return float((joint[nonzero] * np.log((joint / np.where(marginal > 0, marginal, 1.0))[nonzero])).sum())


def h_score(features: Any, target_labels: Any, shrinkage: bool = False) -> float:
    """H-score (Bao et al., ICIP 2019, Definition 2), the TLlib estimator.

    ::

        H(f) = tr( cov(f)^+ cov(E[f | y]) )

    where E[f | y] replaces each sample's features by its class mean and ``^+`` is the
    Moore-Penrose pseudo-inverse (cov(f) is singular when D >= N), with singular values below
    ``D * eps * max`` treated as zero. Both covariances use 1 / (N - 1), so the ratio is the
    plug-in estimate. Between 0 and min(D, Y - 1).

    With ``shrinkage=True``, cov(f) is replaced by the Ledoit-Wolf estimate
    ``(1 - a) cov(f) + a (tr cov(f) / D) I`` (``a`` from scikit-learn's ``LedoitWolf``) and
    cov(E[f | y]) is scaled by ``(1 - a)`` (Ibrahim et al. 2022, eq. (4)); for a = 0 it is the plain
    estimate.

    Args:
        features: N x D penultimate features (N >= 2).
        target_labels: N integer labels 0..Y-1.
        shrinkage: use the shrinkage-based estimate (see above).
    """
    f = _check_features(features)
    y = _check_labels(target_labels, len(f))
    if len(f) < 2:
        raise ValueError(f"h_score needs at least 2 samples, got {len(f)}")
    g = np.zeros_like(f)  # N x D, E[f | y_i]
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(axis=0)
    cov_g = np.atleast_2d(np.cov(g, rowvar=False))  # D x D
    if shrinkage:
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf(assume_centered=False).fit(f)
        # sklearn normalises by N; rescale both to 1 / (N - 1) like cov_g
        cov_f = lw.covariance_ * len(f) / (len(f) - 1)
        return float(np.trace(np.linalg.solve(cov_f, (1 - lw.shrinkage_) * cov_g)))
    cov_f = np.atleast_2d(np.cov(f, rowvar=False))  # D x D
    pinv = np.linalg.pinv(cov_f, rtol=f.shape[1] * np.finfo(np.float64).eps, hermitian=True)
    return float(np.trace(pinv @ cov_g))


@torch.no_grad()
def collect(model: nn.Module, loader: Iterable[dict], device: str | torch.device = "cpu") -> dict[str, Any]:
    """Source-head probabilities and penultimate features of ``model`` on ``loader``.

    The model (already on ``device``) is put in eval mode for the pass and its mode restored
    afterwards. ``loader`` yields covtl batches: dicts with ``image`` (N x 3 x H x W),
    ``label`` and ``group``.

    Returns:
        dict with ``probs`` (N x Z softmax of the model's own head), ``features`` (N x D,
        ``forward_features``), ``labels`` (N int64) and ``groups`` (list of N).
    """
    was_training = model.training
    model.eval()
    probs, feats, labels, groups = [], [], [], []
    try:
        for batch in loader:
            f = model.forward_features(batch["image"].to(device))  # B x D
            probs.append(torch.softmax(model.forward_head(f).double(), dim=1).cpu())  # B x Z
            feats.append(f.double().cpu())
            labels.append(torch.as_tensor(batch["label"]).long().cpu())
            groups.extend(list(batch["group"]))
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("loader yielded no batches; nothing to score")
    return {
        "probs": torch.cat(probs).numpy(),
        "features": torch.cat(feats).numpy(),
        "labels": torch.cat(labels).numpy(),
        "groups": groups,
    }


def transferability_scores(collected: dict[str, Any]) -> dict[str, float]:
    """LEEP, LogME, NCE and H-score from the output of :func:`collect`.

    LEEP and NCE need ``probs`` (the source head); LogME and H-score need ``features``. A key
    that is missing or ``None`` (e.g. an SSL checkpoint without a source head, STUDY.md
    decision 5) leaves its scores out rather than inventing a head.
    """
    labels = collected["labels"]
    scores: dict[str, float] = {}
    probs = collected.get("probs")
    if probs is not None:
        scores["leep"] = leep(probs, labels)
        scores["nce"] = nce(np.asarray(probs).argmax(axis=1), labels)
    features = collected.get("features")
    if features is not None:
        scores["logme"] = logme(features, labels)
        scores["h_score"] = h_score(features, labels)
        scores["h_score_shrunk"] = h_score(features, labels, shrinkage=True)
    if not scores:
        raise ValueError("collected has neither 'probs' nor 'features'; run collect() first")
    return scores
