"""Transferability scores: hand-computed cases, invariants, a slow LogME reference, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from toy import ToyImages

from covtl.models import build_model
from covtl.transferability import collect, h_score, leep, logme, nce, transferability_scores


def _random_case(seed: int, n: int = 40, z: int = 5, y: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, z)) * rng.uniform(0.1, 5)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, rng.integers(0, y, size=n)


# ----------------------------------------------------------------------------------------- LEEP


def test_leep_three_samples_by_hand():
    theta = np.array([[0.8, 0.2], [0.4, 0.6], [0.1, 0.9]])
    y = np.array([0, 1, 1])
    # P(z) = [1.3, 1.7] / 3; P(y=0|z) = [0.8/1.3, 0.2/1.7]; P(y=1|z) = [0.5/1.3, 1.5/1.7]
    eep = [
        0.8 * 0.8 / 1.3 + 0.2 * 0.2 / 1.7,
        0.4 * 0.5 / 1.3 + 0.6 * 1.5 / 1.7,
        0.1 * 0.5 / 1.3 + 0.9 * 1.5 / 1.7,
    ]
    assert leep(theta, y) == pytest.approx(np.mean(np.log(eep)), rel=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_leep_is_never_positive(seed):
    probs, y = _random_case(seed)
    value = leep(probs, y)
    assert np.isfinite(value) and value <= 0.0


def test_leep_of_a_one_to_one_mapping_is_zero():
    z = np.array([2, 0, 1, 1, 0, 2, 2])
    probs = np.eye(3)[z]  # one-hot source predictions
    target = np.array([1, 2, 0])[z]  # a bijection source class -> target class
    assert leep(probs, target) == 0.0


def test_leep_ignores_an_empty_source_class():
    probs, y = _random_case(1, z=4)
    padded = np.insert(probs, 2, 0.0, axis=1)  # a source class with no mass: P(z) = 0
    value = leep(padded, y)
    assert np.isfinite(value)
    assert value == pytest.approx(leep(probs, y), rel=1e-12)


def test_leep_accepts_float32_softmax_and_tensors():
    logits = torch.randn(30, 10, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(logits, dim=1)  # float32, rows sum to 1 +- 1e-7
    y = torch.arange(30) % 2
    assert leep(probs.numpy(), y.numpy()) == pytest.approx(leep(probs.double().numpy(), y.numpy()), abs=1e-6)


@pytest.mark.parametrize(
    ("probs", "labels", "match"),
    [
        (np.full((3,), 1 / 3), [0, 1, 0], "N x Z"),
        (np.full((3, 2), 0.5), [0, 1], "3 samples"),
        (np.full((3, 2), 0.6), [0, 1, 0], "sum to 1"),
        (np.array([[1.5, -0.5], [0.5, 0.5], [0.5, 0.5]]), [0, 1, 0], "non-negative"),
        (np.array([[np.nan, 1.0], [0.5, 0.5], [0.5, 0.5]]), [0, 1, 0], "finite"),
        (np.full((3, 2), 0.5), [0, -1, 0], "0..Y-1"),
        (np.full((3, 2), 0.5), [0, 0.5, 1], "integer"),
        (np.full((3, 2), 0.5), [[0], [1], [0]], "1-d"),
        (np.full((3, 2), 0.5), ["a", "b", "a"], "integer"),
    ],
)
def test_leep_rejects_bad_input(probs, labels, match):
    with pytest.raises(ValueError, match=match):
        leep(probs, np.asarray(labels))


# ---------------------------------------------------------------------------------------- LogME


def _logme_reference(f: np.ndarray, labels: np.ndarray, iters: int = 2000) -> float:
    """You et al. 2021, Algorithm 1, written with explicit D x D matrices (slow, direct)."""
    n, d = f.shape
    ftf = f.T @ f
    eig = np.linalg.eigvalsh(ftf)
    scores = []
    for c in range(labels.max() + 1):
        y = (labels == c).astype(float)
        alpha = beta = 1.0
        for _ in range(iters):
            a = alpha * np.eye(d) + beta * ftf
            m = beta * np.linalg.solve(a, f.T @ y)
            gamma = (beta * eig / (alpha + beta * eig)).sum()
            new_alpha, new_beta = gamma / (m @ m), (n - gamma) / ((y - f @ m) @ (y - f @ m))
            done = abs(new_alpha / new_beta - alpha / beta) < 1e-10 * alpha / beta
            alpha, beta = new_alpha, new_beta
            if done:
                break
        a = alpha * np.eye(d) + beta * ftf
        m = beta * np.linalg.solve(a, f.T @ y)
        evidence = (n * np.log(beta) + d * np.log(alpha) - n * np.log(2 * np.pi)
                    - beta * (y - f @ m) @ (y - f @ m) - alpha * m @ m - np.linalg.slogdet(a)[1]) / 2
        scores.append(evidence / n)
    return float(np.mean(scores))


@pytest.mark.parametrize(("n", "d", "classes"), [(60, 5, 2), (80, 8, 3), (40, 4, 4)])
def test_logme_matches_the_slow_reference(n, d, classes):
    rng = np.random.default_rng(n + d)
    labels = rng.integers(0, classes, size=n)
    f = rng.normal(size=(n, d)) + 0.8 * np.eye(classes, d)[labels]  # partly informative
    assert logme(f, labels) == pytest.approx(_logme_reference(f, labels), rel=1e-4)


def test_logme_prefers_features_that_separate_the_classes():
    rng = np.random.default_rng(0)
    labels = np.arange(100) % 2
    noise = rng.normal(size=(100, 16))
    separating = noise.copy()
    separating[:, 0] += 4.0 * labels
    assert logme(separating, labels) > logme(noise, labels)


def test_logme_is_finite_when_features_outnumber_samples():
    rng = np.random.default_rng(1)
    labels = np.arange(12) % 2
    assert np.isfinite(logme(rng.normal(size=(12, 64)), labels))


# ------------------------------------------------------------------------------------ NCE, H-score


def test_nce_is_zero_for_a_deterministic_mapping():
    z = np.array([0, 3, 3, 1, 2, 0, 1])
    y = np.array([1, 0, 0, 1, 0, 1, 1])[z]  # y = g(z), not injective
    assert nce(z, np.array([1, 0, 0, 1])[z]) == 0.0
    assert nce(z, y) == 0.0


def test_nce_of_independent_labels_is_minus_the_label_entropy():
    # every (z, y) pair once: z tells nothing about y, and y is uniform over 3 classes
    z, y = np.meshgrid(np.arange(4), np.arange(3), indexing="ij")
    assert nce(z.ravel(), y.ravel()) == pytest.approx(-math.log(3), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_nce_lies_between_minus_log_y_and_zero(seed):
    rng = np.random.default_rng(seed)
    z, y = rng.integers(0, 6, size=50), rng.integers(0, 3, size=50)
    assert -math.log(3) - 1e-12 <= nce(z, y) <= 0.0


def test_h_score_closed_form_1d():
    # f = [0, 2, 4, 6], classes {0, 1} -> E[f|y] = [1, 1, 5, 5]; var f = 20/3, var E[f|y] = 16/3
    assert h_score(np.array([[0.0], [2.0], [4.0], [6.0]]), np.array([0, 0, 1, 1])) == pytest.approx(0.8)


def test_h_score_closed_form_2d():
    f = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, -1.0], [6.0, -1.0]])
    y = np.array([0, 0, 1, 1])
    # cov(f) = [[20/3, -8/3], [-8/3, 4/3]], cov(E[f|y]) = [[16/3, -8/3], [-8/3, 4/3]]
    expected = np.trace(np.linalg.inv([[20, -8], [-8, 4]]) @ np.array([[16, -8], [-8, 4]]))
    assert h_score(f, y) == pytest.approx(expected)
    assert expected == pytest.approx(1.0)  # the second feature is a function of the class


def test_h_score_is_bounded_with_more_features_than_samples():
    rng = np.random.default_rng(2)
    labels = np.arange(10) % 2
    value = h_score(rng.normal(size=(10, 50)), labels)
    assert 0.0 <= value <= 1.0 + 1e-6  # min(D, Y - 1) = 1


def test_plain_h_score_saturates_when_features_outnumber_samples_and_shrinkage_does_not():
    # pure-noise features carry no class information, yet with D >= N - 1 the plain estimate
    # reaches its maximum Y - 1 (every labelling is separable); the shrinkage estimate stays low
    rng = np.random.default_rng(5)
    labels = np.arange(40) % 2
    noise = rng.normal(size=(40, 64))
    assert h_score(noise, labels) == pytest.approx(1.0, abs=1e-6)
    assert 0.0 <= h_score(noise, labels, shrinkage=True) < 0.3
    informative = noise + 6.0 * labels[:, None] * (np.arange(64) == 0)  # one feature separates the classes
    assert h_score(informative, labels) == pytest.approx(1.0, abs=1e-6)  # no different from noise
    assert h_score(informative, labels, shrinkage=True) > 0.6


def test_shrinkage_h_score_matches_the_plain_one_with_plenty_of_samples():
    rng = np.random.default_rng(6)
    labels = np.arange(4000) % 2
    f = rng.normal(size=(4000, 3)) + labels[:, None] * np.array([1.0, 0.5, 0.0])
    assert h_score(f, labels, shrinkage=True) == pytest.approx(h_score(f, labels), rel=0.05)


@pytest.mark.parametrize("score", [logme, h_score])
def test_feature_scores_reject_bad_input(score):
    with pytest.raises(ValueError, match="N x D"):
        score(np.zeros(5), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="NaN"):
        score(np.full((3, 2), np.nan), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="samples"):
        score(np.zeros((3, 2)), np.zeros(4, dtype=int))


def test_all_scores_are_invariant_to_sample_order():
    rng = np.random.default_rng(3)
    probs, y = _random_case(3, n=30, z=6, y=2)
    feats = rng.normal(size=(30, 7)) + y[:, None]
    perm = rng.permutation(30)
    assert leep(probs[perm], y[perm]) == pytest.approx(leep(probs, y), rel=1e-12)
    assert nce(probs.argmax(1)[perm], y[perm]) == pytest.approx(nce(probs.argmax(1), y), rel=1e-12)
    assert logme(feats[perm], y[perm]) == pytest.approx(logme(feats, y), rel=1e-9)
    assert h_score(feats[perm], y[perm]) == pytest.approx(h_score(feats, y), rel=1e-9)


# ----------------------------------------------------------------------------------- collection


def test_collect_and_score_a_model_and_restore_its_mode():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=5)
    model.train()
    loader = DataLoader(ToyImages(n=12, size=32), batch_size=5)
    out = collect(model, loader)
    assert model.training
    assert out["probs"].shape == (12, 5) and out["features"].shape == (12, 512)
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(out["labels"], np.arange(12) % 2)
    assert out["groups"] == [f"p{i // 2}" for i in range(12)]
    with torch.no_grad():
        model.eval()
        expected = torch.softmax(model(ToyImages(n=12, size=32).images), dim=1).numpy()
    np.testing.assert_allclose(out["probs"], expected, atol=1e-5)

    scores = transferability_scores(out)
    assert set(scores) == {"leep", "logme", "nce", "h_score", "h_score_shrunk"}
    assert all(np.isfinite(v) for v in scores.values())
    assert scores["leep"] <= 0 and scores["nce"] <= 0


def test_scores_without_a_source_head_leave_leep_out():
    rng = np.random.default_rng(4)
    collected = {"probs": None, "features": rng.normal(size=(20, 4)), "labels": np.arange(20) % 2}
    assert set(transferability_scores(collected)) == {"logme", "h_score", "h_score_shrunk"}
