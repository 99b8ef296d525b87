"""Losses of the self-supervised methods, as small pure functions.

- :func:`info_nce`: MoCo's contrastive loss (He et al. 2020, eq. 1; paper A eq. (2)), posed as
  a (1+K)-way classification whose correct class is the positive key (index 0).
- :func:`nt_xent`: SimCLR's normalised temperature-scaled cross-entropy (Chen et al. 2020).
- :func:`region_loss`: paper A's region-aware loss, eq. (5): the sum over the five lobe
  regions of the cross-entropy of the shared 5-way region classifier.

Glossary: N = batch size, C = embedding width, K = queue length, T = temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["info_nce", "nt_xent", "region_loss"]


def info_nce(
    query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float, reduction: str = "mean"
) -> torch.Tensor:
    """-log( exp(q.k+/T) / (exp(q.k+/T) + sum_i exp(q.k_i/T)) ), keys k_i from the queue.

    Args:
        query: N x C, L2-normalised.
        key: N x C, L2-normalised positive keys (no gradient expected).
        queue: K x C, L2-normalised negative keys.
        temperature: T > 0.
        reduction: "mean", "sum" or "none" (N losses).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    l_pos = torch.einsum("nc,nc->n", query, key).unsqueeze(1)  # N x 1
    l_neg = query @ queue.t()  # N x K
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # N x (1+K)
    labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)  # positives: index 0
    return F.cross_entropy(logits, labels, reduction=reduction)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss over the 2N views: each view's positive is its pair, the 2N-2 others negatives.

    Args:
        z1, z2: N x C projections of the two views (normalised here).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # 2N x C
    sim = z @ z.t() / temperature  # 2N x 2N
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


def region_loss(logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Paper A eq. (5): Lra = sum over the regions i of CE(x_i, y_i), y_i = i.

    Args:
        logits: N x R x R, the shared region classifier's outputs for the R = 5 regions of
            each of N images, regions in the fixed order (ru, rm, rl, lu, ll).
        reduction: over images: "mean", "sum" or "none" (N losses, each a sum over regions).
    """
    n, r, classes = logits.shape
    if r != classes:
        raise ValueError(f"expected N x R x R region logits, got {tuple(logits.shape)}")
    labels = torch.arange(r, device=logits.device).repeat(n)  # region i has class i
    per_region = F.cross_entropy(logits.reshape(n * r, r), labels, reduction="none").reshape(n, r)
    per_image = per_region.sum(dim=1)  # N
    if reduction == "none":
        return per_image
    return per_image.sum() if reduction == "sum" else per_image.mean()
