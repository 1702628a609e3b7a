"""Per-rank memory of a training run: an estimate from the model config and the parallel layout
(`estimate_memory`, printed by `dataprep train --dry-run` in trainer/training/dry_run.py), which
the tests hold to the real peak of a few CPU training steps (`measure_peak`, in
trainer/training/memory_measure.py).

The estimate models this trainer, not Megatron: fp32 weights and gradients (4 + 4 bytes per
parameter), AdamW's exp_avg and exp_avg_sq in fp32 (8 bytes, split over DP with
--use-distributed-optimizer), TP-sharded matrices divided by TP and the replicated ones (norms,
biases of row-parallel layers, position table) not. Activations are the tensors autograd saves
for one micro batch, tensor by tensor, as the models in trainer/models/ create them (checked with
`torch.autograd.graph.saved_tensors_hooks`): norm inputs and the fp32 residual stream in fp32,
linear inputs in the autocast dtype, the bf16 weight copies autocast keeps until the backward,
the logits plus the one fp32 (tokens x V/TP) softmax buffer of the vocab-parallel cross-entropy.

Attention (F.scaled_dot_product_attention on CPU): with dropout on the probabilities, or a mask
that needs a gradient (mT5's learned position bias), it takes the math path, which saves the
B x heads x T x S probabilities (and, with dropout, the fp32 mask and the dropped probabilities)
and fp32 copies of q, k, v; otherwise the fused (flash) path saves q, k, v, the output and one
log-sum-exp per row. Peak = weights + gradients + optimizer states + activations: an upper bound,
since the gradients of the blocks are made while their activations are freed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dataprep.errors import UsageError

GB = 1024**3  # the table prints GiB, the unit GPU memory is sold in ("80 GB" = 80 GiB)


@dataclass(frozen=True, slots=True)
class MemoryInputs:
    model_config: Any  # GPTConfig | GPTJConfig | MT5Config, vocabulary padded for the TP size
    micro_batch_size: int
    seq_length: int  # GPT: tokens per sample; mT5: encoder ids per sample
    decoder_seq_length: int = 0  # mT5: decoder ids per sample
    tensor_model_parallel_size: int = 1
    data_parallel_size: int = 1
    bf16: bool = False
    recompute_granularity: str | None = None  # None | "full" | "selective"
    sequence_parallel: bool = False
    use_distributed_optimizer: bool = False

    def __post_init__(self) -> None:
        for name in ("micro_batch_size", "seq_length", "tensor_model_parallel_size",
                     "data_parallel_size"):  # fmt: skip
            if getattr(self, name) < 1:
                raise UsageError(f"MemoryInputs.{name} must be >= 1, got {getattr(self, name)}")
        if self.recompute_granularity not in (None, "full", "selective"):
            raise UsageError(f"recompute_granularity {self.recompute_granularity!r}")


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    inputs: MemoryInputs
    parameters: int  # whole model as stored (padded vocabulary rows included, tied weights once)
    parameters_per_rank: int  # TP shards plus the replicated parameters
    weights: int  # bytes per rank, fp32
    gradients: int  # fp32
    optimizer: int  # AdamW exp_avg + exp_avg_sq, fp32
    activations: int  # one micro batch: layer_activations + logits + weight_copies
    layer_activations: int  # saved by the embeddings, blocks and final norm
    logits: int  # logits, their fp32 copy under bf16, the cross-entropy's softmax buffer
    weight_copies: int  # bf16 casts autocast keeps for the backward (GPT: the stacked q,k,v too)
    attention_path: str  # "math" or "fused": which SDPA path the estimate assumes

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def fits(self, gpu_memory_gb: float) -> bool:
        return self.total <= gpu_memory_gb * GB


# ------------------------------------------------------------------------------------ parameters
def _kind(mc: Any) -> str:
    """The architecture name ("gpt", "gptj", "mt5") whose memory model applies to `mc`."""
    from trainer.models import architecture_of

    return architecture_of(mc).name


def parameter_counts(mc: Any) -> tuple[int, int]:
    """(sharded, replicated) parameter counts of the whole model, by the plans of
    trainer/models/plans.py: the sharded ones are split over TP, the replicated ones are whole on
    every rank."""
    kind = _kind(mc)
    V = mc.padded_vocab_size
    if kind == "gpt":
        C, b = mc.n_embd, int(mc.bias)
        # q,k,v + c_fc (weights and biases by rows), c_proj x2 (weights by columns)
        sharded = V * C + mc.n_layer * (12 * C * C + b * 7 * C)
        # wpe; ln_1, ln_2 (weight, bias); the two row-parallel biases; ln_f
        replicated = mc.block_size * C + mc.n_layer * (2 * C + b * 4 * C) + C + b * C
        return sharded, replicated
    if kind == "gptj":
        C, F = mc.n_embd, mc.n_inner
        sharded = 2 * V * C + V + mc.n_layer * (4 * C * C + 2 * C * F + F)  # wte, lm_head (+bias)
        replicated = mc.n_layer * (2 * C + C) + 2 * C  # ln_1, fc_out bias; ln_f
        return sharded, replicated
    d, inner, f = mc.d_model, mc.num_heads * mc.d_kv, mc.d_ff
    attn, ffn = 4 * d * inner, 3 * d * f
    table = mc.relative_attention_num_buckets * mc.num_heads  # one per stack, split by heads
    sharded = 2 * V * d + mc.num_layers * (attn + ffn) + mc.num_decoder_layers * (2 * attn + ffn)
    sharded += 2 * table
    replicated = (2 * mc.num_layers + 3 * mc.num_decoder_layers + 2) * d  # RMSNorm weights
    return sharded, replicated


# ----------------------------------------------------------------------------------- activations
@dataclass
class _Saved:
    """Bytes saved for the backward, by where they live under tensor parallelism."""

    inside: float = 0.0  # in a TP region: 1/TP on each rank
    outside: float = 0.0  # replicated (norms, residuals, residual dropout); 1/TP with SP
    core: float = 0.0  # the core attention's own tensors (inside); not kept with selective

    def __iadd__(self, o: _Saved) -> _Saved:
        self.inside, self.outside, self.core = (
            self.inside + o.inside,
            self.outside + o.outside,
            self.core + o.core,
        )
        return self

    def scaled(self, k: float) -> _Saved:
        return _Saved(self.inside * k, self.outside * k, self.core * k)


def _attention(B: int, T: int, S: int, heads: int, inner: int, a: int, *, math: bool,
               dropout: bool, selective: bool) -> _Saved:  # fmt: skip
    """One SDPA call of T query over S key positions per sample. Math path: fp32 copies of q, k, v,
    the probabilities (with dropout also the fp32 mask and the dropped probabilities) and the
    output copied to (B, T, heads * d) for the out-projection. Fused: q, k, v (the projections'
    outputs), the output and a log-sum-exp per row. Selective recompute keeps only q, k, v (the
    recomputation's inputs) and the output."""
    qkv = B * (T + 2 * S) * inner
    s = _Saved(inside=B * T * inner * a)
    if math:
        s.core += qkv * 4 + B * heads * T * S * 4 * (3 if dropout else 1)
        if selective:
            s.inside += qkv * a
    else:
        s.inside += qkv * a
        s.core += B * heads * T * 4
    return s


def _norm(N: int, C: int, a: int, *, rms: bool, consumers: int, bf16: bool) -> _Saved:
    """A LayerNorm / RMSNorm: its fp32 input and row statistics (RMSNorm: also the normalised x
    for the weight's gradient), and its output as the next linears save it: one fp32 tensor, or
    under bf16 one bf16 cast per consuming linear (casts of activations are not cached)."""
    out = C * N * (2 * consumers if bf16 else 4)
    return _Saved(outside=N * C * 4 * (2 if rms else 1) + N * 4 * (1 if rms else 2) + out)


def _gpt_layer(mc: Any, B: int, T: int, a: int, tp: int, bf16: bool, selective: bool,
               kind: str) -> tuple[_Saved, float]:  # fmt: skip
    """(saved bytes of one GPT / GPT-J block, its weight copies), at TP 1."""
    N, C, h = B * T, mc.n_embd, mc.n_head
    F = mc.n_inner if kind == "gptj" else 4 * C
    math = mc.attn_dropout > 0
    # GPT-J: one LayerNorm feeding attention and MLP (two bf16 casts); GPT: ln_1 and ln_2
    s = _norm(N, C, a, rms=False, consumers=(3 if kind == "gptj" else 1), bf16=bf16)
    s += _attention(B, T, T, h, C, a, math=math, dropout=math, selective=selective)
    s.inside += 2 * N * F * a  # fc output (GELU input), GELU output (projection input)
    if kind == "gpt":
        s += _norm(N, C, a, rms=False, consumers=1, bf16=bf16)
        # the q, k, v weights stacked for one GEMM: a new tensor the GEMM saves (bf16: its cast);
        # under bf16 autocast also keeps casts of c_proj, c_fc and the MLP's c_proj
        copies = 3 * C * C * (2 if bf16 else 4) + (9 * C * C * 2 if bf16 else 0)
    else:
        copies = (4 * C * C + 2 * C * F) * 2 if bf16 else 0
    if mc.dropout > 0:  # residual dropout masks, in the dtype of the projection's output (a
        # row-parallel bias add promotes bf16 to fp32)
        mask = 4 if (tp > 1 and getattr(mc, "bias", True)) else a
        s.outside += 2 * N * C * mask
    return s, copies


def _mt5_layer(mc: Any, B: int, T: int, S: int, a: int, bf16: bool, selective: bool, *,
               decoder: bool) -> tuple[_Saved, float]:  # fmt: skip
    """One encoder (T = S) or decoder block of T tokens (cross-attention over S encoder tokens)."""
    N, d, h, inner, f = B * T, mc.d_model, mc.num_heads, mc.num_heads * mc.d_kv, mc.d_ff
    p = mc.dropout_rate > 0
    s = _Saved()
    # self-attention: the position bias needs a gradient, so always the math path
    s += _norm(N, d, a, rms=True, consumers=3, bf16=bf16)
    s += _attention(B, T, T, h, inner, a, math=True, dropout=p, selective=selective)
    blocks = 2
    copies = 4 * d * inner
    if decoder:  # cross-attention: a constant mask, so fused unless dropout
        Ns = B * S
        s += _norm(N, d, a, rms=True, consumers=1, bf16=bf16)
        s += _attention(B, T, S, h, inner, a, math=p, dropout=p, selective=selective)
        if bf16:  # k and v cast the (shared, fp32) encoder output each
            s.outside += 2 * Ns * d * 2
        blocks, copies = 3, copies + 4 * d * inner
    s += _norm(N, d, a, rms=True, consumers=2, bf16=bf16)
    s.inside += N * f * a * (5 if p else 4)  # wi_0, wi_1, GELU outputs, product (or mask, dropped)
    copies += 3 * d * f
    if p:
        s.outside += blocks * N * d * a  # residual dropout masks
    return s, (copies * 2 if bf16 else 0)


def _activations(x: MemoryInputs) -> tuple[float, float, float, str]:
    """(layer activations, logits, weight copies) in bytes per rank, and the attention path."""
    mc, tp, B = x.model_config, x.tensor_model_parallel_size, x.micro_batch_size
    kind = _kind(mc)
    a = 2 if x.bf16 else 4
    selective = x.recompute_granularity == "selective"
    sp = tp if x.sequence_parallel else 1
    V = mc.padded_vocab_size

    def per_rank(s: _Saved) -> float:
        core = 0 if selective else s.core
        return (s.inside + core) / tp + s.outside / sp

    if kind in ("gpt", "gptj"):
        T, C = x.seq_length, mc.n_embd
        N = B * T
        layer, copies = _gpt_layer(mc, B, T, a, tp, x.bf16, selective, kind)
        layers = [(layer, copies)] * mc.n_layer
        extra = _Saved(outside=N * 8 + (N * C * 4 if mc.dropout > 0 else 0))  # ids, emb. dropout
        extra += _norm(N, C, a, rms=False, consumers=1, bf16=x.bf16)  # ln_f
        block_tokens = [N] * mc.n_layer
        N_out = N
        path = "math" if mc.attn_dropout > 0 else "fused"
    else:
        S, T, d = x.seq_length, x.decoder_seq_length or 1, mc.d_model
        Ns, Nt = B * S, B * T
        enc = _mt5_layer(mc, B, S, S, a, x.bf16, selective, decoder=False)
        dec = _mt5_layer(mc, B, T, S, a, x.bf16, selective, decoder=True)
        layers = [enc] * mc.num_layers + [dec] * mc.num_decoder_layers
        p = mc.dropout_rate > 0
        extra = _Saved(outside=(Ns + Nt) * 8 + 8 * (S * S + T * T))  # ids, position buckets
        if p:  # embedding dropout and the dropout after each final norm
            extra.outside += 2 * (Ns + Nt) * d * 4
        extra += _norm(Ns, d, a, rms=True, consumers=0, bf16=x.bf16)
        extra += _norm(Nt, d, a, rms=True, consumers=1, bf16=x.bf16)
        extra.outside += Ns * d * 4  # the encoder output the cross-attentions read
        if selective:  # the recomputed self-attentions keep their (B, heads, T, T) bias input
            extra.inside += B * mc.num_heads * (S * S + T * T) * 4
        block_tokens = [Ns] * mc.num_layers + [Nt] * mc.num_decoder_layers
        N_out = Nt
        path = "math" if p else "math (self-attention), fused (cross-attention)"
    width = mc.d_model if kind == "mt5" else mc.n_embd
    head = V * width * 2 / tp if x.bf16 else 0  # the head's bf16 weight cast
    # logits (B, T, V/tp) held until the backward, the fp32 copy .float() makes under bf16
    # (alive while the loss is computed), and the softmax buffer the cross-entropy saves
    logits = N_out * V / tp * (a + (4 if x.bf16 else 0) + 4)
    if x.recompute_granularity == "full":
        # each block keeps only its fp32 input; the backward recomputes one block at a time, once
        # the loss's backward has freed the logits: one of the two is alive at a time
        kept = sum(n * width * 4 for n in block_tokens) / sp
        biggest = max(layers, key=lambda lc: per_rank(lc[0]))
        layer_bytes = kept + per_rank(extra) + max(0.0, per_rank(biggest[0]) - logits)
        copies = biggest[1] / tp + head
    else:
        layer_bytes = sum(per_rank(s) for s, _ in layers) + per_rank(extra)
        copies = sum(c for _, c in layers) / tp + head
    return layer_bytes, logits, copies, path


def estimate_memory(inputs: MemoryInputs) -> MemoryEstimate:
    """Per-rank bytes of one training step (see the module docstring for what is modelled)."""
    mc, tp, dp = inputs.model_config, inputs.tensor_model_parallel_size, inputs.data_parallel_size
    sharded, replicated = parameter_counts(mc)
    per_rank = -(-sharded // tp) + replicated
    optimizer = 8 * per_rank
    if inputs.use_distributed_optimizer:
        optimizer = -(-optimizer // dp)
    layers, logits, copies, path = _activations(inputs)
    return MemoryEstimate(
        inputs=inputs,
        parameters=sharded + replicated,
        parameters_per_rank=per_rank,
        weights=4 * per_rank,
        gradients=4 * per_rank,
        optimizer=optimizer,
        activations=int(layers + logits + copies),
        layer_activations=int(layers),
        logits=int(logits),
        weight_copies=int(copies),
        attention_path=path,
    )
