"""The non-local self-attention block (ATTN) of paper A, eq. (1).

Liu & Ji 2021, sec. 2.2: for an input X (h x w x c), 1x1 convolutions give the query
Q (dk x hw), key K (dk x hw) and value V (dv x hw); the intermediate output is

    O = V Softmax(K^T Q)                                                    (1)

with the softmax over the columns of K^T Q, so every column (one query position) sums to
one over the hw key positions. O is folded back to h x w x dv; as in Wang et al.'s
non-local block (the paper's ref. [29]) an output projection W_z (1x1 conv + batch norm)
maps it back to c channels and is added to the input: Z = X + BN(W_z O).

Glossary: c = in_channels, dk = key_channels (also the query width), dv = value_channels,
n = h*w positions. Defaults follow ref. [29]: dk = dv = c // 2.

The batch norm's scale is initialised to zero, so at initialisation the block is exactly
the identity and a pretrained network with blocks inserted computes what it did before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NonLocalBlock", "attention_matrix"]


def attention_matrix(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Softmax(K^T Q) of eq. (1), batched.

    Args:
        query: N x dk x n.
        key: N x dk x n.

    Returns:
        N x n x n matrix A with A[b, i, j] = weight of key position i for query position j;
        each column sums to one (``A.sum(dim=1) == 1``).
    """
    logits = torch.bmm(key.transpose(1, 2), query)  # N x n(keys) x n(queries)
    return F.softmax(logits, dim=1)


class NonLocalBlock(nn.Module):
    """Non-local self-attention block (paper A eq. (1)) with a zero-initialised residual.

    Args:
        in_channels: c, channels of the input and output.
        key_channels: dk, width of Q and K (default c // 2).
        value_channels: dv, width of V (default c // 2).

    ``forward(x)`` maps N x c x h x w to the same shape; ``forward(x, return_attention=True)``
    also returns the attention matrix (N x n x n, columns sum to one; see
    :func:`attention_matrix`). Inside a network, set ``keep_attention = True`` and the
    matrix of the last forward pass is kept (detached) in ``self.attention``.
    """

    def __init__(
        self,
        in_channels: int,
        key_channels: int | None = None,
        value_channels: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 2:
            raise ValueError(f"in_channels must be >= 2, got {in_channels}")
        key_channels = key_channels or in_channels // 2
        value_channels = value_channels or in_channels // 2
        if key_channels < 1 or value_channels < 1:
            raise ValueError(
                f"key_channels and value_channels must be positive, got {key_channels}, "
                f"{value_channels}"
            )
        self.in_channels = in_channels
        self.key_channels = key_channels
        self.value_channels = value_channels
        self.query = nn.Conv2d(in_channels, key_channels, kernel_size=1)
        self.key = nn.Conv2d(in_channels, key_channels, kernel_size=1)
        self.value = nn.Conv2d(in_channels, value_channels, kernel_size=1)
        self.out_proj = nn.Conv2d(value_channels, in_channels, kernel_size=1, bias=False)
        self.out_norm = nn.BatchNorm2d(in_channels)
        nn.init.zeros_(self.out_norm.weight)  # identity at init: Z = X + 0
        nn.init.zeros_(self.out_norm.bias)
        self.keep_attention = False
        self.attention: torch.Tensor | None = None

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        q = self.query(x).flatten(2)  # N x dk x hw
        k = self.key(x).flatten(2)  # N x dk x hw
        v = self.value(x).flatten(2)  # N x dv x hw
        attn = attention_matrix(q, k)  # N x hw(keys) x hw(queries)
        if self.keep_attention:
            self.attention = attn.detach()
        o = torch.bmm(v, attn)  # N x dv x hw, eq. (1)
        o = o.reshape(n, self.value_channels, h, w)
        z = x + self.out_norm(self.out_proj(o))
        return (z, attn) if return_attention else z

    def extra_repr(self) -> str:
        return f"c={self.in_channels}, dk={self.key_channels}, dv={self.value_channels}"
