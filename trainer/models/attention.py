"""The core attention, softmax(q k^T * scale + mask) v with dropout on the probabilities, as a
module of its own.

Being a module (rather than a call inside each attention's forward) lets trainer/parallel/
recompute exactly this part in the backward (Megatron's selective recompute: it holds the
B x heads x T x S probabilities, the largest activation, for the fewest FLOPs) without the model
knowing. It has no parameters, so state dicts do not change.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class CoreAttention(nn.Module):
    def __init__(self, dropout: float, *, causal: bool, scale: float | None = None) -> None:
        super().__init__()
        self.dropout, self.causal, self.scale = dropout, causal, scale

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """q (B, nh, T, hs), k and v (B, nh, S, hs) -> (B, T, nh * hs). `mask`: bool (True = may
        attend) or additive, broadcasting to (B, nh, T, S); causal models use it instead of the
        causal mask when given (it must then be causal itself)."""
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=p, is_causal=self.causal and mask is None,
            scale=self.scale,
        )  # fmt: skip
        return y.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}, causal={self.causal}"
