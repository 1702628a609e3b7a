"""Hugging Face export and import: how each of our weights is named and shaped in `transformers`.

One mapping table per architecture (`ARCHITECTURES[...].table`), read in both directions:

    GPT  <-> GPT2LMHeadModel              q, k, v -> one Conv1D c_attn; every Linear -> Conv1D
    GPTJ <-> GPTJForCausalLM              the same names, nn.Linear on both sides
    MT5  <-> MT5ForConditionalGeneration  the same names; encoder/decoder embed_tokens = shared

Export cuts the padded vocabulary rows to the tokenizer's size and import zero-pads them back
(reference/serving.md §4, formats.md §6); trainer/hf_export.py writes and reads the folders.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from dataprep.errors import DataprepError

log = logging.getLogger(__name__)

# How a tensor changes on the way to HF (and back):
COPY = "copy"  # the same tensor
VOCAB = "vocab"  # dim 0 is the vocabulary: padded rows cut on export, zero rows added on import
CONV1D = "conv1d"  # nn.Linear weight [out, in] <-> HF Conv1D weight [in, out]
QKV = "qkv"  # our q, k, v Linear weights <-> one Conv1D c_attn weight [in, 3 * out]
CAT = "cat"  # our q, k, v biases <-> one c_attn bias [3 * out]


@dataclass(frozen=True)
class Rule:
    ours: tuple[str, ...]  # our state-dict key(s); "{i}" = the layer number
    hf: str  # the transformers state-dict key
    how: str = COPY
    optional: bool = False  # ours may lack it (GPTConfig(bias=False)): export zeros, import drops


def _gpt2_table() -> list[Rule]:
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
    return rules  # lm_head.weight is tied to wte on both sides


def _gptj_table() -> list[Rule]:
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
    return rules


def _mt5_table() -> list[Rule]:
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
    return rules


@dataclass(frozen=True)
class HFArchitecture:
    ours: str  # our model class name (checkpoint metadata "model_type")
    model_type: str  # HF config.model_type
    hf_class: str  # the transformers model class
    auto: str  # the Auto class that loads it
    layers: tuple[str, ...]  # config fields whose value is the number of {i} per rule group
    table: list[Rule] = field(default_factory=list)
    derived: dict[str, str] = field(default_factory=dict)  # HF key -> HF key it equals (tied)


ARCHITECTURES: dict[str, HFArchitecture] = {
    a.ours: a
    for a in (
        HFArchitecture(
            "GPT",
            "gpt2",
            "GPT2LMHeadModel",
            "AutoModelForCausalLM",
            ("n_layer",),
            _gpt2_table(),
            {"lm_head.weight": "transformer.wte.weight"},
        ),
        HFArchitecture(
            "GPTJ", "gptj", "GPTJForCausalLM", "AutoModelForCausalLM", ("n_layer",), _gptj_table()
        ),
        HFArchitecture(
            "MT5",
            "mt5",
            "MT5ForConditionalGeneration",
            "AutoModelForSeq2SeqLM",
            ("num_layers", "num_decoder_layers"),
            _mt5_table(),
            {
                "encoder.embed_tokens.weight": "shared.weight",
                "decoder.embed_tokens.weight": "shared.weight",
            },
        ),
    )  # fmt: skip
}
SUPPORTED = ", ".join(f"{a.model_type} ({a.hf_class})" for a in ARCHITECTURES.values())


def _layers(rule: Rule, config: Any, arch: HFArchitecture) -> range | list[None]:
    """The layer numbers a rule expands to: none for a rule without {i}; the encoder's or decoder's
    count for mT5 (by the key's stack)."""
    if "{i}" not in rule.hf:
        return [None]
    if arch.ours == "MT5":
        decoder = rule.hf.startswith("decoder")
        return range(config.num_decoder_layers if decoder else config.num_layers)
    return range(getattr(config, arch.layers[0]))


def to_hf_state_dict(sd: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """A full (TP=1) state dict of ours -> HF keys and shapes, vocabulary cut to `vocab_size`."""
    from trainer.models import architecture_of

    arch = ARCHITECTURES[architecture_of(config).model.__name__]
    out: dict[str, torch.Tensor] = {}
    for rule in arch.table:
        for i in _layers(rule, config, arch):
            ours = [k.format(i=i) for k in rule.ours]
            hf = rule.hf.format(i=i)
            if rule.optional and any(k not in sd for k in ours):
                like = sd[next(k for k in sd if k.endswith(".weight"))]
                n = sum(sd[k.rpartition(".")[0] + ".weight"].shape[0] for k in ours)
                out[hf] = like.new_zeros(n)  # bias=False -> HF zeros, the same function
                continue
            ts = [sd[k].detach() for k in ours]
            if rule.how == VOCAB:
                out[hf] = ts[0][: config.vocab_size].clone()
            elif rule.how == CONV1D:
                out[hf] = ts[0].t().contiguous()
            elif rule.how == QKV:
                out[hf] = torch.cat(ts).t().contiguous()
            elif rule.how == CAT:
                out[hf] = torch.cat(ts)
            else:
                out[hf] = ts[0].clone()
    for key, source in arch.derived.items():
        out[key] = out[source]
    return out


def from_hf_state_dict(hf: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """HF keys and shapes -> a full (TP=1) state dict of ours, vocabulary zero-padded to
    `padded_vocab_size`; the inverse of `to_hf_state_dict`."""
    from trainer.models import architecture_of

    arch = ARCHITECTURES[architecture_of(config).model.__name__]
    sd: dict[str, torch.Tensor] = {}
    for rule in arch.table:
        for i in _layers(rule, config, arch):
            ours = [k.format(i=i) for k in rule.ours]
            key = rule.hf.format(i=i)
            if key not in hf:
                raise DataprepError(f"the HF weights have no {key!r} ({arch.hf_class} expected)")
            t = hf[key].detach()
            if rule.how == VOCAB:
                pad = t.new_zeros((config.padded_vocab_size - t.shape[0], *t.shape[1:]))
                sd[ours[0]] = torch.cat([t, pad])
            elif rule.how == CONV1D:
                sd[ours[0]] = t.t().contiguous()
            elif rule.how in (QKV, CAT):
                parts = (t.t() if rule.how == QKV else t).chunk(len(ours))
                for k, p in zip(ours, parts, strict=True):
                    sd[k] = p.contiguous()
            else:
                sd[ours[0]] = t.clone()
    if arch.ours == "GPT":
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


# ------------------------------------------------------------------------------------------------
# configs


def hf_config(config: Any, *, eos_id: int | None = None, pad_id: int | None = None):
    """The transformers config object matching one of our model configs."""
    import transformers

    from trainer.models import GPTConfig, GPTJConfig

    if isinstance(config, GPTConfig | GPTJConfig):
        # the GPT-2 field names, which GPTJConfig shares
        common = dict(
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
        if isinstance(config, GPTConfig):
            return transformers.GPT2Config(**common, tie_word_embeddings=True)
        return transformers.GPTJConfig(
            **common,
            rotary_dim=config.rotary_dim,
            n_inner=config.n_inner,
            tie_word_embeddings=False,
        )
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
    # head is untied, and a folder holding both lm_head and shared loads untied (formats.md §7.9)
    c.tie_word_embeddings = False
    return c


def config_from_hf(hf: Any) -> Any:
    """One of our model configs from a transformers config (gpt2, gptj, mt5)."""
    from trainer.models import GPTConfig, GPTJConfig, MT5Config

    t = hf.model_type
    if t == "gpt2":
        act = getattr(hf, "activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
            raise DataprepError(f"GPT-2 with activation {act!r}: only the tanh GELU is supported")
        if getattr(hf, "n_inner", None) not in (None, 4 * hf.n_embd):
            raise DataprepError(f"GPT-2 with n_inner={hf.n_inner}: only 4 * n_embd is supported")
        # options that change what the model computes and that our GPT does not have
        fixed = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                 "add_cross_attention": False, "tie_word_embeddings": True}  # fmt: skip
        for name, supported in fixed.items():
            value = getattr(hf, name, supported)
            if value != supported:
                raise DataprepError(
                    f"GPT-2 with {name}={value}: only {name}={supported} is supported"
                )
        return GPTConfig(n_layer=hf.n_layer, n_head=hf.n_head, n_embd=hf.n_embd,
                         block_size=hf.n_positions, vocab_size=hf.vocab_size,
                         dropout=hf.resid_pdrop, attn_dropout=hf.attn_pdrop,
                         layer_norm_epsilon=hf.layer_norm_epsilon, bias=True)  # fmt: skip
    if t == "gptj":
        act = getattr(hf, "activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
            raise DataprepError(f"GPT-J with activation {act!r}: only the tanh GELU is supported")
        return GPTJConfig(n_layer=hf.n_layer, n_head=hf.n_head, n_embd=hf.n_embd,
                          rotary_dim=hf.rotary_dim or hf.n_embd // hf.n_head,
                          block_size=hf.n_positions, n_inner=hf.n_inner or 4 * hf.n_embd,
                          vocab_size=hf.vocab_size, dropout=hf.resid_pdrop,
                          attn_dropout=hf.attn_pdrop,
                          layer_norm_epsilon=hf.layer_norm_epsilon)  # fmt: skip
    if t == "mt5":
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
    raise DataprepError(f"unsupported HF model_type {t!r}; supported: {SUPPORTED}")


def build_hf_model(config: Any, sd: dict[str, torch.Tensor], **ids: int | None):
    """The transformers model for one of our configs, loaded from our full state dict."""
    import transformers

    from trainer.models import architecture_of

    arch = ARCHITECTURES[architecture_of(config).model.__name__]
    model = getattr(transformers, arch.hf_class)(hf_config(config, **ids))
    missing, unexpected = model.load_state_dict(to_hf_state_dict(sd, config), strict=False)
    # buffers HF rebuilds itself (GPT-J's rotary table) are not in our state dict
    rebuilt = ("embed_positions", "attn.bias", "masked_bias")
    missing = [k for k in missing if not k.endswith(rebuilt)]
    if missing or unexpected:
        raise RuntimeError(f"HF mapping out of date: missing {missing}, unexpected {unexpected}")
    return model.eval()
