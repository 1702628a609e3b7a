"""The optimizer side of a step: AdamW and its parameter groups, the LR schedule (linear warmup,
then cosine decay) and `apply_gradients` (reduction, clipping, the AdamW step)."""

from __future__ import annotations

import logging
import math
from typing import Any

from trainer import parallel
from trainer.config import TrainConfig
from trainer.training.distributed_optimizer import DistributedAdamW

log = logging.getLogger(__name__)


def lr_at(step: int, *, lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """LR of 0-based step `step`: lr*(step+1)/warmup during warmup, then cosine from lr to min_lr.

    E.g. lr 1e-3, min 1e-4, warmup 10, decay 110: step 0 -> 1e-4, step 9 -> 1e-3, step 60 -> 5.5e-4,
    step >= 110 -> 1e-4.
    """
    if warmup_iters > 0 and step < warmup_iters:
        return lr * (step + 1) / warmup_iters
    span = max(1, decay_iters - warmup_iters)
    progress = min(1.0, max(0.0, (step - warmup_iters) / span))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def optimizer_for(model: Any, config: TrainConfig, layout: Any) -> Any:
    """The run's optimizer (`make_optimizer` with the run's flags)."""
    return make_optimizer(
        model,
        layout,
        weight_decay=config.weight_decay,
        distributed=config.use_distributed_optimizer,
        lr=config.lr,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_eps,
    )


def make_optimizer(
    model: Any, layout: Any, *, weight_decay: float, distributed: bool = False, **adamw: Any
) -> Any:
    """AdamW, weight decay on matrices only (not biases, norms); `distributed` (and DP >= 2): its
    states sharded over the DP ranks (trainer/training/distributed_optimizer.py)."""
    import torch

    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if distributed:
        if layout.dp_group is not None:
            return DistributedAdamW(groups, layout.dp_group, **adamw)
        if layout.is_main:
            log.info("--use-distributed-optimizer: one data-parallel rank, nothing to shard")
    return torch.optim.AdamW(groups, **adamw)


def apply_gradients(optimizer, params, *, layout, clip: float, lr: float) -> Any:
    """After the backward of every micro-batch: reduce the gradients (TP for sequence-parallel
    parameters, DP), clip them to the global norm `clip` (0 = no clipping), take the AdamW step
    at `lr` and clear them; the gradient norm before clipping."""
    sharded = isinstance(optimizer, DistributedAdamW)  # reduce-scatters the DP gradients itself
    dp_group = None if sharded else layout.dp_group
    parallel.finalize_grads(params, tp_group=layout.tp_group, dp_group=dp_group)
    max_norm = clip if clip > 0 else float("inf")
    if sharded:
        optimizer.reduce_gradients()
        grad_norm = parallel.clip_grad_norm_(
            optimizer.grad_views(), max_norm, tp_group=layout.tp_group, dp_group=layout.dp_group
        )
    else:
        grad_norm = parallel.clip_grad_norm_(params, max_norm)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm
