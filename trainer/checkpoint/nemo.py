"""NeMo 1.x `.nemo` archives in and out: Megatron-GPT and Megatron-T5 (mT5), any TP.

The layout, per NVIDIA/NeMo v1.11.0 (commit e856e973) `nemo/core/connectors/
save_restore_connector.py` and `nemo/collections/nlp/parts/nlp_overrides.py`: a tar (gzip'd before
NeMo 1.7; plain since) of the folder `.`, so members are `./model_config.yaml` (the model's
OmegaConf config, with `target` and `nemo_version`), `./model_weights.ckpt` (TP=1: a bare
`torch.save(state_dict)`) or `./mp_rank_XX/model_weights.ckpt` per TP rank
(`./tp_rank_XX_pp_rank_XXX/...` with PP > 1), and the tokenizer files, stored as
`<32 hex>_<basename>` and named `nemo:<32 hex>_<basename>` in the config.

GPT (`MegatronGPTModel`): Megatron's `language_model` keys under `model.` (`model.language_model.
embedding.*`, `...encoder.layers.{i}.*`, `...encoder.final_layernorm.*`), the head tied to the
word embeddings, fused QKV per head `[heads, 3, head_dim]` (`[3, heads, head_dim]` with
`megatron_legacy: true`); the names are Megatron-LM's, so `trainer.checkpoint.megatron` maps them.

T5 / mT5 (`MegatronT5Model`): the layout NeMo's own HF T5 v1.1 / mT5 converter writes
(`scripts/nlp_language_modeling/hf_t5-v1_1_to_nemo.py`, first in v1.13.0, commit 1ff05cce):
relative position buckets (one `[buckets, heads]` table per stack), RMSNorm without biases, gated
GELU (`dense_h_to_4h` and `dense_h_to_4h_2`), an untied `tokens_head`, shared token embeddings,
`megatron_legacy: true` (QKV stored `[Q; K; V]`, cross-attention KV `[K; V]`, per TP rank) and
`normalize_attention_scores: false` (T5 does not scale its scores).

Every weights file is read with `trainer.checkpoint.safe_pickle.load_pt` (weights_only). The
tokenizer carries over both ways: on export its files go into the archive; on import files equal to
a shipped tokenizer (sha256) become its name (`gpt2`, `mt5-toy`), others are kept beside the
checkpoint and recorded by path.

This module holds the two commands; the archive and tokenizer files are in `nemo_archive.py`, the
GPT and T5 conversions in `nemo_gpt.py` and `nemo_t5.py`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from dataprep.errors import ConfigError, DataprepError, UsageError
from trainer.checkpoint.nemo_archive import Archive
from trainer.checkpoint.nemo_gpt import export_gpt, import_gpt
from trainer.checkpoint.nemo_t5 import export_t5, import_t5


def export_nemo(ckpt_path, out, *, tp: int = 1, overwrite: bool = False) -> dict:
    """Our checkpoint (GPT or mT5) -> a .nemo at TP `tp`; facts about what was written."""
    from dataprep.tokenizers import load_tokenizer
    from trainer.checkpoint import (
        load_config,
        merge_checkpoint,
        read_metadata,
        resolve_checkpoint,
        tokenizer_spec,
    )
    from trainer.models.gpt import GPTConfig
    from trainer.models.mt5 import MT5Config

    path = resolve_checkpoint(ckpt_path)
    config = load_config(path)
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{ConfigError.quote(out)} exists; pass {{overwrite}}", "overwrite")
    spec = tokenizer_spec(read_metadata(path))
    if not spec:
        raise UsageError(f"{path}: the checkpoint does not record its tokenizer")
    tok = load_tokenizer(spec)
    heads = config.n_head if isinstance(config, GPTConfig) else getattr(config, "num_heads", 1)
    if tp < 1 or heads % tp:
        raise ConfigError(
            f"{{tensor_model_parallel_size}} {tp}: must be >= 1 and divide {heads} heads",
            "tensor_model_parallel_size",
        )
    sd, _ = merge_checkpoint(path)
    if type(config) is GPTConfig:
        info = export_gpt(path, config, sd, tok, tp, out)
    elif type(config) is MT5Config:
        info = export_t5(path, config, sd, tok, tp, out)
    else:
        raise DataprepError(
            f"{path}: holds a {type(config).__name__.removesuffix('Config')}; export-nemo writes "
            "Megatron-GPT (GPT) and Megatron-T5 (mT5)"
        )
    return {**info, "path": str(out), "tp": tp, "source": path, "config": config,
            "tokenizer": tok.name}  # fmt: skip


def import_nemo(src, root, *, overwrite: bool = False) -> tuple[str, Any, dict]:
    """A .nemo (Megatron-GPT or Megatron-T5/mT5) -> our checkpoint `root/iter_0000000`."""
    from trainer import checkpoint as ckpt
    from trainer.models import build_model

    root = Path(root)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise ConfigError(
            f"{ConfigError.quote(root)} exists and is not empty; pass {{overwrite}}", "overwrite"
        )
    archive = Archive(src)
    target = str(archive.config.get("target", ""))
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent if root.parent.exists()
                                    else None))  # fmt: skip
    try:
        if target.endswith("MegatronGPTModel") or (not target and "encoder" not in archive.config):
            config, sd, spec, info = import_gpt(archive, staging)
        elif target.endswith("MegatronT5Model") or "encoder" in archive.config:
            config, sd, spec, info = import_t5(archive, staging)
        else:
            raise DataprepError(
                f"{archive.path}: a {target or 'model'} archive; import-nemo reads "
                "Megatron-GPT and Megatron-T5 (mT5)"
            )
        model = build_model(config)
        model.load_state_dict(sd)
        if overwrite and root.exists():
            shutil.rmtree(root)
        kept = staging / "tokenizer"
        if kept.exists():  # the tokenizer files travel with the checkpoint
            root.mkdir(parents=True, exist_ok=True)
            shutil.move(str(kept), root / "tokenizer")
            spec = spec.replace(str(kept), str((root / "tokenizer").absolute()))
        source = str(archive.path.absolute())
        path = ckpt.save_checkpoint(root, model, None, step=0,
                                    extra={"step": 0, "imported_from": source},
                                    info={"tokenizer": spec, "imported_from": source})  # fmt: skip
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(path), config, {**info, "source": str(archive.path), "tokenizer": spec}
