"""Self-supervised methods as task modules of the training engine (``forward(batch) -> loss``).

- :class:`MoCo`: MoCo v1/v2 (He et al. 2020; Chen et al. 2020), paper B's SSL and the
  image-scale branch of paper A.
- :class:`SimCLR`: Chen et al. 2020 (paper A's Table 3 comparison).
- :class:`RotationPrediction`: Gidaris et al. 2018, paper B's SSL baseline.
- :class:`RegionMoCo`: paper A's method, MoCo plus the region-scale task (sec. 5.2-5.4).

Each wraps a covtl network (``build_model(...)``) passed in, never named inside; the network
being pretrained is ``self.model`` and is what the engine saves as ``model`` in checkpoints,
so the next stage starts from it with :func:`covtl.train.handoff`.

Batches: ``batch["image"]`` is a list of views from a multi-view transform: ``[x_q, x_k]``
(N x 3 x s x s each) for MoCo/SimCLR, plus ``regions`` (N x 5 x 3 x s x s) for RegionMoCo.

**Shuffle-BN on one device.** MoCo shuffles the key batch across GPUs so that a query and its
positive key never share batch-norm statistics (which would leak the positive). On one
device we split instead (``bn_splits``): queries are normalised in ``bn_splits`` chunks of the
batch, keys in ``bn_splits`` chunks of a random permutation of it, so every image's key is
normalised with statistics of a different random subset, as on ``bn_splits`` GPUs. Only the
batch-norm layers see the chunks; the convolutions run once on the whole batch (see
``_split_forward``). Under torchrun each process does the same on its own share.

Glossary: K = queue size, m = key-encoder momentum, T = temperature, C = embedding width.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .losses import info_nce, nt_xent, region_loss
from .train import rotate_batch

__all__ = ["SSL_METHODS", "MoCo", "RegionMoCo", "RotationPrediction", "SimCLR", "build_ssl", "cost_method", "projector"]


def projector(in_dim: int, out_dim: int, hidden: int | None = None) -> nn.Module:
    """Linear head (MoCo v1) or a 2-layer MLP with ``hidden`` units (MoCo v2, SimCLR)."""
    if hidden is None:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


def _split_bn_forward(bn: nn.modules.batchnorm._BatchNorm, chunks: int, x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm of ``x`` as separate passes of its ``chunks`` chunks compute it:
    each chunk normalised with its own statistics, running statistics updated chunk by chunk."""
    out = []
    for c in x.chunk(chunks):  # nn.BatchNorm's own bookkeeping, once per chunk
        factor = bn.momentum
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:  # a cumulative average
                factor = 1.0 / float(bn.num_batches_tracked)
        out.append(F.batch_norm(c, bn.running_mean, bn.running_var, bn.weight, bn.bias, True, factor or 0.0, bn.eps))
    return torch.cat(out)


def _split_forward(modules: Sequence[nn.Module], fn, x: torch.Tensor, splits: int) -> torch.Tensor:
    """``fn(x)`` computed as on ``splits`` devices, each with its chunk of the batch.

    Only batch norm couples the images of a batch, so the convolutions run on the whole batch
    (the arithmetic of one forward pass) while every training-mode batch-norm layer of
    ``modules`` (those ``fn`` runs) normalises each chunk with that chunk's statistics. The
    result is what ``torch.cat([fn(c) for c in x.chunk(splits)])`` computes, up to the rounding
    of the convolutions' sums; one pass per chunk cost about 1.3x the arithmetic on a CPU
    (bench/ssl_cost.py), because small batches use the matrix units less well.
    """
    chunks = max(1, min(splits, x.shape[0]))  # as x.chunk(splits) cuts the batch
    if chunks == 1:
        return fn(x)
    norms = [
        m for module in modules for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
    ]
    try:
        for m in norms:
            m.forward = functools.partial(_split_bn_forward, m, chunks)
        return fn(x)
    finally:
        for m in norms:
            del m.forward


