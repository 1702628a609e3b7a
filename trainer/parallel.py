"""Megatron-style tensor parallelism on plain tensors (reference/tensor-parallel.md §3).

`apply_tensor_parallel(model, tp_group)` rewrites a GPT, GPT-J or MT5 in place following a
per-model plan (module name pattern -> style, torchtitan v0.2 style): q/k/v and fc/wi_0/wi_1 become
column-parallel, o/c_proj/wo row-parallel, the (padded) vocabulary is split across ranks in the
embedding and the head, and mT5's relative-bias table is split by heads. Every sharded layer keeps
its chunk of the full weight, so with the same seed the TP=2 weights are bit-identical chunks of the
TP=1 model. The head returns this rank's slice of the logits; `cross_entropy(..., tp_group=)`
computes the loss without gathering them.

Collectives (gloo or NCCL) live only in `_Copy` (identity forward, all-reduce of the gradient),
`_Reduce` (all-reduce forward, identity backward) and `_Gather` (all-gather on the last dim) and the
cross-entropy. A `Region` is a module whose inputs are replicated activations: they are `_Copy`-ed
once on entry (one gradient all-reduce for q, k and v together) and dropout inside runs on a
per-rank RNG (seed + 2718 + tp_rank); dropout outside regions uses the global RNG, which the caller
seeds equally on all TP ranks. TP = 1 (tp_group None) needs no process group: the model is left as
it is.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from dataprep.errors import UsageError
from trainer.models import GPT, GPTJ, MT5, pad_vocab_size

__all__ = [
    "ColumnParallelLinear",
    "RowParallelLinear",
    "VocabParallelEmbedding",
    "apply_recompute",
    "apply_tensor_parallel",
    "check_tensor_parallel",
    "clip_grad_norm_",
    "cross_entropy",
    "finalize_grads",
    "full_state_dict",
    "gather_from_tp_region",
    "get_rng_state",
    "load_full_state_dict",
    "pad_vocab_size",
    "parallelize",
    "set_rng_state",
    "shard_dims",
    "vocab_parallel_keys",
    "vocab_parallel_cross_entropy",
]


# ------------------------------------------------------------------------------------------------
# Collectives as autograd functions


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
    dist.reduce_scatter_tensor(out, torch.cat(chunks, dim=0), group=group)
    return out


def _seq_chunk(x: torch.Tensor, group) -> torch.Tensor:
    tp, rank = dist.get_world_size(group), dist.get_rank(group)
    if x.shape[1] % tp:
        raise ValueError(
            f"--sequence-parallel splits the sequence over {tp} TP ranks: the length "
            f"{x.shape[1]} is not a multiple of {tp}"
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


def gather_from_tp_region(x: torch.Tensor, tp_group: dist.ProcessGroup | None) -> torch.Tensor:
    """Full last dimension from per-rank slices (e.g. vocab-parallel logits); identity at TP = 1."""
    return x if tp_group is None else _Gather.apply(x, tp_group)


# ------------------------------------------------------------------------------------------------
# Layers. Each is built from the full nn.Linear / nn.Embedding and keeps its own chunk.


def _chunk_param(full: torch.Tensor, dim: int, group: dist.ProcessGroup) -> nn.Parameter:
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
        self.weight = _chunk_param(full.weight, 0, group)  # (out / tp, in)
        self.bias = None if full.bias is None else _chunk_param(full.bias, 0, group)
        self.in_features, self.out_features = self.weight.shape[1], self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.copy_input:
            x = (_GatherSeq if self.sequence_parallel else _Copy).apply(x, self.group)
        y = F.linear(x, self.weight, self.bias)
        return _Gather.apply(y, self.group) if self.gather_output else y

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
        self.weight = _chunk_param(full.weight, 1, group)  # (out, in / tp)
        self.bias = None if full.bias is None else nn.Parameter(full.bias.detach().clone())
        if self.bias is not None and sequence_parallel:
            self.bias.sequence_parallel = True  # added to a part of T: gradients summed over TP
        self.in_features, self.out_features = self.weight.shape[1], self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduce = _ReduceScatterSeq if self.sequence_parallel else _Reduce
        y = reduce.apply(F.linear(x, self.weight), self.group)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features} (local), out_features={self.out_features}"


class VocabParallelEmbedding(nn.Module):
    """Rank r holds rows [r * V/tp, (r+1) * V/tp); ids outside give zeros, then the ranks' rows are
    summed."""

    def __init__(self, full: nn.Embedding, group: dist.ProcessGroup) -> None:
        super().__init__()
        self.group = group
        self.weight = _chunk_param(full.weight, 0, group)  # (V / tp, C)
        self.num_embeddings, self.embedding_dim = self.weight.shape
        self.vocab_start = dist.get_rank(group) * self.num_embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.vocab_start
        outside = (local < 0) | (local >= self.num_embeddings)
        x = F.embedding(local.masked_fill(outside, 0), self.weight)
        x = x.masked_fill(outside.unsqueeze(-1), 0.0)
        return _Reduce.apply(x, self.group)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings} (local, from {self.vocab_start}), {self.embedding_dim}"


# ------------------------------------------------------------------------------------------------
# Per-rank dropout RNG inside TP regions (Megatron's "model-parallel RNG tracker", CPU and CUDA)


class _RankRNG:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.states: dict[str, torch.Tensor] = {}  # device -> generator state between uses
        self._saved: list[tuple[torch.device, torch.Tensor]] = []

    @staticmethod
    def _get(device: torch.device) -> torch.Tensor:
        return torch.get_rng_state() if device.type == "cpu" else torch.cuda.get_rng_state(device)

    @staticmethod
    def _set(device: torch.device, state: torch.Tensor) -> None:
        if device.type == "cpu":
            torch.set_rng_state(state)
        else:
            torch.cuda.set_rng_state(state, device)

    def enter(self, device: torch.device) -> None:
        key = str(device)
        if key not in self.states:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            self.states[key] = g.get_state()
        self._saved.append((device, self._get(device)))
        self._set(device, self.states[key])

    def exit(self) -> None:
        device, saved = self._saved.pop()
        self.states[str(device)] = self._get(device)
        self._set(device, saved)


@dataclass
class _TPInfo:
    group: dist.ProcessGroup
    tp: int
    rank: int
    rng: _RankRNG
    sequence_parallel: bool = False


def get_rng_state(model: nn.Module) -> dict:
    """Global torch RNG state(s) plus the model's per-rank TP dropout RNG, for checkpoints."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    info = getattr(model, "_tp_info", None)
    if info is not None:
        state["tp"] = {k: v.clone() for k, v in info.rng.states.items()}
    return state


