"""GPT <-> transformers `GPT2LMHeadModel`: weight names, shapes and configs.

Our q, k, v are three Linear layers where HF has one Conv1D `c_attn`, and every Linear is a Conv1D
there (weights transposed); `lm_head.weight` is tied to `transformer.wte.weight` on both sides.
"""

from __future__ import annotations

from typing import Any

from dataprep.errors import DataprepError
from trainer.models.gpt import GPTConfig
from trainer.models.hf_adapter import CAT, CONV1D, QKV, VOCAB, HFAdapter, Rule

TANH_GELUS = ("gelu_new", "gelu_fast", "gelu_pytorch_tanh")  # HF names of our tanh GELU


def _rules() -> tuple[Rule, ...]:
    layer = "transformer.h.{i}."
    rules = [Rule(("transformer.wte.weight",), "transformer.wte.weight", VOCAB)]
    rules.append(Rule(("transformer.wpe.weight",), "transformer.wpe.weight"))
    for name in ("ln_1", "ln_2"):
        rules.append(Rule((layer + name + ".weight",), layer + name + ".weight"))
        rules.append(Rule((layer + name + ".bias",), layer + name + ".bias", optional=True))
    qkv = tuple(layer + f"attn.{x}" for x in ("q", "k", "v"))
    rules.append(Rule(tuple(k + ".weight" for k in qkv), layer + "attn.c_attn.weight", QKV))
    rules.append(Rule(tuple(k + ".bias" for k in qkv), layer + "attn.c_attn.bias", CAT, True))
    for name in ("attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        rules.append(Rule((layer + name + ".weight",), layer + name + ".weight", CONV1D))
        rules.append(Rule((layer + name + ".bias",), layer + name + ".bias", optional=True))
    rules.append(Rule(("transformer.ln_f.weight",), "transformer.ln_f.weight"))
    rules.append(Rule(("transformer.ln_f.bias",), "transformer.ln_f.bias", optional=True))
    return tuple(rules)  # lm_head.weight is tied to wte on both sides


def gpt2_config_fields(config: Any, eos_id: int | None, pad_id: int | None) -> dict[str, Any]:
    """The GPT-2 config fields of a GPTConfig or GPTJConfig (GPT-J's HF config shares them)."""
    return dict(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        activation_function="gelu_new",
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.attn_dropout,
        layer_norm_epsilon=config.layer_norm_epsilon,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def to_hf_config(config: GPTConfig, *, eos_id: int | None = None, pad_id: int | None = None):
    import transformers

    return transformers.GPT2Config(
        **gpt2_config_fields(config, eos_id, pad_id), tie_word_embeddings=True
    )


def from_hf_config(hf: Any) -> GPTConfig:
    act = getattr(hf, "activation_function", "gelu_new")
    if act not in TANH_GELUS:
        raise DataprepError(f"GPT-2 with activation {act!r}: only the tanh GELU is supported")
    if getattr(hf, "n_inner", None) not in (None, 4 * hf.n_embd):
        raise DataprepError(f"GPT-2 with n_inner={hf.n_inner}: only 4 * n_embd is supported")
    # options that change what the model computes and that our GPT does not have
    fixed = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
             "add_cross_attention": False, "tie_word_embeddings": True}  # fmt: skip
    for name, supported in fixed.items():
        value = getattr(hf, name, supported)
        if value != supported:
            raise DataprepError(f"GPT-2 with {name}={value}: only {name}={supported} is supported")
    return GPTConfig(n_layer=hf.n_layer, n_head=hf.n_head, n_embd=hf.n_embd,
                     block_size=hf.n_positions, vocab_size=hf.vocab_size,
                     dropout=hf.resid_pdrop, attn_dropout=hf.attn_pdrop,
                     layer_norm_epsilon=hf.layer_norm_epsilon, bias=True)  # fmt: skip


HF = HFAdapter(
    "gpt2",
    "GPT2LMHeadModel",
    "AutoModelForCausalLM",
    ("n_layer",),
    _rules(),
    to_hf_config,
    from_hf_config,
    derived={"lm_head.weight": "transformer.wte.weight"},
    tied={"lm_head.weight": "transformer.wte.weight"},
)
