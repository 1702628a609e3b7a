"""Megatron-T5 (`MegatronT5Model`) `.nemo` archives of mT5: in and out.

The key table (`_t5_names`: HF mT5 key, NeMo key, how it splits over TP) follows NeMo's HF T5 v1.1
/ mT5 converter; `export_t5` writes our mT5 with that converter's model_config.yaml, `import_t5`
checks an archive's config describes T5 v1.1 / mT5 and merges its TP ranks back. The layout is in
`trainer.checkpoint.nemo`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dataprep.errors import DataprepError
from trainer.checkpoint.nemo_archive import (
    NEMO_VERSION,
    Archive,
    import_tokenizer,
    stored_name,
    tokenizer_files,
    write_archive,
)

T5_TARGET = "nemo.collections.nlp.models.language_modeling.megatron_t5_model.MegatronT5Model"


def _t5_names(config: Any) -> list[tuple[str, str, str]]:
    """(HF mT5 key, NeMo key, how it splits over TP) after NeMo's hf_t5-v1_1_to_nemo.py (v1.13.0,
    commit 1ff05cce): "vocab" rows (padded), "column" rows, "row" columns, "qkv" / "kv" fused
    per rank, "copy" replicated."""
    e = "enc_dec_model.enc_dec_model"
    names = [
        ("shared.weight", "enc_dec_model.encoder_embedding.word_embeddings.weight", "vocab"),
        ("shared.weight", "enc_dec_model.decoder_embedding.word_embeddings.weight", "vocab"),
        ("lm_head.weight", "enc_dec_model.tokens_head.weight", "vocab"),
    ]
    for stack, layers in (("encoder", config.num_layers), ("decoder", config.num_decoder_layers)):
        names.append((f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                      f"enc_dec_model.{stack}_relative_position_embedding."
                      "relative_position_embedding.weight", "copy"))  # fmt: skip
        norms = ["input_layernorm", "post_attention_layernorm"]
        if stack == "decoder":
            norms.append("post_inter_attention_layernorm")
        ff = 1 if stack == "encoder" else 2
        for b in range(layers):
            h, n = f"{stack}.block.{b}.layer.", f"{e}.{stack}.model.layers.{b}."
            qkv = n + "self_attention.query_key_value.weight"
            names.append((h + "0.SelfAttention.q.weight", qkv, "qkv"))
            names.append((h + "0.SelfAttention.o.weight", n + "self_attention.dense.weight", "row"))
            if stack == "decoder":
                names += [
                    (h + "1.EncDecAttention.q.weight", n + "inter_attention.query.weight",
                     "column"),
                    (h + "1.EncDecAttention.k.weight", n + "inter_attention.key_value.weight",
                     "kv"),
                    (h + "1.EncDecAttention.o.weight", n + "inter_attention.dense.weight", "row"),
                ]  # fmt: skip
            names += [
                (h + f"{ff}.DenseReluDense.wi_0.weight", n + "mlp.dense_h_to_4h.weight", "column"),
                (h + f"{ff}.DenseReluDense.wi_1.weight", n + "mlp.dense_h_to_4h_2.weight",
                 "column"),
                (h + f"{ff}.DenseReluDense.wo.weight", n + "mlp.dense_4h_to_h.weight", "row"),
            ]  # fmt: skip
            for j, norm in enumerate(norms):
                names.append((h + f"{j}.layer_norm.weight", n + norm + ".weight", "copy"))
        final = f"{e}.{stack}.model.final_layernorm.weight"
        names.append((f"{stack}.final_layer_norm.weight", final, "copy"))
    return names


def _t5_config_yaml(config: Any, tp: int, tokenizer: dict) -> dict:
    """model_config.yaml of MegatronT5Model as hf_t5-v1_1_to_nemo.py's base config
    (scripts/nlp_language_modeling/hf_t5v1_1_base_config.yaml, v1.13.0) sets it for mT5."""

    def stack(layers: int) -> dict:
        return {
            "num_layers": layers, "hidden_size": config.d_model, "ffn_hidden_size": config.d_ff,
            "num_attention_heads": config.num_heads, "init_method_std": 0.015,
            "hidden_dropout": 0.0, "attention_dropout": 0.0, "ffn_dropout": 0.0,
            "position_embedding_type": "relative",
            "relative_attention_num_buckets": config.relative_attention_num_buckets,
            "relative_attention_max_distance": config.relative_attention_max_distance,
            "relative_position_bias_self_attention_only": True,
            "kv_channels": config.d_kv, "apply_query_key_layer_scaling": False,
            "layernorm_epsilon": config.layer_norm_epsilon, "persist_layer_norm": True,
            "bias_activation_fusion": False, "grad_div_ar_fusion": True,
            "masked_softmax_fusion": False, "bias_dropout_add_fusion": False, "bias": False,
            "normalization": "rmsnorm", "arch": "transformer", "activation": "geglu",
            "headscale": False, "transformer_block_type": "pre_ln", "openai_gelu": True,
            "megatron_legacy": True, "normalize_attention_scores": False,
            "onnx_safe": False, "fp32_residual_connection": False,
            "activations_checkpoint_method": None, "activations_checkpoint_num_layers": 1,
        }  # fmt: skip

    return {
        "micro_batch_size": 4, "global_batch_size": 8, "tensor_model_parallel_size": tp,
        "pipeline_model_parallel_size": 1, "resume_from_checkpoint": None,
        "pipeline_model_parallel_split_rank": 0, "make_vocab_size_divisible_by": 128,
        "megatron_amp_O2": False, "seq_length": 512, "max_position_embeddings": 512,
        "encoder": stack(config.num_layers), "decoder": stack(config.num_decoder_layers),
        "tokenizer": tokenizer, "embedding_init_method_std": 0.015, "embedding_dropout": 0.0,
        "share_token_embeddings": True, "share_decoder_tokens_head_embeddings": False,
        "tokens_head_bias": False, "seed": 1234, "use_cpu_initialization": False,
        "precision": 32, "target": T5_TARGET, "nemo_version": NEMO_VERSION,
    }  # fmt: skip


def export_t5(path: str, config: Any, sd: dict, tok, tp: int, out: Path) -> dict:
    from trainer.checkpoint.hf import to_hf_state_dict
    from trainer.models.common import pad_vocab_size

    hf = to_hf_state_dict(sd, config)
    V, padded = config.vocab_size, pad_vocab_size(config.vocab_size, tp)
    ranks: list[dict[str, torch.Tensor]] = [{} for _ in range(tp)]
    for hf_key, key, how in _t5_names(config):
        t = hf[hf_key]
        for r in range(tp):
            if how == "vocab":
                rows = torch.zeros(padded, t.shape[1])
                rows[:V] = t
                ranks[r][key] = rows.chunk(tp)[r].clone()
            elif how == "qkv":
                parts = [hf[hf_key.replace(".q.", f".{x}.")].chunk(tp)[r] for x in "qkv"]
                ranks[r][key] = torch.cat(parts).clone()  # megatron_legacy: [Q; K; V] per rank
            elif how == "kv":
                parts = [hf[hf_key.replace(".k.", f".{x}.")].chunk(tp)[r] for x in "kv"]
                ranks[r][key] = torch.cat(parts).clone()
            elif how == "column":
                ranks[r][key] = t.chunk(tp)[r].clone()
            elif how == "row":
                ranks[r][key] = t.chunk(tp, dim=1)[r].clone()
            else:
                ranks[r][key] = t.clone()
    files = tokenizer_files(tok)
    if set(files) != {"spiece.model"}:
        raise DataprepError(f"{path}: a Megatron-T5 .nemo needs a SentencePiece tokenizer")
    stored = stored_name("spiece.model")
    tokenizer = {"library": "sentencepiece", "type": None, "model": "nemo:" + stored,
                 "vocab_file": None, "merge_file": None, "num_sentinel_tokens": 100,
                 "sentencepiece_legacy": True, "add_sentinel_tokens_in_reverse_order": True,
                 "add_sentinel_tokens_first": True}  # fmt: skip
    write_archive(out, _t5_config_yaml(config, tp, tokenizer), ranks,
                  {stored: files["spiece.model"]})  # fmt: skip
    return {"architecture": "Megatron-T5 (mT5)", "padded_vocab_size": padded}


def import_t5(archive: Archive, root: Path) -> tuple[Any, dict, str, dict]:
    from dataprep.tokenizers import load_tokenizer
    from trainer.checkpoint.hf import from_hf_state_dict
    from trainer.models.mt5 import MT5Config

    cfg, where = archive.config, str(archive.path)
    enc, dec = cfg.get("encoder") or {}, cfg.get("decoder") or {}
    for part, c in (("encoder", enc), ("decoder", dec)):
        for name, ok, what in [
            ("position_embedding_type", lambda v: v == "relative", "absolute position embeddings"),
            ("normalization", lambda v: v == "rmsnorm", "LayerNorm"),
            ("activation", lambda v: v == "geglu", "an MLP other than gated GELU"),
            ("bias", lambda v: v is False, "linear layers with biases"),
            ("normalize_attention_scores", lambda v: v is False, "scaled attention scores"),
            ("relative_position_bias_self_attention_only", lambda v: v in (None, True),
             "a cross-attention position bias"),
        ]:  # fmt: skip
            if not ok(c.get(name)):
                raise DataprepError(
                    f"{where}: {part} has {what} ({name}={c.get(name)!r}); import-nemo reads the "
                    "T5 v1.1 / mT5 architecture (NeMo's HF T5 converter's layout)"
                )
    if cfg.get("share_decoder_tokens_head_embeddings") is not False:
        raise DataprepError(f"{where}: a head tied to the embeddings; mT5's head is untied")
    if cfg.get("share_token_embeddings") is False:
        raise DataprepError(f"{where}: separate encoder and decoder embeddings; mT5 shares them")
    t = cfg.get("tokenizer") or {}
    files = {"spiece.model": archive.artifact(t.get("model"), "tokenizer.model")}
    spec = import_tokenizer(files, root)
    tok = load_tokenizer(spec)
    config = MT5Config(
        vocab_size=tok.vocab_size, d_model=enc["hidden_size"], d_kv=enc.get("kv_channels")
        or enc["hidden_size"] // enc["num_attention_heads"], d_ff=enc["ffn_hidden_size"],
        num_layers=enc["num_layers"], num_decoder_layers=dec.get("num_layers", enc["num_layers"]),
        num_heads=enc["num_attention_heads"],
        relative_attention_num_buckets=enc.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=enc.get("relative_attention_max_distance", 128),
        layer_norm_epsilon=enc.get("layernorm_epsilon", 1e-6),
        pad_token_id=tok.pad_id if tok.pad_id is not None else 0,
        eos_token_id=tok.eos_id if tok.eos_id is not None else 1,
    )  # fmt: skip
    legacy = bool(enc.get("megatron_legacy", False))
    weights = archive.weights()
    tp = 1 + max(r[0] for r in weights)
    if 1 + max(r[1] for r in weights) > 1:
        raise DataprepError(f"{where}: pipeline-parallel T5 archives are not read")
    heads = config.num_heads // tp
    hf: dict[str, torch.Tensor] = {}
    rows = 0
    for hf_key, key, how in _t5_names(config):
        try:
            ts = [weights[(r, 0)][key].float() for r in range(tp)]
        except KeyError:
            first = next(iter(weights[(0, 0)]), None)
            raise DataprepError(f"{where}: {key} missing (the files hold {first!r}, ...)") from None
        if how == "vocab":
            full = torch.cat(ts)
            rows = full.shape[0]
            if rows < tok.vocab_size:
                raise DataprepError(f"{where}: {rows} rows < the tokenizer's {tok.vocab_size}")
            hf[hf_key] = full[: tok.vocab_size].clone()
        elif how in ("qkv", "kv"):
            n = 3 if how == "qkv" else 2
            per_rank = []
            for x in ts:
                hd = x.shape[0] // (n * heads)
                v = x.view(n, heads, hd, -1) if legacy else x.view(heads, n, hd, -1).transpose(0, 1)
                per_rank.append([v[j].reshape(heads * hd, -1) for j in range(n)])
            names = "qkv" if how == "qkv" else "kv"
            base = ".q." if how == "qkv" else ".k."
            for j, x in enumerate(names):
                hf[hf_key.replace(base, f".{x}.")] = torch.cat([p[j] for p in per_rank])
        elif how == "column":
            hf[hf_key] = torch.cat(ts)
        elif how == "row":
            hf[hf_key] = torch.cat(ts, dim=1)
        else:
            hf[hf_key] = ts[0].clone()
    return (
        config,
        from_hf_state_dict(hf, config),
        spec,
        {"architecture": "Megatron-T5 (mT5)", "tp": tp, "pp": 1, "rows": rows},
    )
