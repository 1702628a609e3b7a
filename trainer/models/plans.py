"""How each model is parallelised, as data: module-name pattern ("*" = one name component) ->
style, torchtitan v0.2 style (`"attention.wq": colwise_parallel()`).

The Architecture registry (trainer/models/__init__.py) holds each model's plans and
trainer/parallel/ applies them; the plans being data, neither the models nor the registry import
trainer/parallel/.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Region:
    """A module entered with replicated activations: the named forward inputs are copied into the
    TP region (their gradients all-reduced), dropout inside runs on the per-rank RNG."""

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

# --sequence-parallel: what lies outside the TP regions and works on 1/tp of the sequence. The
# embedding dropout is where the sequence is split; the norms' weights see a part of T each.
SEQ_SPLIT_DROPOUT = "seq_split_dropout"  # split the replicated input along T, then dropout
SEQ_DROPOUT = "seq_dropout"  # dropout on this rank's part of T
SEQ_NORM = "seq_norm"  # parameters whose gradients are summed over the TP ranks

GPT_SEQUENCE_PARALLEL_PLAN: dict[str, str] = {
    "transformer.drop": SEQ_SPLIT_DROPOUT,
    "transformer.h.*.drop": SEQ_DROPOUT,
    "transformer.h.*.ln_1": SEQ_NORM,
    "transformer.h.*.ln_2": SEQ_NORM,
    "transformer.ln_f": SEQ_NORM,
}
GPTJ_SEQUENCE_PARALLEL_PLAN: dict[str, str] = {
    "transformer.drop": SEQ_SPLIT_DROPOUT,
    "transformer.h.*.drop": SEQ_DROPOUT,
    "transformer.h.*.ln_1": SEQ_NORM,
    "transformer.ln_f": SEQ_NORM,
}

MT5_SEQUENCE_PARALLEL_PLAN: dict[str, str] = {
    "*.dropout": SEQ_SPLIT_DROPOUT,  # encoder's and decoder's embedded tokens
    "*.block.*.layer.*.dropout": SEQ_DROPOUT,
    "*.block.*.layer.*.layer_norm": SEQ_NORM,
    "*.final_layer_norm": SEQ_NORM,
    "*.final_dropout": SEQ_DROPOUT,
}
# the relative-position bias is computed for the whole sequence (the stack reads T before its
# dropout splits it) and used inside the attention regions, which gather the sequence; the
# cross-attention region gathers the encoder's output (its "kv") as well


# module-name pattern of the unit each granularity recomputes: "full" keeps only each transformer
# block's input and reruns the block in the backward; "selective" reruns only the core attention
# (trainer/models/attention.py), whose probabilities are the largest activation for the fewest FLOPs
GPT_RECOMPUTE_UNITS = {"full": "transformer.h.*", "selective": "transformer.h.*.attn.core"}
GPTJ_RECOMPUTE_UNITS = {"full": "transformer.h.*", "selective": "transformer.h.*.attn.core"}
MT5_RECOMPUTE_UNITS = {"full": "*.block.*", "selective": "*.block.*.layer.*.*.core"}
