"""The training loss: token cross-entropy, vocab-parallel and memory-lean (megatron-core
`tensor_parallel/cross_entropy.py`), with the padded vocabulary rows left out of the softmax."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Per-token loss from vocab-sharded logits (N, V/tp) and global targets (N,), all valid.

    Memory-lean: one full-size buffer (logits - max, turned into the softmax in place and saved),
    one all-reduce(MAX) and one all-reduce of stack([target logit, sum of exp]).
    """

    @staticmethod
    def forward(ctx, logits, targets, group, vocab_size):
        V_local = logits.shape[-1]
        start = dist.get_rank(group) * V_local if group is not None else 0
        real = min(V_local, max(0, vocab_size - start))  # this rank's columns below vocab_size
        if real > 0:
            m = logits[:, :real].max(dim=-1).values
        else:
            m = logits.new_full(logits.shape[:1], float("-inf"))
        if group is not None:
            dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
        z = logits - m.unsqueeze(-1)  # (N, V/tp), the only full-size allocation
        z[:, real:] = float("-inf")  # padded rows: softmax 0, gradient 0
        local = targets - start
        owned = (local >= 0) & (local < V_local)
        local = local.masked_fill(~owned, 0)
        target_logit = z.gather(-1, local.unsqueeze(-1)).squeeze(-1).masked_fill(~owned, 0.0)
        z.exp_()
        stats = torch.stack([target_logit, z.sum(dim=-1)])  # (2, N)
        if group is not None:
            dist.all_reduce(stats, group=group)
        target_logit, sum_exp = stats
        z.div_(sum_exp.unsqueeze(-1))  # softmax
        ctx.save_for_backward(z, local, owned)
        return sum_exp.log() - target_logit

    @staticmethod
    def backward(ctx, grad):
        softmax, local, owned = ctx.saved_tensors
        rows = torch.arange(softmax.shape[0], device=softmax.device)
        softmax[rows, local] -= owned.to(softmax.dtype)  # d loss / d logits = softmax - onehot
        softmax.mul_(grad.unsqueeze(-1))
        return softmax, None, None, None


def vocab_parallel_cross_entropy(
    logits_local: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    *,
    tp_group: dist.ProcessGroup | None,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """Mean cross-entropy over targets != ignore_index, from this rank's vocab slice (..., V/tp) of
    the logits and global target ids (...); tp_group None = all of the vocabulary here. 0 when
    every target is ignored. Backward runs once. Columns from `vocab_size` on (the padded rows)
    are left out of the softmax."""
    V_local = logits_local.shape[-1]
    if vocab_size is None:
        tp = dist.get_world_size(tp_group) if tp_group is not None else 1
        vocab_size = V_local * tp
    t = targets.reshape(-1)
    valid = t != ignore_index
    losses = _VocabParallelCrossEntropy.apply(
        logits_local.reshape(-1, V_local), t.masked_fill(~valid, 0), tp_group, vocab_size
    )
    return losses.masked_fill(~valid, 0.0).sum() / valid.sum().clamp(min=1)


def cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_index: int = -100,
    tp_group: dist.ProcessGroup | None = None,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """Mean token cross-entropy (0 if all ignored); vocab-parallel when tp_group is given.

    `vocab_size`: the tokenizer's ids; the logits of the padded rows past it take no part in the
    softmax, so the loss (and every gradient) is the same whatever the padding. None = all columns.
    """
    if tp_group is not None or (vocab_size is not None and vocab_size < logits.shape[-1]):
        # the memory-lean function (one full-size buffer, softmax in place, no slice of the
        # padded columns to copy and to scatter back): at TP=1 it runs with no collective
        return vocab_parallel_cross_entropy(
            logits, targets, ignore_index, tp_group=tp_group, vocab_size=vocab_size
        )
    t = targets.reshape(-1)
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), t, ignore_index=ignore_index, reduction="sum"
    )
    return total / (t != ignore_index).sum().clamp(min=1)
