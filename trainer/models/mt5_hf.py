"""mT5 <-> transformers `MT5ForConditionalGeneration`: the same names; the encoder's and the
decoder's `embed_tokens` are `shared`, the head is untied."""

from __future__ import annotations

from typing import Any

from dataprep.errors import DataprepError
from trainer.models.hf_adapter import VOCAB, HFAdapter, Rule
from trainer.models.mt5 import MT5Config


def _rules() -> tuple[Rule, ...]:
    rules = [
        Rule(("shared.weight",), "shared.weight", VOCAB),
        Rule(("lm_head.weight",), "lm_head.weight", VOCAB),
    ]
    for stack, sub in (("encoder", ("layer.0.SelfAttention", "layer.1")),
                       ("decoder", ("layer.0.SelfAttention", "layer.1.EncDecAttention",
                                    "layer.2"))):  # fmt: skip
        b = f"{stack}.block.{{i}}."
        norm = f"{stack}.final_layer_norm.weight"
        rules.append(Rule((norm,), norm))
        for attn in sub[:-1]:
            for x in ("q", "k", "v", "o"):
                rules.append(Rule((b + f"{attn}.{x}.weight",), b + f"{attn}.{x}.weight"))
        for n in range(len(sub)):
            norm = b + f"layer.{n}.layer_norm.weight"
            rules.append(Rule((norm,), norm))
        ff = sub[-1] + ".DenseReluDense."
        for x in ("wi_0", "wi_1", "wo"):
            rules.append(Rule((b + ff + x + ".weight",), b + ff + x + ".weight"))
        bias = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        rules.append(Rule((bias,), bias))
    return tuple(rules)


def to_hf_config(config: MT5Config, *, eos_id: int | None = None, pad_id: int | None = None):
    """`eos_id` / `pad_id` are not used: the mT5 config holds its own."""
    import transformers

    c = transformers.MT5Config(
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        d_kv=config.d_kv,
        d_ff=config.d_ff,
        num_layers=config.num_layers,
        num_decoder_layers=config.num_decoder_layers,
        num_heads=config.num_heads,
        relative_attention_num_buckets=config.relative_attention_num_buckets,
        relative_attention_max_distance=config.relative_attention_max_distance,
        dropout_rate=config.dropout_rate,
        layer_norm_epsilon=config.layer_norm_epsilon,
        feed_forward_proj="gated-gelu",
        pad_token_id=config.pad_token_id,
        eos_token_id=config.eos_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
    )
    # transformers 5 forces tie_word_embeddings=True for mT5 (meaning embed_tokens = shared); our
    # head is untied, and a folder holding both lm_head and shared loads untied
    c.tie_word_embeddings = False
    return c


def from_hf_config(hf: Any) -> MT5Config:
    if getattr(hf, "feed_forward_proj", "gated-gelu") != "gated-gelu":
        raise DataprepError(f"mT5 with feed_forward_proj={hf.feed_forward_proj!r}: only "
                            "gated-gelu (T5 v1.1 / mT5) is supported")  # fmt: skip
    return MT5Config(vocab_size=hf.vocab_size, d_model=hf.d_model, d_kv=hf.d_kv,
                     d_ff=hf.d_ff, num_layers=hf.num_layers,
                     num_decoder_layers=hf.num_decoder_layers, num_heads=hf.num_heads,
                     relative_attention_num_buckets=hf.relative_attention_num_buckets,
                     relative_attention_max_distance=hf.relative_attention_max_distance,
                     dropout_rate=hf.dropout_rate, layer_norm_epsilon=hf.layer_norm_epsilon,
                     pad_token_id=hf.pad_token_id, eos_token_id=hf.eos_token_id,
                     decoder_start_token_id=hf.decoder_start_token_id)  # fmt: skip


HF = HFAdapter(
    "mt5",
    "MT5ForConditionalGeneration",
    "AutoModelForSeq2SeqLM",
    ("num_layers", "num_decoder_layers"),
    _rules(),
    to_hf_config,
    from_hf_config,
    derived={
        "encoder.embed_tokens.weight": "shared.weight",
        "decoder.embed_tokens.weight": "shared.weight",
    },
)
