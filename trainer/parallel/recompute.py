"""Activation recompute (Megatron's --recompute-granularity), applied after the sharding."""

from __future__ import annotations

import torch
import torch.nn as nn

from dataprep.errors import UsageError
from trainer.models import architecture_of
from trainer.parallel.rng_tracker import tracker_contexts
from trainer.parallel.tensor_parallel import compile_pattern


def apply_recompute(model: nn.Module, granularity: str | None) -> nn.Module:
    """Activation checkpointing, in place, of `model`'s recompute units (its architecture's
    `recompute_units`).

    Each unit's forward runs under torch.utils.checkpoint (non-reentrant) while gradients are
    enabled, so it saves only its inputs and reruns in the backward with the forward's RNG
    states, the per-rank TP one included; the losses and gradients are those of the plain run.
    Inference (no grad) is unchanged. None = nothing to do.
    """
    if granularity is None:
        return model
    units = architecture_of(model).recompute_units
    if units is None or granularity not in units:
        raise UsageError(
            f"no recompute unit {granularity!r} for {type(model).__name__}; expected one of "
            f"{sorted(units or [])}"
        )
    from torch.utils.checkpoint import checkpoint

    rx = compile_pattern(units[granularity])
    info = getattr(model, "_tp_info", None)
    rng = info.rng if info is not None else None
    matched = [m for name, m in model.named_modules() if rx.match(name)]
    if not matched:
        raise RuntimeError(
            f"{type(model).__name__}: recompute pattern {rx.pattern} matches nothing"
        )
    for module in matched:
        inner = module.forward

        def forward(*args, _inner=inner, **kwargs):
            if not torch.is_grad_enabled():
                return _inner(*args, **kwargs)
            return checkpoint(
                _inner, *args, use_reentrant=False, context_fn=lambda: tracker_contexts(rng),
                **kwargs,
            )  # fmt: skip

        module.forward = forward
    return model
