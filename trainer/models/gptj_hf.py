"""GPT-J <-> transformers `GPTJForCausalLM`: the same names, nn.Linear on both sides, an untied
head with a bias."""

from __future__ import annotations

from typing import Any

from dataprep.errors import DataprepError
from trainer.models.gpt_hf import TANH_GELUS, gpt2_config_fields
from trainer.models.gptj import GPTJConfig
from trainer.models.hf_adapter import VOCAB, HFAdapter, Rule


def _rules() -> tuple[Rule, ...]:
    layer = "transformer.h.{i}."
    rules = [Rule(("transformer.wte.weight",), "transformer.wte.weight", VOCAB)]
    for name in ("ln_1.weight", "ln_1.bias", "mlp.fc_in.weight", "mlp.fc_in.bias",
                 "mlp.fc_out.weight", "mlp.fc_out.bias"):  # fmt: skip
        rules.append(Rule((layer + name,), layer + name))
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        rules.append(Rule((layer + f"attn.{name}.weight",), layer + f"attn.{name}.weight"))
    rules += [
        Rule(("transformer.ln_f.weight",), "transformer.ln_f.weight"),
        Rule(("transformer.ln_f.bias",), "transformer.ln_f.bias"),
        Rule(("lm_head.weight",), "lm_head.weight", VOCAB),
        Rule(("lm_head.bias",), "lm_head.bias", VOCAB),
    ]
    return tuple(rules)


def to_hf_config(config: GPTJConfig, *, eos_id: int | None = None, pad_id: int | None = None):
    import transformers

    return transformers.GPTJConfig(
        **gpt2_config_fields(config, eos_id, pad_id),
        rotary_dim=config.rotary_dim,
        n_inner=config.n_inner,
        tie_word_embeddings=False,
    )


def from_hf_config(hf: Any) -> GPTJConfig:
    act = getattr(hf, "activation_function", "gelu_new")
    if act not in TANH_GELUS:
        raise DataprepError(f"GPT-J with activation {act!r}: only the tanh GELU is supported")
    return GPTJConfig(n_layer=hf.n_layer, n_head=hf.n_head, n_embd=hf.n_embd,
                      rotary_dim=hf.rotary_dim or hf.n_embd // hf.n_head,
                      block_size=hf.n_positions, n_inner=hf.n_inner or 4 * hf.n_embd,
                      vocab_size=hf.vocab_size, dropout=hf.resid_pdrop,
                      attn_dropout=hf.attn_pdrop,
                      layer_norm_epsilon=hf.layer_norm_epsilon)  # fmt: skip


HF = HFAdapter(
    "gptj", "GPTJForCausalLM", "AutoModelForCausalLM", ("n_layer",), _rules(), to_hf_config,
    from_hf_config,
)  # fmt: skip
