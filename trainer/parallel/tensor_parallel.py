"""`apply_tensor_parallel(model, tp_group)`: Megatron-style tensor parallelism on plain tensors.

It rewrites a GPT, GPT-J or MT5 in place following its plan (trainer/models/plans.py): q/k/v and
fc/wi_0/wi_1 become column-parallel, o/c_proj/wo row-parallel, the (padded) vocabulary is split
across ranks in the embedding and the head, and mT5's relative-bias table is split by heads. The
head returns this rank's slice of the logits; `trainer.loss.cross_entropy(..., tp_group=)` computes
the loss without gathering them.

A `Region` is a module whose inputs are replicated activations: they are copied into the region
once on entry (one gradient all-reduce for q, k and v together) and dropout inside runs on the
per-rank RNG (trainer/parallel/rng_tracker.py). TP = 1 (tp_group None) needs no process group: the
model is left as it is.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from dataprep.errors import ConfigError, UsageError
from trainer.models import ARCHITECTURES, architecture_of
from trainer.models.common import pad_vocab_size
from trainer.models.plans import (
    COLWISE,
    HEAD_TABLE,
    ROWWISE,
    SEQ_DROPOUT,
    SEQ_NORM,
    SEQ_SPLIT_DROPOUT,
    VOCAB_EMBEDDING,
    VOCAB_HEAD,
    Region,
)
from trainer.parallel.layers import (
    ColumnParallelLinear,
    RowParallelLinear,
    SequenceParallelDropout,
    VocabParallelEmbedding,
    shard_parameter,
)
from trainer.parallel.mappings import copy_to_tp_region, gather_from_sequence_parallel_region
from trainer.parallel.rng_tracker import RankRNG

# parameter name -> shard dim, per style (missing = replicated)
STYLE_DIMS = {
    COLWISE: {"weight": 0, "bias": 0},
    VOCAB_HEAD: {"weight": 0, "bias": 0},
    ROWWISE: {"weight": 1},
    VOCAB_EMBEDDING: {"weight": 0},
    HEAD_TABLE: {"weight": 1},
}


def compile_pattern(pattern: str) -> re.Pattern:
    """A module-name pattern, "*" = one name component."""
    return re.compile("^" + re.escape(pattern).replace(r"\*", r"[^.]+") + "$")


@dataclass
class TPInfo:
    """What apply_tensor_parallel leaves on the model as `model._tp_info`."""

    group: dist.ProcessGroup
    tp: int
    rank: int
    rng: RankRNG
    sequence_parallel: bool = False


def _plan_matches(model: nn.Module) -> list[tuple[str, nn.Module, object]]:
    """(module name, module, style) for every module a plan pattern matches; each pattern must
    match."""
    try:
        plan = architecture_of(model).tp_plan
    except TypeError:
        raise TypeError(
            f"no tensor-parallel plan for {type(model).__name__}; expected one of "
            f"{[a.model.__name__ for a in ARCHITECTURES.values()]}"
        ) from None
    compiled = [(pat, compile_pattern(pat), style) for pat, style in plan.items()]
    matches, used = [], set()
    for name, module in model.named_modules():
        for pat, rx, style in compiled:
            if rx.match(name):
                matches.append((name, module, style))
                used.add(pat)
    unused = [pat for pat, _, _ in compiled if pat not in used]
    if unused:  # the model changed its module names without updating the plan
        raise RuntimeError(f"{type(model).__name__} plan patterns match no module: {unused}")
    return matches


def shard_dims(model: nn.Module) -> dict[str, int | None]:
    """State-dict key -> dimension split across TP ranks (None = replicated). Same at every TP."""
    module_dims = {name: STYLE_DIMS.get(style, {}) for name, _, style in _plan_matches(model)}
    dims = {}
    for key in model.state_dict(keep_vars=True):
        module_name, _, param_name = key.rpartition(".")
        dims[key] = module_dims.get(module_name, {}).get(param_name)
    return dims


def vocab_parallel_keys(model: nn.Module) -> list[str]:
    """State-dict keys whose dim 0 is the (padded) vocabulary: the token embedding and the head."""
    names = {n for n, _, s in _plan_matches(model) if s in (VOCAB_EMBEDDING, VOCAB_HEAD)}
    return [k for k in model.state_dict(keep_vars=True) if k.rpartition(".")[0] in names]


def check_tensor_parallel(model: nn.Module, tp: int) -> None:
    """Raise UsageError naming every config field that `tp` does not divide."""
    _plan_matches(model)  # raises TypeError for unknown models
    c = model.config
    bad = [f"{name}={value}" for name, value in c.tp_dims().items() if value % tp]
    if bad:
        hint = ""
        if c.padded_vocab_size % tp:
            hint = (
                f"; pad the vocabulary for this TP with pad_vocab_size({c.vocab_size}, tp={tp}) = "
                f"{pad_vocab_size(c.vocab_size, tp)} (from_preset(..., tp={tp}) does it)"
            )
        raise UsageError(
            f"tensor parallel size {tp} does not divide {', '.join(bad)} of "
            f"{type(model).__name__}: "
            f"each rank must hold whole heads, an equal slice of the FFN and of the vocabulary; "
            f"choose a TP that divides them or change the model config{hint}"
        )


def _install_region(module: nn.Module, region: Region, info: TPInfo) -> None:
    signature = inspect.signature(module.forward)

    def pre_hook(mod, args, kwargs):
        bound = signature.bind(*args, **kwargs)
        device = None
        for name in region.inputs:
            t = bound.arguments.get(name)
            if isinstance(t, torch.Tensor):
                enter = (gather_from_sequence_parallel_region if info.sequence_parallel
                         else copy_to_tp_region)  # fmt: skip
                bound.arguments[name] = enter(t, info.group)
                device = t.device
        if mod.training:
            info.rng.enter(device if device is not None else torch.device("cpu"))
        return bound.args, bound.kwargs

    def post_hook(mod, args, output):
        if mod.training:
            info.rng.exit()

    module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    module.register_forward_hook(post_hook)


def _sequence_parallel_plan(model: nn.Module) -> dict[re.Pattern, str]:
    plan = architecture_of(model).sequence_parallel_plan
    if plan is None:
        supported = ", ".join(
            a.model.__name__ for a in ARCHITECTURES.values() if a.sequence_parallel_plan
        )
        raise ConfigError(
            f"{{sequence_parallel}} is not implemented for {type(model).__name__} "
            f"(only {supported}); train it without the flag",
            "sequence_parallel",
        )
    compiled = {compile_pattern(pat): style for pat, style in plan.items()}
    names = [n for n, _ in model.named_modules()]
    unused = [rx.pattern for rx in compiled if not any(rx.match(n) for n in names)]
    if unused:
        raise RuntimeError(
            f"{type(model).__name__} sequence-parallel patterns match nothing: {unused}"
        )
    return compiled


def apply_tensor_parallel(
    model: nn.Module,
    tp_group: dist.ProcessGroup | None,
    *,
    dropout_seed: int = 0,
    sequence_parallel: bool = False,
) -> nn.Module:
    """Shard `model` (GPT or MT5) in place over `tp_group` and return it; None = TP 1, model
    unchanged.

    Build the full model with the same seed on every rank first. Dropout inside attention/FFN
    regions then uses a per-rank RNG seeded with dropout_seed + 2718 + tp_rank.
    """
    _plan_matches(model)  # unknown model types fail the same way at TP 1 and TP > 1
    if tp_group is None:
        return model
    if getattr(model, "_tp_info", None) is not None:
        raise UsageError("apply_tensor_parallel was already applied to this model")
    tp, rank = dist.get_world_size(tp_group), dist.get_rank(tp_group)
    check_tensor_parallel(model, tp)
    sp_plan = _sequence_parallel_plan(model) if sequence_parallel else {}
    info = TPInfo(tp_group, tp, rank, RankRNG(dropout_seed + 2718 + rank), sequence_parallel)

    # parameters shared by several names (GPT's tied wte / lm_head), to re-tie after sharding
    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    tied = [names for names in by_id.values() if len(names) > 1]

    for name, module, style in _plan_matches(model):
        if isinstance(style, Region):
            _install_region(module, style, info)
            continue
        if style in (COLWISE, VOCAB_HEAD):
            new = ColumnParallelLinear(
                module,
                tp_group,
                copy_input=(style == VOCAB_HEAD),
                sequence_parallel=sequence_parallel,
            )
        elif style == ROWWISE:
            new = RowParallelLinear(module, tp_group, sequence_parallel=sequence_parallel)
        elif style == VOCAB_EMBEDDING:
            new = VocabParallelEmbedding(module, tp_group)
        elif style == HEAD_TABLE:
            module.weight = shard_parameter(module.weight, 1, tp_group)
            module.embedding_dim = module.weight.shape[1]
            continue
        else:
            raise ValueError(f"unknown tensor-parallel style {style!r} for {name}")
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new)

    for names in tied:
        first = model.get_parameter(names[0])
        for other in names[1:]:
            owner, _, pname = other.rpartition(".")
            setattr(model.get_submodule(owner), pname, first)
    for name, module in model.named_modules():
        style = next((st for rx, st in sp_plan.items() if rx.match(name)), None)
        if style == SEQ_NORM:
            for param in module.parameters():
                param.sequence_parallel = True
        elif style in (SEQ_DROPOUT, SEQ_SPLIT_DROPOUT):
            new = SequenceParallelDropout(
                module.p, tp_group, split_input=(style == SEQ_SPLIT_DROPOUT)
            )
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, new)
    model._tp_info = info
    return model
