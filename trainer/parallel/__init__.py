"""Parallelism of the trainer's plain models, Megatron-style, applied from outside the model.

    mappings.py         the TP collectives as autograd functions (copy / reduce / gather, and the
                        sequence-parallel all-gather / reduce-scatter)
    layers.py           ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding,
                        SequenceParallelDropout
    tensor_parallel.py  apply_tensor_parallel, shard_dims, check_tensor_parallel: each model's
                        plan (trainer/models/plans.py, via the Architecture registry) applied
    recompute.py        apply_recompute (activation checkpointing)
    rng_tracker.py      the per-rank dropout RNG inside TP regions, its checkpoint state
    state_dict.py       full (TP=1) state dicts gathered from / scattered to the shards
    data_parallel.py    finalize_grads: the sequence-parallel and data-parallel gradient sums
    clip_grads.py       clip_grad_norm_ over TP shards and DP pieces

`parallelize` applies them in the order of a training run. The models know none of it.
"""

from __future__ import annotations

import torch.distributed as dist
import torch.nn as nn

from trainer.parallel.clip_grads import clip_grad_norm_
from trainer.parallel.data_parallel import finalize_grads
from trainer.parallel.layers import (
    ColumnParallelLinear,
    RowParallelLinear,
    SequenceParallelDropout,
    VocabParallelEmbedding,
)
from trainer.parallel.mappings import gather_from_tp_region
from trainer.parallel.recompute import apply_recompute
from trainer.parallel.rng_tracker import get_rng_state, set_rng_state
from trainer.parallel.state_dict import full_state_dict, load_full_state_dict
from trainer.parallel.tensor_parallel import (
    apply_tensor_parallel,
    check_tensor_parallel,
    shard_dims,
    vocab_parallel_keys,
)

__all__ = [
    "ColumnParallelLinear",
    "RowParallelLinear",
    "SequenceParallelDropout",
    "VocabParallelEmbedding",
    "apply_recompute",
    "apply_tensor_parallel",
    "check_tensor_parallel",
    "clip_grad_norm_",
    "finalize_grads",
    "full_state_dict",
    "gather_from_tp_region",
    "get_rng_state",
    "load_full_state_dict",
    "parallelize",
    "set_rng_state",
    "shard_dims",
    "vocab_parallel_keys",
]


def parallelize(
    model: nn.Module,
    tp_group: dist.ProcessGroup | None,
    *,
    dropout_seed: int = 0,
    sequence_parallel: bool = False,
    recompute_granularity: str | None = None,
) -> nn.Module:
    """Every parallelism and memory transform of a training run, in order: tensor parallelism
    (apply_tensor_parallel, with sequence parallelism's split of the sequence), then activation
    recompute (apply_recompute). The model's own code knows none of them."""
    apply_tensor_parallel(
        model, tp_group, dropout_seed=dropout_seed, sequence_parallel=sequence_parallel
    )
    return apply_recompute(model, recompute_granularity)
