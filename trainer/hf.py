"""Hugging Face export and import: how each of our weights is named and shaped in `transformers`.

One mapping table per architecture (`ARCHITECTURES[...].table`), read in both directions:

    GPT  <-> GPT2LMHeadModel              q, k, v -> one Conv1D c_attn; every Linear -> Conv1D
    GPTJ <-> GPTJForCausalLM              the same names, nn.Linear on both sides
    MT5  <-> MT5ForConditionalGeneration  the same names; encoder/decoder embed_tokens = shared

`export_hf(checkpoint, out)` merges the TP shards of a `dataprep train --save` checkpoint, cuts the
padded vocabulary rows to the tokenizer's size, and writes a folder `transformers` loads with
nothing else: config.json, model.safetensors, generation_config.json and the tokenizer the data was
built with (reference/serving.md §4, formats.md §6). `import_hf(folder, root)` is the inverse: a
GPT-2 / GPT-J / mT5 folder becomes a checkpoint that `dataprep train --load` continues from at any
TP (no optimizer state: training starts a fresh AdamW at step 0).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dataprep.errors import DataprepError, UsageError

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

    if isinstance(config, GPTConfig):
        return transformers.GPT2Config(
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
            tie_word_embeddings=True,
        )
    if isinstance(config, GPTJConfig):
        return transformers.GPTJConfig(
            vocab_size=config.vocab_size,
            n_positions=config.block_size,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            rotary_dim=config.rotary_dim,
            n_inner=config.n_inner,
            activation_function="gelu_new",
            resid_pdrop=config.dropout,
            embd_pdrop=config.dropout,
            attn_pdrop=config.attn_dropout,
            layer_norm_epsilon=config.layer_norm_epsilon,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
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
        return GPTConfig(n_layer=hf.n_layer, n_head=hf.n_head, n_embd=hf.n_embd,
                         block_size=hf.n_positions, vocab_size=hf.vocab_size,
                         dropout=hf.resid_pdrop, attn_dropout=hf.attn_pdrop,
                         layer_norm_epsilon=hf.layer_norm_epsilon, bias=True)  # fmt: skip
    if t == "gptj":
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


# ------------------------------------------------------------------------------------------------
# export and import


def _tokenizer_spec(meta: dict, override: str | None) -> str | None:
    """The tokenizer a checkpoint's data was built with: --tokenizer, else what training recorded,
    else the manifest of its first --data-path prefix."""
    if override:
        return override
    spec = (meta.get("info") or {}).get("tokenizer")
    if spec:
        return spec
    train_config = (meta.get("extra") or {}).get("train_config") or {}
    if train_config.get("tokenizer"):
        return train_config["tokenizer"]
    from dataprep.manifest import load_manifest

    words = train_config.get("data_path") or []
    prefixes = [w for w in words if not _is_number(w)]
    m = load_manifest(prefixes[0]) if prefixes else None
    return ((m or {}).get("tokenizer") or {}).get("spec")


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _special_ids(config: Any, tok: Any) -> dict[str, int | None]:
    from trainer.models import MT5Config

    if isinstance(config, MT5Config):
        return {"eos_id": config.eos_token_id, "pad_id": config.pad_token_id}
    eos = tok.eos_id if tok.eos_id is not None else tok.eod_id
    return {"eos_id": eos, "pad_id": tok.pad_id}


def _probe_logits(model: Any, config: Any, hf: bool) -> torch.Tensor:
    """Logits of a fixed probe sequence, cut to the real vocabulary."""
    from trainer.models import MT5Config

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (2, 12), generator=g)
    with torch.no_grad():
        if isinstance(config, MT5Config):
            dec = torch.randint(0, config.vocab_size, (2, 5), generator=g)
            out = model(input_ids=ids, decoder_input_ids=dec).logits if hf else model(ids, dec)
        else:
            out = model(input_ids=ids).logits if hf else model(ids)
    return out[..., : config.vocab_size].float()


@dataclass
class ExportSummary:
    out: str
    hf_class: str
    checkpoint: str
    tp: int
    step: int
    params: int
    vocab_size: int
    padded_vocab_size: int
    tokenizer: str
    max_logit_diff: float | None  # ours vs the reloaded folder on a probe, None = not checked


def export_hf(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tokenizer: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
) -> ExportSummary:
    """Write checkpoint (a `--save` root or one iteration, any TP) as an HF folder `out`."""
    import transformers

    from dataprep.tokenizers import load_tokenizer
    from dataprep.tokenizers.hf_export import save_hf_tokenizer
    from trainer import checkpoint as ckpt
    from trainer.models import build_model

    path = ckpt.resolve_checkpoint(checkpoint, what="checkpoint")
    meta = ckpt.read_metadata(path)
    arch = ARCHITECTURES[meta["model_type"]]
    config = ckpt.load_config(path)
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(
            f"{out} exists and is not empty; pass --overwrite to replace it"
        )
    spec = _tokenizer_spec(meta, tokenizer)
    if spec is None:
        raise UsageError(
            f"{path} does not say which tokenizer its data was built with (no "
            "manifest found); pass --tokenizer NAME_OR_PATH"
        )
    tok = load_tokenizer(spec)
    if tok.vocab_size != config.vocab_size:
        raise DataprepError(
            f"the tokenizer {spec} has {tok.vocab_size} ids but the model was trained "
            f"for {config.vocab_size}; pass the tokenizer the data was built with (--tokenizer)"
        )
    sd, _ = ckpt.merge_checkpoint(path)
    ids = _special_ids(config, tok)
    hf_model = build_hf_model(config, sd, **ids)
    gen = hf_model.generation_config
    gen.eos_token_id = ids["eos_id"]
    gen.pad_token_id = ids["pad_id"] if ids["pad_id"] is not None else ids["eos_id"]
    if arch.ours == "MT5":
        gen.decoder_start_token_id = config.decoder_start_token_id
    else:
        gen.bos_token_id = ids["eos_id"]

    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        hf_model.save_pretrained(tmp)
        save_hf_tokenizer(tok, tmp)
        diff = None
        if verify:
            ours = build_model(config)
            ours.load_state_dict(sd)
            reloaded = getattr(transformers, arch.auto).from_pretrained(tmp).eval()
            a, b = _probe_logits(ours.eval(), config, False), _probe_logits(reloaded, config, True)
            diff = float((a - b).abs().max())
            if type(reloaded).__name__ != arch.hf_class or diff > 1e-4:
                raise DataprepError(
                    f"the written folder loads as {type(reloaded).__name__} with "
                    f"logits {diff:.2e} away from the checkpoint's (limit 1e-4); not written"
                )
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportSummary(
        out=str(out),
        hf_class=arch.hf_class,
        checkpoint=str(path),
        tp=int(meta["tp"]),
        step=int(meta["step"]),
        params=sum(t.numel() for t in hf_model.state_dict().values()),
        vocab_size=config.vocab_size,
        padded_vocab_size=config.padded_vocab_size,
        tokenizer=spec,
        max_logit_diff=diff,
    )


def import_hf(
    hf_dir: str | os.PathLike, root: str | os.PathLike, *, overwrite: bool = False
) -> tuple[str, Any]:
    """A GPT-2 / GPT-J / mT5 folder -> a checkpoint `root/iter_0000000` (step 0, no optimizer
    state) that `dataprep train --load root` continues from at any TP; (its path, its config)."""
    import transformers

    from dataprep.tokenizers import load_tokenizer
    from trainer import checkpoint as ckpt
    from trainer.models import build_model

    hf_dir, root = Path(hf_dir), Path(root)
    if not hf_dir.is_dir():
        raise DataprepError(f"{hf_dir}: no such directory")
    if not (hf_dir / "config.json").is_file():
        raise DataprepError(
            f"{hf_dir} has no config.json; expected a Hugging Face model folder "
            f"(save_pretrained) of one of: {SUPPORTED}"
        )
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise UsageError(f"{root} exists and is not empty; pass --overwrite")
    try:
        hf_config_obj = transformers.AutoConfig.from_pretrained(hf_dir)
    except (OSError, ValueError, KeyError) as e:
        raise DataprepError(f"{hf_dir}/config.json: cannot read it: {e}") from e
    found = getattr(hf_config_obj, "model_type", None)
    arch = next((a for a in ARCHITECTURES.values() if a.model_type == found), None)
    if arch is None:
        names = getattr(hf_config_obj, "architectures", None) or []
        raise DataprepError(
            f"{hf_dir} holds a {found!r} model {names}; supported: {SUPPORTED}"
        )
    config = config_from_hf(hf_config_obj)
    try:
        hf_model = getattr(transformers, arch.hf_class).from_pretrained(hf_dir, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as e:
        raise DataprepError(f"{hf_dir}: cannot load the weights: {e}") from e
    model = build_model(config)
    model.load_state_dict(from_hf_state_dict(hf_model.state_dict(), config))
    spec = None
    if (hf_dir / "tokenizer.json").is_file():
        try:
            if load_tokenizer(str(hf_dir)).vocab_size == config.vocab_size:
                spec = str(hf_dir.absolute())
        except DataprepError:
            spec = None
    if overwrite and root.exists():
        shutil.rmtree(root)
    path = ckpt.save_checkpoint(
        root,
        model,
        None,
        step=0,
        extra={"step": 0, "imported_from": str(hf_dir)},
        info={"tokenizer": spec, "imported_from": str(hf_dir.absolute())},
    )
    return str(path), config
