"""Data-parallel gradient reduction (megatron-core's finalize_model_grads)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def _all_reduce_flat(grads: list[torch.Tensor], group: dist.ProcessGroup) -> None:
    """Sum `grads` over `group` in one collective on a flat copy."""
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    for g, r in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(r.view_as(g))


def finalize_grads(
    parameters,
    *,
    tp_group: dist.ProcessGroup | None = None,
    dp_group: dist.ProcessGroup | None = None,
) -> None:
    """After the backward of every micro-batch: sum the gradients of the parameters that saw
    only this rank's part of the sequence (--sequence-parallel: norms, row-parallel biases) over
    the TP ranks, then the gradients of all over the DP ranks (Megatron's finalize_model_grads)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if tp_group is not None:
        _all_reduce_flat([p.grad for p in parameters
                          if p.grad is not None and getattr(p, "sequence_parallel", False)],
                         tp_group)  # fmt: skip
    if dp_group is not None:
        _all_reduce_flat(grads, dp_group)