@torch.no_grad()
def _gather(t: torch.Tensor) -> torch.Tensor:
    """All processes' tensors concatenated (identity on one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return torch.cat(out)


class MoCo(nn.Module):
    """Momentum contrast with a queue of negative keys.

    Args:
        model: the network to pretrain (query encoder backbone; its head is unused here).
        dim: C, embedding width.
        queue_size: K; must be smaller than the training set (checked by the engine).
        momentum: m of the key-encoder update theta_k <- m theta_k + (1 - m) theta_q (A eq. 3).
        temperature: T.
        mlp_hidden: hidden units of a 2-layer MLP projector (v2); ``None`` = linear (v1).
        bn_splits: virtual devices for shuffled batch norm (see module docstring).
    """

    full_batches = True  # the engine drops an incomplete last batch (in-batch negatives, BN)

    def __init__(
        self,
        model: nn.Module,
        dim: int = 128,
        queue_size: int = 65536,
        momentum: float = 0.999,
        temperature: float = 0.07,
        mlp_hidden: int | None = None,
        bn_splits: int = 2,
    ) -> None:
        super().__init__()
        if queue_size < 1 or dim < 1:
            raise ValueError(f"queue_size and dim must be positive, got {queue_size}, {dim}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.model = model
        self.projector = projector(model.feature_dim, dim, mlp_hidden)
        self.key_model = copy.deepcopy(model)
        self.key_projector = copy.deepcopy(self.projector)
        for p in (*self.key_model.parameters(), *self.key_projector.parameters()):
            p.requires_grad_(False)  # updated by momentum only
        self.m, self.T, self.K, self.bn_splits = momentum, temperature, queue_size, bn_splits
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))  # K x C
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def check_train_set(self, train_set: Sequence) -> None:
        """The queue must hold fewer keys than there are training images (STUDY.md, 7)."""
        if self.K >= len(train_set):
            raise ValueError(
                f"MoCo queue of {self.K} keys but only {len(train_set)} training images: the queue "
                "would hold several keys of the same image (false negatives). Use a queue smaller "
                f"than the training set, e.g. queue_size={max(1, len(train_set) // 2)}."
            )

    @torch.no_grad()
    def _momentum_update_key_encoder(self) -> None:
        pairs = zip(
            [*self.model.parameters(), *self.projector.parameters()],
            [*self.key_model.parameters(), *self.key_projector.parameters()],
            strict=True,
        )
        for q, k in pairs:
            k.mul_(self.m).add_(q.detach(), alpha=1 - self.m)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        keys = _gather(keys)  # N x C (all processes)
        n = keys.shape[0]
        keep = keys[-self.K :]  # a batch larger than the queue keeps its newest K keys
        start = int(self.queue_ptr) + n - keep.shape[0]
        idx = (start + torch.arange(keep.shape[0], device=keys.device)) % self.K  # FIFO, wraps around
        self.queue[idx] = keep
        self.queue_ptr.fill_((int(self.queue_ptr) + n) % self.K)

    def encode_query(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x s x s -> N x C normalised queries."""

        def enc(c):
            return self.projector(self.model.forward_features(c))

        return F.normalize(_split_forward((self.model, self.projector), enc, x, self.bn_splits), dim=1)

    @torch.no_grad()
    def encode_key(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x s x s -> N x C normalised keys, with shuffled split batch norm."""

        def enc(c):
            return self.key_projector(self.key_model.forward_features(c))

        perm = torch.randperm(x.shape[0], device=x.device)
        k = _split_forward((self.key_model, self.key_projector), enc, x[perm], self.bn_splits)
        return F.normalize(k[torch.argsort(perm)], dim=1)

    def contrastive_loss(self, x_q: torch.Tensor, x_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image InfoNCE (N,) against the queue, then the keys enter the queue."""
        q = self.encode_query(x_q)  # N x C
        with torch.no_grad():
            self._momentum_update_key_encoder()
            k = self.encode_key(x_k)  # N x C
        loss = info_nce(q, k, self.queue.clone().detach(), self.T, reduction="none")
        self._dequeue_and_enqueue(k)
        return loss, q

    def forward(self, batch: dict) -> torch.Tensor:
        x_q, x_k = batch["image"][:2]
        return self.contrastive_loss(x_q, x_k)[0].mean()

    def train(self, mode: bool = True) -> MoCo:
        super().train(mode)
        self.key_model.train(mode)  # BN of the key encoder uses batch statistics, as in MoCo
        return self


class RegionMoCo(MoCo):
    """Paper A's self-supervised method: image-scale MoCo plus region-scale learning.

    L = a1 * Lcons + a2 * (Lra + sum_i Lra^i)     (A eq. (6))

    for an image X with negatives X^i. Lcons is MoCo's InfoNCE (A eq. (2)); Lra the sum of the
    five regions' cross-entropies of a shared 5-way classifier on the network's features
    (A eq. (5)). The negatives whose region losses can enter the sum are the other images of
    the mini-batch (the queue holds keys, not images).

    ``region_term`` says how a batch of N images is reduced:

    - ``"mean"`` (default): a1 * mean(Lcons) + a2 * mean(Lra) -- every image of the batch is
      the anchor of one term and a negative of the others, and its region loss is counted
      once;
    - ``"eq6"``: eq. (6) per image, then averaged: a1 * mean(Lcons) + a2 * sum(Lra), so the
      region term grows with the batch size (x256 at A's batch). On a toy set at batch 8 and
      lr 0.05 this diverged (tests/test_ssl.py), hence not the default.

    With ``alpha2 = 0`` there is no region task at all: no region classifier, no forward pass
    of the five regions (``batch["image"]`` may then hold the two views only), and the loss is
    a1 * MoCo's -- plain MoCo with A's settings, the controlled comparison of A's Table 3.
    """

    def __init__(
        self, model: nn.Module, *, alpha1: float = 0.8, alpha2: float = 0.8, region_term: str = "mean", **moco
    ) -> None:
        super().__init__(model, **moco)
        if region_term not in ("mean", "eq6"):
            raise ValueError(f"region_term must be 'mean' or 'eq6', got {region_term!r}")
        if alpha1 < 0 or alpha2 < 0:
            raise ValueError(f"alpha1 and alpha2 must be >= 0, got {alpha1} and {alpha2}")
        self.alpha1, self.alpha2, self.region_term = alpha1, alpha2, region_term
        # shared across the five regions; none without a region task (no unused parameters)
        self.region_head = nn.Linear(model.feature_dim, 5) if alpha2 else None

    def region_logits(self, regions: torch.Tensor) -> torch.Tensor:
        """N x 5 x 3 x s x s regions -> N x 5 x 5 logits of the shared region classifier."""
        if self.region_head is None:
            raise ValueError("this RegionMoCo has alpha2 = 0 and no region classifier; use alpha2 > 0")
        n, r = regions.shape[:2]
        feats = _split_forward((self.model,), self.model.forward_features, regions.flatten(0, 1), self.bn_splits)
        return self.region_head(feats).reshape(n, r, -1)

    def forward(self, batch: dict) -> torch.Tensor:
        x_q, x_k = batch["image"][:2]
        l_cons, _ = self.contrastive_loss(x_q, x_k)  # N
        if self.region_head is None:  # alpha2 = 0: the five region passes are skipped
            return self.alpha1 * l_cons.mean()
        l_ra = region_loss(self.region_logits(batch["image"][2]), reduction="none")  # N
        if self.region_term == "mean":
            return self.alpha1 * l_cons.mean() + self.alpha2 * l_ra.mean()
        per_image = self.alpha1 * l_cons + self.alpha2 * (l_ra + (l_ra.sum() - l_ra))  # eq. (6)
        return per_image.mean()


class SimCLR(nn.Module):
    """SimCLR: NT-Xent between two views' projections (2-layer MLP head)."""

    full_batches = True  # the engine drops an incomplete last batch (in-batch negatives, BN)

    def __init__(
        self, model: nn.Module, dim: int = 128, hidden: int = 2048, temperature: float = 0.5
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.model = model
        self.projector = projector(model.feature_dim, dim, hidden)
        self.T = temperature

    def forward(self, batch: dict) -> torch.Tensor:
        x1, x2 = batch["image"][:2]
        z1 = self.projector(self.model.forward_features(x1))  # N x C
        z2 = self.projector(self.model.forward_features(x2))
        return nt_xent(_gather_grad(z1), _gather_grad(z2), self.T)


def _gather_grad(t: torch.Tensor) -> torch.Tensor:
    """All processes' embeddings (this process's keep their gradient) for a global NT-Xent."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.detach())
    out[dist.get_rank()] = t
    return torch.cat(out)


class RotationPrediction(nn.Module):
    """Predict which of 0/90/180/270 degrees each image was rotated by (4-way cross-entropy)."""

    full_batches = True  # the engine drops an incomplete last batch (in-batch negatives, BN)

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rotation_head = nn.Linear(model.feature_dim, 4)

    def forward(self, batch: dict) -> torch.Tensor:
        x = batch["image"][0] if isinstance(batch["image"], list | tuple) else batch["image"]
        x, k = rotate_batch(x)
        return F.cross_entropy(self.rotation_head(self.model.forward_features(x)), k)


#: method name -> (class, paper settings); see each paper's section in the comment
SSL_METHODS: dict[str, tuple[type[nn.Module], dict]] = {
    # MoCo v1 (He et al. 2020): linear head, T 0.07, m 0.999; A uses tau 0.07, m 0.999 (sec. 5.2, 6.2)
    "moco_v1": (MoCo, {"dim": 128, "temperature": 0.07, "momentum": 0.999, "mlp_hidden": None}),
    # MoCo v2 as B sets it (sec. IV-E.2): MLP head with 2048 hidden units, queue 512; T 0.2 (v2)
    "moco_v2": (MoCo, {"dim": 128, "temperature": 0.2, "momentum": 0.999, "mlp_hidden": 2048,
                       "queue_size": 512}),
    # A's method: MoCo (tau 0.07, m 0.999) + region task, a1 = a2 = 0.8 (sec. 6.2)
    "a_region_moco": (RegionMoCo, {"dim": 128, "temperature": 0.07, "momentum": 0.999,
                                   "alpha1": 0.8, "alpha2": 0.8}),
    # SimCLR (Chen et al. 2020): 2-layer MLP head, T 0.5
    "simclr": (SimCLR, {"dim": 128, "hidden": 2048, "temperature": 0.5}),
    # B's SSL baseline (sec. IV-E.1): rotation prediction
    "rotation": (RotationPrediction, {}),
}


def cost_method(method: str, region_weight: float | None = None) -> str:
    """The method whose arithmetic a run of ``method`` does: A's region MoCo with region weight 0
    skips the region pass entirely, so it costs what MoCo v1 (same settings) does."""
    return "moco_v1" if method == "a_region_moco" and region_weight == 0 else method


def build_ssl(method: str, model: nn.Module, **overrides) -> nn.Module:
    """The SSL task module ``method`` around ``model``, paper settings unless overridden."""
    if method not in SSL_METHODS:
        raise ValueError(f"unknown SSL method {method!r}; choose one of {', '.join(SSL_METHODS)}")
    cls, settings = SSL_METHODS[method]
    return cls(model, **{**settings, **overrides})
