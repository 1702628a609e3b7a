"""Full (unsharded) state dicts of a tensor-parallel model, gathered or scattered over TP."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

from trainer.parallel.tensor_parallel import shard_dims


def full_state_dict(
    model: nn.Module, tp_group: dist.ProcessGroup | None
) -> dict[str, torch.Tensor]:
    """The TP=1 state dict on every rank: sharded tensors all-gathered and concatenated along
    shard_dims."""
    sd = model.state_dict()
    if tp_group is None:
        return {k: v.detach().clone() for k, v in sd.items()}
    dims, tp = shard_dims(model), dist.get_world_size(tp_group)
    out, done = {}, {}  # done: tied tensors gathered once
    for key, value in sd.items():
        d = dims.get(key)
        if d is None:
            out[key] = value.detach().clone()
        elif value.data_ptr() in done:
            out[key] = done[value.data_ptr()]
        else:
            parts = [torch.empty_like(value) for _ in range(tp)]
            dist.all_gather(parts, value.contiguous(), group=tp_group)
            out[key] = done[value.data_ptr()] = torch.cat(parts, dim=d)
    return out


def load_full_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor], tp_group: dist.ProcessGroup | None
) -> None:
    """Load a TP=1 state dict into a (possibly sharded) model, each rank taking its chunks."""
    if tp_group is None:
        model.load_state_dict(state_dict)
        return
    dims, tp, rank = shard_dims(model), dist.get_world_size(tp_group), dist.get_rank(tp_group)
    local = {}
    for key, value in state_dict.items():
        d = dims.get(key)
        local[key] = value if d is None else value.chunk(tp, dim=d)[rank]
    model.load_state_dict(local)