def set_rng_state(model: nn.Module, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    info = getattr(model, "_tp_info", None)
    if info is not None and "tp" in state:
        info.rng.states = {k: v.clone() for k, v in state["tp"].items()}


# ------------------------------------------------------------------------------------------------
# Plans: module-name pattern ("*" = one name component) -> style


@dataclass(frozen=True)
class Region:
    """A module entered with replicated activations: `_Copy` the named forward inputs, per-rank
    dropout."""

    inputs: tuple[str, ...] = ("x",)


COLWISE = "colwise"  # ColumnParallelLinear inside a Region (the Region copied its input)
ROWWISE = "rowwise"  # RowParallelLinear: all-reduces its output
VOCAB_EMBEDDING = "vocab_embedding"  # VocabParallelEmbedding
VOCAB_HEAD = (
    "vocab_head"  # ColumnParallelLinear copying its own input, output = vocab-sharded logits
)
HEAD_TABLE = (
    "head_table"  # Embedding(num_buckets, heads) split along heads (dim 1); no communication
)

GPT_PLAN: dict[str, object] = {
    "transformer.wte": VOCAB_EMBEDDING,
    "transformer.h.*.attn": Region(("x",)),
    "transformer.h.*.attn.q": COLWISE,
    "transformer.h.*.attn.k": COLWISE,
    "transformer.h.*.attn.v": COLWISE,
    "transformer.h.*.attn.c_proj": ROWWISE,
    "transformer.h.*.mlp": Region(("x",)),
    "transformer.h.*.mlp.c_fc": COLWISE,
    "transformer.h.*.mlp.c_proj": ROWWISE,
    "lm_head": VOCAB_HEAD,  # tied to transformer.wte: both get the same shard, re-tied after
}

MT5_PLAN: dict[str, object] = {
    "shared": VOCAB_EMBEDDING,
    "*.block.*.layer.0.SelfAttention": Region(("x",)),
    "decoder.block.*.layer.1.EncDecAttention": Region(("x", "kv")),
    "*.block.*.layer.*.*.q": COLWISE,
    "*.block.*.layer.*.*.k": COLWISE,
    "*.block.*.layer.*.*.v": COLWISE,
    "*.block.*.layer.*.*.o": ROWWISE,
    "*.block.0.layer.0.SelfAttention.relative_attention_bias": HEAD_TABLE,
    "*.block.*.layer.*.DenseReluDense": Region(("x",)),
    "*.block.*.layer.*.DenseReluDense.wi_0": COLWISE,
    "*.block.*.layer.*.DenseReluDense.wi_1": COLWISE,
    "*.block.*.layer.*.DenseReluDense.wo": ROWWISE,
    "lm_head": VOCAB_HEAD,
}

GPTJ_PLAN: dict[str, object] = {
    "transformer.wte": VOCAB_EMBEDDING,
    # attention and MLP read the same ln_1 output; each region copies it for its own backward
    "transformer.h.*.attn": Region(("x",)),
    "transformer.h.*.attn.q_proj": COLWISE,
    "transformer.h.*.attn.k_proj": COLWISE,
    "transformer.h.*.attn.v_proj": COLWISE,
    "transformer.h.*.attn.out_proj": ROWWISE,
    "transformer.h.*.mlp": Region(("x",)),
    "transformer.h.*.mlp.fc_in": COLWISE,
    "transformer.h.*.mlp.fc_out": ROWWISE,
    "lm_head": VOCAB_HEAD,  # untied, with a bias sharded like its rows
}

PLANS: dict[type, dict[str, object]] = {GPT: GPT_PLAN, GPTJ: GPTJ_PLAN, MT5: MT5_PLAN}

# --sequence-parallel: what lies outside the TP regions and works on 1/tp of the sequence. The
# embedding dropout is where the sequence is split; the norms' weights see a part of T each.
SEQ_SPLIT_DROPOUT = "seq_split_dropout"  # split the replicated input along T, then dropout
SEQ_DROPOUT = "seq_dropout"  # dropout on this rank's part of T
SEQ_NORM = "seq_norm"  # parameters whose gradients are summed over the TP ranks

SEQUENCE_PARALLEL_PLANS: dict[type, dict[str, str]] = {
    GPT: {
        "transformer.drop": SEQ_SPLIT_DROPOUT,
        "transformer.h.*.drop": SEQ_DROPOUT,
        "transformer.h.*.ln_1": SEQ_NORM,
        "transformer.h.*.ln_2": SEQ_NORM,
        "transformer.ln_f": SEQ_NORM,
    },
    GPTJ: {
        "transformer.drop": SEQ_SPLIT_DROPOUT,
        "transformer.h.*.drop": SEQ_DROPOUT,
        "transformer.h.*.ln_1": SEQ_NORM,
        "transformer.ln_f": SEQ_NORM,
    },
}


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
            x = _ScatterSeq.apply(x, self.group)
        if not self.training or self.p == 0.0:
            return x
        tp, rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        full = (x.shape[0], x.shape[1] * tp, *x.shape[2:])
        mask = F.dropout(torch.ones(full, dtype=x.dtype, device=x.device), self.p, True)
        return x * mask.narrow(1, rank * x.shape[1], x.shape[1]).clone()  # keep the slice only

    def extra_repr(self) -> str:
        return f"p={self.p}, split_input={self.split_input}"


# parameter name -> shard dim, per style (missing = replicated)
_STYLE_DIMS = {
    COLWISE: {"weight": 0, "bias": 0},
    VOCAB_HEAD: {"weight": 0, "bias": 0},
    ROWWISE: {"weight": 1},
    VOCAB_EMBEDDING: {"weight": 0},
    HEAD_TABLE: {"weight": 1},
}


def _compile_pattern(pattern: str) -> re.Pattern:
    """A module-name pattern, "*" = one name component."""
    return re.compile("^" + re.escape(pattern).replace(r"\*", r"[^.]+") + "$")


def _plan_matches(model: nn.Module) -> list[tuple[str, nn.Module, object]]:
    """(module name, module, style) for every module a plan pattern matches; each pattern must
    match."""
    plan = next((p for cls, p in PLANS.items() if isinstance(model, cls)), None)
    if plan is None:
        raise TypeError(
            f"no tensor-parallel plan for {type(model).__name__}; expected one of "
            f"{[c.__name__ for c in PLANS]}"
        )
    compiled = [(pat, _compile_pattern(pat), style) for pat, style in plan.items()]
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
    module_dims = {name: _STYLE_DIMS.get(style, {}) for name, _, style in _plan_matches(model)}
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


def _install_region(module: nn.Module, region: Region, info: _TPInfo) -> None:
    signature = inspect.signature(module.forward)

    def pre_hook(mod, args, kwargs):
        bound = signature.bind(*args, **kwargs)
        device = None
        for name in region.inputs:
            t = bound.arguments.get(name)
            if isinstance(t, torch.Tensor):
                enter = _GatherSeq if info.sequence_parallel else _Copy
                bound.arguments[name] = enter.apply(t, info.group)
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
    plan = next((p for cls, p in SEQUENCE_PARALLEL_PLANS.items() if isinstance(model, cls)), None)
    if plan is None:
        supported = ", ".join(c.__name__ for c in SEQUENCE_PARALLEL_PLANS)
        raise UsageError(
            f"--sequence-parallel is not implemented for {type(model).__name__} (only {supported})"
            "; train it without the flag"
        )
    compiled = {_compile_pattern(pat): style for pat, style in plan.items()}
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
    info = _TPInfo(tp_group, tp, rank, _RankRNG(dropout_seed + 2718 + rank), sequence_parallel)

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
            module.weight = _chunk_param(module.weight, 1, tp_group)
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


# ------------------------------------------------------------------------------------------------
# Activation recompute (Megatron's --recompute-granularity), applied after the sharding

# module-name pattern of the unit each granularity recomputes: "full" keeps only each transformer
# block's input and reruns the block in the backward; "selective" reruns only the core attention
# (trainer/models/attention.py), whose probabilities are the largest activation for the fewest FLOPs
RECOMPUTE_UNITS: dict[type, dict[str, str]] = {
    GPT: {"full": "transformer.h.*", "selective": "transformer.h.*.attn.core"},
    GPTJ: {"full": "transformer.h.*", "selective": "transformer.h.*.attn.core"},
    MT5: {"full": "*.block.*", "selective": "*.block.*.layer.*.*.core"},
}


def _tracker_contexts(info: _TPInfo | None):
    """`context_fn` for torch.utils.checkpoint: the recompute sees the per-rank TP dropout RNG as
    the forward did (the global RNG is restored by checkpoint itself), then the live one returns.

    As Megatron's CheckpointFunction does with its RNG tracker: without it a recomputed region
    would draw new dropout masks and the gradient would not be the forward's.
    """
    if info is None:
        return contextlib.nullcontext(), contextlib.nullcontext()
    rng = info.rng
    snapshot: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def forward():
        snapshot.update({k: v.clone() for k, v in rng.states.items()})
        yield

    @contextlib.contextmanager
    def recompute():
        live, depth = rng.states, len(rng._saved)
        rng.states = {k: v.clone() for k, v in snapshot.items()}
        try:
            yield
        finally:  # a recompute may stop early (inside a region): drop what it entered
            del rng._saved[depth:]
            rng.states = live

    return forward(), recompute()


def apply_recompute(model: nn.Module, granularity: str | None) -> nn.Module:
    """Activation checkpointing of `model`'s recompute units (see RECOMPUTE_UNITS) in place.

    Each unit's forward runs under torch.utils.checkpoint (non-reentrant) while gradients are
    enabled, so it saves only its inputs and reruns in the backward with the forward's RNG
    states, the per-rank TP one included; the losses and gradients are those of the plain run.
    Inference (no grad) is unchanged. None = nothing to do.
    """
    if granularity is None:
        return model
    units = next((u for cls, u in RECOMPUTE_UNITS.items() if isinstance(model, cls)), None)
    if units is None or granularity not in units:
        raise UsageError(
            f"no recompute unit {granularity!r} for {type(model).__name__}; expected one of "
            f"{sorted(units or [])}"
        )
    from torch.utils.checkpoint import checkpoint

    rx = _compile_pattern(units[granularity])
    info = getattr(model, "_tp_info", None)
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
                _inner, *args, use_reentrant=False, context_fn=lambda: _tracker_contexts(info),
                **kwargs,
            )  # fmt: skip

        module.forward = forward
    return model


def parallelize(
    model: nn.Module,
    tp_group: dist.ProcessGroup | None,
    *,
    dropout_seed: int = 0,
    sequence_parallel: bool = False,
    recompute_granularity: str | None = None,
) -> nn.Module:
    """Every parallelism and memory transform of a training run, in order: tensor parallelism
    (apply_tensor_parallel, with --sequence-parallel's split of the sequence), then activation
    recompute (apply_recompute). The model's own code knows none of them."""
    apply_tensor_parallel(
        model, tp_group, dropout_seed=dropout_seed, sequence_parallel=sequence_parallel
    )
    return apply_recompute(model, recompute_granularity)


# ------------------------------------------------------------------------------------------------
# Loss, clipping


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
# Full (unsharded) state dicts


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
