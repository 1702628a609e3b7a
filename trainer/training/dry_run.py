"""`train --dry-run`: the model and layout resolved as a run would resolve them, and the per-rank
memory estimate of trainer/training/memory.py printed as a table (`format_table`) with the verdict
against --gpu-memory. Reads at most the datasets' manifests and starts no rank.
"""

from __future__ import annotations

import sys
from typing import Any

from trainer.training.memory import GB, MemoryEstimate, MemoryInputs, _kind, estimate_memory


def _gib(n: float) -> str:
    return f"{n / GB:,.2f}"


def format_table(e: MemoryEstimate, *, gpu_memory_gb: float, label: str) -> str:
    """The `train --dry-run` report: the run, the parameters, the per-rank bytes, the verdict."""
    x, mc = e.inputs, e.inputs.model_config
    tp, dp = x.tensor_model_parallel_size, x.data_parallel_size
    kind = _kind(mc)
    if kind == "mt5":
        lengths = f"encoder length {x.seq_length}, decoder length {x.decoder_seq_length}"
        dropout = f"dropout {mc.dropout_rate:g}"
    else:
        lengths = f"sequence length {x.seq_length}"
        dropout = f"dropout {mc.dropout:g}, attention dropout {mc.attn_dropout:g}"
    flags = [
        "bf16 autocast" if x.bf16 else "fp32",
        f"recompute {x.recompute_granularity or 'off'}",
        f"sequence parallel {'on' if x.sequence_parallel else 'off'}",
        f"distributed optimizer {'on' if x.use_distributed_optimizer else 'off'}",
    ]
    if e.attention_path == "fused":
        attention = "SDPA fused path (no dropout, no mask): no T x T probabilities saved"
    elif kind == "mt5":
        why = "the self-attention's position bias needs a gradient"
        if mc.dropout_rate > 0:
            why += "; dropout > 0"
        attention = f"SDPA {e.attention_path} path, B x heads x T x S probabilities saved ({why})"
    else:
        attention = (
            f"SDPA math path, B x heads x T x T probabilities saved (attention dropout "
            f"{mc.attn_dropout:g} > 0; --attention-dropout 0 takes the fused path)"
        )
    rows = [
        ("weights (fp32)", e.weights),
        ("gradients (fp32)", e.gradients),
        (f"AdamW states (fp32{', / DP' if x.use_distributed_optimizer else ''})", e.optimizer),
        (f"activations (one micro batch of {x.micro_batch_size})", e.activations),
        ("  blocks, embeddings, final norm", e.layer_activations),
        ("  logits and the loss's softmax buffer", e.logits),
        ("  weight copies kept for the backward", e.weight_copies),
        ("total", e.total),
    ]
    width = max(len(r[0]) for r in rows) + 2
    lines = [
        f"dry run: {kind} {label}, TP={tp} x DP={dp} = {tp * dp} rank(s), micro batch "
        f"{x.micro_batch_size}, {lengths}",
        f"  {', '.join(flags)}; {dropout}",
        f"parameters: {e.parameters:,} ({e.parameters / 1e9:.2f} B) as stored (padded vocabulary "
        f"{mc.padded_vocab_size:,} rows); {e.parameters_per_rank:,} on each rank",
        f"attention: {attention}",
        f"{'per rank':<{width}}{'GiB':>10}",
    ]
    lines += [f"  {name:<{width - 2}}{_gib(n):>10}" for name, n in rows]
    share = e.total / (gpu_memory_gb * GB)
    if e.fits(gpu_memory_gb):
        lines.append(f"fits: {_gib(e.total)} of {gpu_memory_gb:g} GiB per rank ({share:.0%})")
    else:
        lines.append(
            f"does not fit: {_gib(e.total)} GiB per rank > --gpu-memory {gpu_memory_gb:g} "
            f"({share:.0%}); try --recompute-granularity, a larger --tensor-model-parallel-size "
            "or a smaller --micro-batch-size"
        )
    return "\n".join(lines)


def dry_run(config: Any) -> int:
    """`train --dry-run`: resolve the model and layout as a run would, print the estimate; 0 when
    it fits --gpu-memory, 1 when not. Reads at most the datasets' manifests; starts no rank."""
    from trainer.config import check_tp_layout
    from trainer.launch import check_world, dist_env
    from trainer.training.preflight import (
        check_batch_sizes,
        check_lengths,
        check_packed_flags,
        check_sequence_parallel,
        decoder_length,
        inspect_data,
    )
    from trainer.training.resume import run_model_config

    tp = config.tensor_model_parallel_size
    env = dist_env()
    world = config.nproc_per_node or (env.world_size if env is not None else tp)
    dp = check_world(world, tp)
    check_batch_sizes(config, dp)
    vocab = inspect_data(config).vocab_size if config.data_path else None
    kind, mc, _ = run_model_config(config, vocab)
    check_tp_layout(kind, mc, tp)
    seq = check_lengths(config, kind, mc)
    check_packed_flags(config, mc)
    check_sequence_parallel(config, mc, seq)  # what training refuses, the dry run refuses too
    dec = decoder_length(config) if kind == "mt5" else 0
    e = estimate_memory(
        MemoryInputs(
            mc,
            config.micro_batch_size,
            seq,
            dec,
            tensor_model_parallel_size=tp,
            data_parallel_size=dp,
            bf16=config.bf16,
            recompute_granularity=config.recompute_granularity,
            sequence_parallel=config.sequence_parallel,
            use_distributed_optimizer=config.use_distributed_optimizer,
        )
    )
    from trainer.training.reporting import model_label

    print(format_table(e, gpu_memory_gb=config.gpu_memory, label=model_label(config)))
    sys.stdout.flush()
    return 0 if e.fits(config.gpu_memory) else 1
