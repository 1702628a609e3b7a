"""The tensor-parallel layers (megatron-core `tensor_parallel/layers.py`). Each is built from the
full nn.Linear / nn.Embedding and keeps its own chunk of the weight, so with the same seed the TP=2
weights are bit-identical chunks of the TP=1 model.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from trainer.parallel.mappings import (
    copy_to_tp_region,
    gather_from_sequence_parallel_region,
    gather_from_tp_region,
    reduce_from_tp_region,
    reduce_scatter_to_sequence_parallel_region,
    scatter_to_sequence_parallel_region,
)


def shard_parameter(full: torch.Tensor, dim: int, group: dist.ProcessGroup) -> nn.Parameter:
    """This rank's chunk of `full` along `dim`, marked as TP-sharded for clip_grad_norm_."""
    tp, rank = dist.get_world_size(group), dist.get_rank(group)
    p = nn.Parameter(full.detach().chunk(tp, dim)[rank].clone(), requires_grad=full.requires_grad)
    p.tp_dim = dim  # read by clip_grad_norm_ (Megatron marks `tensor_model_parallel`)
    p.tp_group = group
    return p


class ColumnParallelLinear(nn.Module):
    """y_r = x W_r^T + b_r with W_r the r-th block of rows (output features) of the full weight."""

    def __init__(
        self,
        full: nn.Linear,
        group: dist.ProcessGroup,
        *,
        copy_input: bool,
        gather_output=False,
        sequence_parallel: bool = False,
    ) -> None:
        super().__init__()
        self.group, self.copy_input, self.gather_output = group, copy_input, gather_output
        self.sequence_parallel = sequence_parallel  # the copied input arrives split along T
        self.weight = shard_parameter(full.weight, 0, group)  # (out / tp, in)
        self.bias = None if full.bias is None else shard_parameter(full.bias, 0, group)
        self.in_features, self.out_features = self.weight.shape[1], self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.copy_input:
            enter = (gather_from_sequence_parallel_region if self.sequence_parallel
                     else copy_to_tp_region)  # fmt: skip
            x = enter(x, self.group)
        y = F.linear(x, self.weight, self.bias)
        return gather_from_tp_region(y, self.group) if self.gather_output else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features} (local)"


class RowParallelLinear(nn.Module):
    """y = sum_r x_r W_r^T + b with W_r the r-th block of columns (input features); b is
    replicated."""

    def __init__(
        self, full: nn.Linear, group: dist.ProcessGroup, *, sequence_parallel: bool = False
    ) -> None:
        super().__init__()
        self.group, self.sequence_parallel = group, sequence_parallel
        self.weight = shard_parameter(full.weight, 1, group)  # (out, in / tp)
        self.bias = None if full.bias is None else nn.Parameter(full.bias.detach().clone())
        if self.bias is not None and sequence_parallel:
            self.bias.sequence_parallel = True  # added to a part of T: gradients summed over TP
        self.in_features, self.out_features = self.weight.shape[1], self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduce = (reduce_scatter_to_sequence_parallel_region if self.sequence_parallel
                  else reduce_from_tp_region)  # fmt: skip
        y = reduce(F.linear(x, self.weight), self.group)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features} (local), out_features={self.out_features}"


class VocabParallelEmbedding(nn.Module):
    """Rank r holds rows [r * V/tp, (r+1) * V/tp); ids outside give zeros, then the ranks' rows are
    summed."""

    def __init__(self, full: nn.Embedding, group: dist.ProcessGroup) -> None:
        super().__init__()
        self.group = group
        self.weight = shard_parameter(full.weight, 0, group)  # (V / tp, C)
        self.num_embeddings, self.embedding_dim = self.weight.shape
        self.vocab_start = dist.get_rank(group) * self.num_embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.vocab_start
        outside = (local < 0) | (local >= self.num_embeddings)
        x = F.embedding(local.masked_fill(outside, 0), self.weight)
        x = x.masked_fill(outside.unsqueeze(-1), 0.0)
        return reduce_from_tp_region(x, self.group)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings} (local, from {self.vocab_start}), {self.embedding_dim}"


# ------------------------------------------------------------------------------------------------


class SequenceParallelDropout(nn.Module):
    """Dropout on this rank's part of the sequence, with the mask the unsplit run draws: the full
    (B, T, ...) mask comes from the RNG shared by the TP ranks and each keeps its slice, so a run
    with --sequence-parallel is the run without it, dropout included (Megatron instead draws
    per-rank masks). `split_input`: the input is replicated and is split along T first."""

    def __init__(self, p: float, group: dist.ProcessGroup, *, split_input: bool) -> None:
        super().__init__()
        self.p, self.group, self.split_input = p, group, split_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split_input:
            x = scatter_to_sequence_parallel_region(x, self.group)
        if not self.training or self.p == 0.0:
            return x
        tp, rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        full = (x.shape[0], x.shape[1] * tp, *x.shape[2:])
        mask = F.dropout(torch.ones(full, dtype=x.dtype, device=x.device), self.p, True)
        return x * mask.narrow(1, rank * x.shape[1], x.shape[1]).clone()  # keep the slice only

    def extra_repr(self) -> str:
        return f"p={self.p}, split_input={self.split_input}"
