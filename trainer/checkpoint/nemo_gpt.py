"""Megatron-GPT (`MegatronGPTModel`) `.nemo` archives: our GPT in and out.

`export_gpt` shards our GPT's weights as Megatron-LM's `language_model` keys under `model.` (through
`trainer.checkpoint.megatron_layout`) with the model_config.yaml of NeMo v1.11.0's GPT config;
`import_gpt` checks an archive's config describes the GPT-2 architecture and reads its weights
back. The layout is in `trainer.checkpoint.nemo`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError
from trainer.checkpoint.nemo_archive import (
    CONFIG,
    NEMO_VERSION,
    Archive,
    import_tokenizer,
    stored_name,
    tokenizer_files,
    write_archive,
)

GPT_TARGET = "nemo.collections.nlp.models.language_modeling.megatron_gpt_model.MegatronGPTModel"


def _gpt_config_yaml(config: Any, tp: int, tokenizer: dict) -> dict:
    """model_config.yaml of MegatronGPTModel (examples/nlp/language_modeling/conf/
    megatron_gpt_config.yaml at v1.11.0), with the architecture fields later versions name."""
    return {
        "micro_batch_size": 4,
        "global_batch_size": 8,
        "tensor_model_parallel_size": tp,
        "pipeline_model_parallel_size": 1,
        "resume_from_checkpoint": None,
        "encoder_seq_length": config.block_size,
        "max_position_embeddings": config.block_size,
        "num_layers": config.n_layer,
        "hidden_size": config.n_embd,
        "ffn_hidden_size": 4 * config.n_embd,
        "num_attention_heads": config.n_head,
        "init_method_std": 0.02,
        "hidden_dropout": config.dropout,
        "attention_dropout": config.attn_dropout,
        "kv_channels": None,
        "apply_query_key_layer_scaling": True,
        "layernorm_epsilon": config.layer_norm_epsilon,
        "make_vocab_size_divisible_by": 128,
        "pre_process": True,
        "post_process": True,
        "persist_layer_norm": True,
        "bias": True,
        "activation": "gelu",
        "normalization": "layernorm",
        "position_embedding_type": "learned_absolute",
        "share_embeddings_and_output_weights": True,
        "megatron_legacy": False,
        "tokenizer": tokenizer,
        "native_amp_init_scale": 4294967296,
        "native_amp_growth_interval": 1000,
        "hysteresis": 2,
        "fp32_residual_connection": False,
        "fp16_lm_cross_entropy": False,
        "megatron_amp_O2": False,
        "seed": 1234,
        "use_cpu_initialization": False,
        "onnx_safe": False,
        "gradient_as_bucket_view": True,
        "activations_checkpoint_method": None,
        "activations_checkpoint_num_layers": None,
        "sequence_parallel": False,
        "data": {
            "data_prefix": None,
            "index_mapping_dir": None,
            "data_impl": "mmap",
            "splits_string": "900,50,50",
            "seq_length": config.block_size,
            "skip_warmup": True,
            "num_workers": 2,
            "dataloader_type": "single",
            "reset_position_ids": False,
            "reset_attention_mask": False,
            "eod_mask_loss": False,
        },  # fmt: skip
        "optim": {"name": "fused_adam", "lr": 2e-4, "weight_decay": 0.01, "betas": [0.9, 0.98]},
        "precision": 32,
        "target": GPT_TARGET,
        "nemo_version": NEMO_VERSION,
    }


def export_gpt(path: str, config: Any, sd: dict, tok, tp: int, out: Path) -> dict:
    from trainer.checkpoint.hf import to_hf_state_dict
    from trainer.checkpoint.megatron_layout import megatron_shards

    if not config.bias:
        raise DataprepError(f"{path}: a GPT without biases; Megatron-GPT has them")
    shards, padded = megatron_shards(config, to_hf_state_dict(sd, config), tp)
    ranks = [{"model.language_model." + k: v for k, v in s.items()} for s in shards]
    files = tokenizer_files(tok)
    if set(files) != {"vocab.json", "merges.txt"}:
        raise DataprepError(f"{path}: a GPT .nemo needs a GPT-2 BPE tokenizer, not {tok.name}")
    stored = {base: stored_name(base) for base in files}
    tokenizer = {"library": "megatron", "type": "GPT2BPETokenizer", "model": None,
                 "vocab_file": "nemo:" + stored["vocab.json"],
                 "merge_file": "nemo:" + stored["merges.txt"], "delimiter": None,
                 "sentencepiece_legacy": False}  # fmt: skip
    write_archive(out, _gpt_config_yaml(config, tp, tokenizer), ranks,
                  {stored[b]: data for b, data in files.items()})  # fmt: skip
    return {"architecture": "Megatron-GPT", "padded_vocab_size": padded}


def import_gpt(archive: Archive, root: Path) -> tuple[Any, dict, str, dict]:
    from trainer.checkpoint.hf import from_hf_state_dict
    from trainer.checkpoint.megatron_layout import MegatronShape, states_to_hf
    from trainer.models.gpt import GPTConfig

    cfg, where = archive.config, str(archive.path)
    for name, ok, what in [
        ("position_embedding_type", lambda v: v in (None, "learned_absolute"), "rotary positions"),
        ("activation", lambda v: v in (None, "gelu"), "an activation other than GELU"),
        ("normalization", lambda v: v in (None, "layernorm"), "RMSNorm"),
        ("bias", lambda v: v in (None, True), "linear layers without biases"),
        ("share_embeddings_and_output_weights", lambda v: v in (None, True), "an untied head"),
        ("num_query_groups", lambda v: v in (None, cfg.get("num_attention_heads")),
         "grouped-query attention"),
        ("mcore_gpt", lambda v: not v, "the megatron-core (mcore) layout"),
        ("num_moe_experts", lambda v: not v, "a mixture-of-experts model"),
    ]:  # fmt: skip
        if not ok(cfg.get(name)):
            raise DataprepError(
                f"{where}: {what} ({name}={cfg.get(name)!r}); import-nemo reads Megatron-GPT with "
                "the GPT-2 architecture"
            )
    h, heads = cfg.get("hidden_size"), cfg.get("num_attention_heads")
    if cfg.get("ffn_hidden_size") not in (None, 4 * (h or 0)):
        raise DataprepError(f"{where}: ffn_hidden_size {cfg['ffn_hidden_size']} is not 4 x {h}")
    if cfg.get("kv_channels") not in (None, (h or 0) // (heads or 1)):
        raise DataprepError(f"{where}: kv_channels {cfg['kv_channels']} is not hidden / heads")
    shape = MegatronShape(
        num_layers=cfg.get("num_layers"), hidden_size=h, num_attention_heads=heads,
        max_position_embeddings=cfg.get("max_position_embeddings")
        or cfg.get("encoder_seq_length"),
    )  # fmt: skip
    if None in vars(shape).values():
        raise DataprepError(f"{where}:{CONFIG} lacks the model's shape: {vars(shape)}")
    t = cfg.get("tokenizer") or {}
    if t.get("type") == "GPT2BPETokenizer" or t.get("vocab_file"):
        files = {
            "vocab.json": archive.artifact(t.get("vocab_file"), "tokenizer.vocab_file"),
            "merges.txt": archive.artifact(t.get("merge_file"), "tokenizer.merge_file"),
        }
    elif t.get("model"):
        files = {"spiece.model": archive.artifact(t.get("model"), "tokenizer.model")}
    else:
        raise DataprepError(f"{where}: tokenizer {t!r} names no files in the archive")
    prefix = "model.language_model."
    states = {}
    for rank, sd in archive.weights().items():
        if any(k.startswith("model.module.") for k in sd):  # megatron_amp_O2 (NeMo adds it)
            sd = {k.replace("model.module.", "model.", 1): v for k, v in sd.items()}
        if not any(k.startswith(prefix) for k in sd):
            raise DataprepError(
                f"{where}: rank {rank} holds no {prefix}* keys (found {next(iter(sd), None)!r})"
            )
        states[rank] = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    version = 0.0 if cfg.get("megatron_legacy") else 3.0
    spec = import_tokenizer(files, root)
    from dataprep.tokenizers import load_tokenizer

    tok = load_tokenizer(spec)
    hf, rows = states_to_hf(where, states, version=version, shape=shape, vocab_size=tok.vocab_size)
    config = GPTConfig(n_layer=shape.num_layers, n_head=heads, n_embd=h,
                       block_size=shape.max_position_embeddings, vocab_size=tok.vocab_size,
                       layer_norm_epsilon=cfg.get("layernorm_epsilon", 1e-5))  # fmt: skip
    tp, pp = 1 + max(r[0] for r in states), 1 + max(r[1] for r in states)
    return (
        config,
        from_hf_state_dict(hf, config),
        spec,
        {"architecture": "Megatron-GPT", "tp": tp, "pp": pp, "rows": rows},
    )
