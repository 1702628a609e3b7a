"""The tensor-parallel collectives as autograd functions, named as in megatron-core
`tensor_parallel/mappings.py`.

Between them they hold every collective of a tensor-parallel forward and backward (gloo or NCCL)
apart from the vocab-parallel cross-entropy (trainer/loss.py):

    copy_to_tp_region          identity forward, all-reduce (sum) of the gradient backward
    reduce_from_tp_region      all-reduce (sum) forward, identity backward
    gather_from_tp_region      all-gather along the last dimension forward, own slice backward

and, under sequence parallelism (activations outside the TP regions hold 1/tp of dim 1 of
(B, T, C)), the ones that replace the first two at the region borders:

    gather_from_sequence_parallel_region          all-gather along T / reduce-scatter backward
    reduce_scatter_to_sequence_parallel_region    reduce-scatter along T / all-gather backward
    scatter_to_sequence_parallel_region           this rank's part of T / all-gather backward
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from dataprep.errors import ConfigError


class _Copy(torch.autograd.Function):
    """Enter a TP region: identity forward, all-reduce (sum) of the gradient backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _Reduce(torch.autograd.Function):
    """Leave a TP region: all-reduce (sum) of the partial results forward, identity backward."""

    @staticmethod
    def forward(ctx, x, group):
        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _Gather(torch.autograd.Function):
    """All-gather along the last dimension forward; backward keeps this rank's slice of the
    gradient."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=-1)

    @staticmethod
    def backward(ctx, grad):
        tp, rank = dist.get_world_size(ctx.group), dist.get_rank(ctx.group)
        return grad.chunk(tp, dim=-1)[rank].contiguous(), None


# Sequence parallelism: activations outside the TP regions hold 1/tp of the sequence (dim 1 of
# (B, T, C)); these replace _Copy / _Reduce at the region borders (Megatron's
# gather_from_sequence_parallel_region, reduce_scatter_to_sequence_parallel_region).


def _all_gather_seq(x: torch.Tensor, group) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=1)


def _reduce_scatter_seq(x: torch.Tensor, group) -> torch.Tensor:
    tp = dist.get_world_size(group)
    chunks = x.chunk(tp, dim=1)
    out = torch.empty_like(chunks[0], memory_format=torch.contiguous_format)
    # rank r's part is the r-th block along dim 0 of the input
    dist.reduce_scatter_single(out, torch.cat(chunks, dim=0), group=group)
    return out


def _seq_chunk(x: torch.Tensor, group) -> torch.Tensor:
    tp, rank = dist.get_world_size(group), dist.get_rank(group)
    if x.shape[1] % tp:
        raise ConfigError(
            f"{{sequence_parallel}} splits the sequence over {tp} TP ranks: the length "
            f"{x.shape[1]} is not a multiple of {tp}",
            "sequence_parallel",
        )
    return x.chunk(tp, dim=1)[rank].contiguous()


class _GatherSeq(torch.autograd.Function):
    """Enter a TP region under sequence parallelism: all-gather the sequence forward,
    reduce-scatter of the gradient backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_gather_seq(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _reduce_scatter_seq(grad, ctx.group), None


class _ReduceScatterSeq(torch.autograd.Function):
    """Leave a TP region under sequence parallelism: reduce-scatter of the partial sums forward,
    all-gather of the gradient backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _reduce_scatter_seq(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather_seq(grad, ctx.group), None


class _ScatterSeq(torch.autograd.Function):
    """Replicated activations (the embeddings) -> this rank's part of the sequence; backward
    all-gathers the gradient, so the replicated side gets the whole of it on every rank."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _seq_chunk(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather_seq(grad, ctx.group), None


def copy_to_tp_region(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    return _Copy.apply(x, group)


def reduce_from_tp_region(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    return _Reduce.apply(x, group)


def gather_from_tp_region(x: torch.Tensor, tp_group: dist.ProcessGroup | None) -> torch.Tensor:
    """Full last dimension from per-rank slices (e.g. vocab-parallel logits); identity at TP = 1."""
    return x if tp_group is None else _Gather.apply(x, tp_group)


def gather_from_sequence_parallel_region(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    return _GatherSeq.apply(x, group)


def reduce_scatter_to_sequence_parallel_region(
    x: torch.Tensor, group: dist.ProcessGroup
) -> torch.Tensor:
    return _ReduceScatterSeq.apply(x, group)


def scatter_to_sequence_parallel_region(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    return _ScatterSeq.apply(x, group)
