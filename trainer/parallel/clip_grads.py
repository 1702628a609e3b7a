"""Gradient clipping by the global norm over TP shards and DP pieces (megatron-core
`optimizer/clip_grads.py`)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def clip_grad_norm_(
    parameters,
    max_norm: float,
    *,
    tp_group: dist.ProcessGroup | None = None,
    dp_group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Scale gradients so their global L2 norm (over all TP shards) is at most max_norm; return the
    norm.

    Sharded parameters (marked by apply_tensor_parallel) add their squared norms across the TP
    group; replicated ones, identical on every rank, count once. Accumulates in fp64 if any grad is
    fp64.

    With the distributed optimizer each DP rank holds disjoint pieces of the gradients: pass
    `dp_group` to sum over them, and `tp_group` (a rank may hold no TP-sharded piece, yet every
    rank must join the same collectives).
    """
    grads_sharded, grads_replicated, group = [], [], tp_group
    for p in parameters:
        if p.grad is None:
            continue
        if getattr(p, "tp_group", None) is not None:
            if group is not None and p.tp_group is not group:
                raise ValueError("clip_grad_norm_ got parameters sharded over different TP groups")
            group = p.tp_group
            grads_sharded.append(p.grad)
        else:
            grads_replicated.append(p.grad)
    grads = grads_sharded + grads_replicated
    if not grads and dp_group is None:
        return torch.tensor(0.0)
    acc = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
    device = grads[0].device if grads else torch.device("cpu")

    def sum_sq(gs):
        if not gs:
            return torch.zeros((), dtype=acc, device=device)
        return torch.stack([torch.linalg.vector_norm(g, dtype=acc) for g in gs]).pow(2).sum()

    sq, sq_replicated = sum_sq(grads_sharded), sum_sq(grads_replicated)
    if dp_group is not None:
        both = torch.stack([sq, sq_replicated])
        dist.all_reduce(both, group=dp_group)
        sq, sq_replicated = both[0], both[1]
    if group is not None:
        dist.all_reduce(sq, group=group)
    total = (sq + sq_replicated).sqrt()
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.to(g.dtype))
    return total


# ------------------------------------------------------------------------------------------------
