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
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch

from dataprep.errors import ConfigError, DataprepError, UsageError
from trainer.checkpoint.safe_pickle import load_pt

GPT_TARGET = "nemo.collections.nlp.models.language_modeling.megatron_gpt_model.MegatronGPTModel"
T5_TARGET = "nemo.collections.nlp.models.language_modeling.megatron_t5_model.MegatronT5Model"
NEMO_VERSION = "1.11.0"
WEIGHTS = "model_weights.ckpt"
CONFIG = "model_config.yaml"
RANK = re.compile(r"(?:mp_rank_(\d{2})|tp_rank_(\d{2})_pp_rank_(\d{3}))/" + re.escape(WEIGHTS))


# --------------------------------------------------------------------------------- the archive
class Archive:
    """A `.nemo` file opened for reading: its config and its members by name (no "./")."""

    def __init__(self, path: str | os.PathLike) -> None:
        import yaml

        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"{self.path}: no such file")
        try:
            self.tar = tarfile.open(self.path, "r:*")  # plain tar, or gzip'd (NeMo < 1.7)
            self.members = {
                m.name.removeprefix("./"): m for m in self.tar.getmembers() if m.isfile()
            }
        except (tarfile.TarError, EOFError, OSError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataprepError(
                f"{self.path}: not a .nemo archive (a tar, plain or gzip'd): {first}"
            ) from None
        if CONFIG not in self.members:
            raise DataprepError(
                f"{self.path}: no {CONFIG} in the archive (found: "
                f"{', '.join(sorted(self.members)[:5]) or 'nothing'})"
            )
        try:
            self.config = yaml.safe_load(self.read(CONFIG)) or {}
        except yaml.YAMLError as e:
            raise DataprepError(f"{self.path}:{CONFIG}: not YAML: {e}") from None
        if not isinstance(self.config, dict):
            raise DataprepError(f"{self.path}:{CONFIG}: not a mapping")

    def read(self, name: str) -> bytes:
        f = self.tar.extractfile(self.members[name])
        if f is None:
            raise DataprepError(f"{self.path}: {name} is not a file")
        try:
            return f.read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataprepError(f"{self.path}: {name}: truncated archive ({e})") from None

    def artifact(self, value: Any, what: str) -> bytes:
        """The bytes of a file the config names as `nemo:<name>`."""
        if not isinstance(value, str) or not value.startswith("nemo:"):
            raise DataprepError(
                f"{self.path}: {what} is {value!r}, not a file inside the archive (nemo:...)"
            )
        name = value[len("nemo:") :]
        if name not in self.members:
            raise DataprepError(f"{self.path}: {what} names {name}, which the archive lacks")
        return self.read(name)

    def weights(self) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
        """{(tp, pp): state dict}, every rank file loaded (weights_only)."""
        out = {}
        if WEIGHTS in self.members:
            out[(0, 0)] = self.read_weights(WEIGHTS)
        for name in self.members:
            m = RANK.fullmatch(name)
            if m:
                tp = int(m.group(1) if m.group(1) is not None else m.group(2))
                out[(tp, int(m.group(3) or 0))] = self.read_weights(name)
        if not out:
            raise DataprepError(
                f"{self.path}: no {WEIGHTS} (nor mp_rank_XX/{WEIGHTS}) in the archive"
            )
        tp, pp = 1 + max(r[0] for r in out), 1 + max(r[1] for r in out)
        missing = [(t, p) for t in range(tp) for p in range(pp) if (t, p) not in out]
        if missing:
            raise DataprepError(f"{self.path}: weights of (tp, pp) ranks {missing} are missing")
        return out

    def read_weights(self, name: str) -> dict[str, torch.Tensor]:
        sd = load_pt(io.BytesIO(self.read(name)), what="NeMo weights file",
                     name=f"{self.path}:{name}")  # fmt: skip
        if not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd):
            raise DataprepError(f"{self.path}:{name}: not a state dict")
        return sd


def write_archive(out: Path, config: dict, ranks: list[dict[str, torch.Tensor]],
                  files: dict[str, bytes]) -> None:  # fmt: skip
    """A .nemo as NeMo >= 1.7 writes it (plain tar of "."), under a temporary name, renamed."""
    import yaml

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        folder = Path(tmp) / "folder"
        folder.mkdir()
        (folder / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        for name, data in files.items():
            (folder / name).write_bytes(data)
        if len(ranks) == 1:
            torch.save(ranks[0], folder / WEIGHTS)
        else:
            for r, sd in enumerate(ranks):
                (folder / f"mp_rank_{r:02d}").mkdir()
                torch.save(sd, folder / f"mp_rank_{r:02d}" / WEIGHTS)
        part = Path(tmp) / "archive.nemo"
        with tarfile.open(part, "w:") as tar:
            tar.add(folder, arcname=".")
        os.replace(part, out)


def _stored_name(basename: str) -> str:
    return f"{uuid.uuid4().hex}_{basename}"


# --------------------------------------------------------------------------------- tokenizers
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _shipped(files: dict[str, bytes]) -> str | None:
    """The name of the shipped tokenizer whose files these are, if any."""
    from dataprep.tokenizers.base import ASSETS_DIR

    candidates = {
        "gpt2": {"vocab.json": ASSETS_DIR / "gpt2" / "vocab.json",
                 "merges.txt": ASSETS_DIR / "gpt2" / "merges.txt"},
        "mt5-toy": {"spiece.model": ASSETS_DIR / "mt5-toy" / "spiece.model"},
    }  # fmt: skip
    for name, paths in candidates.items():
        if set(paths) == set(files) and all(
            p.is_file() and _sha(p.read_bytes()) == _sha(files[k]) for k, p in paths.items()
        ):
            return name
    return None


def tokenizer_files(tok) -> dict[str, bytes]:
    """The files of one of our tokenizers, by their usual basename."""
    if getattr(tok, "kind", "") == "bytelevel-bpe":
        vocab = Path(tok._vocab_json)
        return {"vocab.json": vocab.read_bytes(),
                "merges.txt": (vocab.parent / "merges.txt").read_bytes()}  # fmt: skip
    model_file = getattr(tok, "model_file", None)
    if model_file:
        return {"spiece.model": Path(model_file).read_bytes()}
    raise DataprepError(
        f"tokenizer {tok.name}: only GPT-2 BPE files (vocab.json + merges.txt) and SentencePiece "
        "models go into a .nemo"
    )


def _import_tokenizer(files: dict[str, bytes], root: Path) -> str:
    """A tokenizer spec for files read from an archive: a shipped name, or the files kept."""
    name = _shipped(files)
    if name:
        return name
    keep = root / "tokenizer"
    keep.mkdir(parents=True, exist_ok=True)
    for base, data in files.items():
        (keep / base).write_bytes(data)
    return str((keep / "spiece.model") if "spiece.model" in files else keep)


# --------------------------------------------------------------------------------- GPT
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


def _export_gpt(path: str, config: Any, sd: dict, tok, tp: int, out: Path) -> dict:
    from trainer.checkpoint.hf import to_hf_state_dict
    from trainer.checkpoint.megatron import megatron_shards

    if not config.bias:
        raise DataprepError(f"{path}: a GPT without biases; Megatron-GPT has them")
    shards, padded = megatron_shards(config, to_hf_state_dict(sd, config), tp)
    ranks = [{"model.language_model." + k: v for k, v in s.items()} for s in shards]
    files = tokenizer_files(tok)
    if set(files) != {"vocab.json", "merges.txt"}:
        raise DataprepError(f"{path}: a GPT .nemo needs a GPT-2 BPE tokenizer, not {tok.name}")
    stored = {base: _stored_name(base) for base in files}
    tokenizer = {"library": "megatron", "type": "GPT2BPETokenizer", "model": None,
                 "vocab_file": "nemo:" + stored["vocab.json"],
                 "merge_file": "nemo:" + stored["merges.txt"], "delimiter": None,
                 "sentencepiece_legacy": False}  # fmt: skip
    write_archive(out, _gpt_config_yaml(config, tp, tokenizer), ranks,
                  {stored[b]: data for b, data in files.items()})  # fmt: skip
    return {"architecture": "Megatron-GPT", "padded_vocab_size": padded}


def _import_gpt(archive: Archive, root: Path) -> tuple[Any, dict, str, dict]:
    from trainer.checkpoint.hf import from_hf_state_dict
    from trainer.checkpoint.megatron import MegatronShape, states_to_hf
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
    spec = _import_tokenizer(files, root)
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


# --------------------------------------------------------------------------------- commands
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
        info = _export_gpt(path, config, sd, tok, tp, out)
    elif type(config) is MT5Config:
        info = _export_t5(path, config, sd, tok, tp, out)
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
            config, sd, spec, info = _import_gpt(archive, staging)
        elif target.endswith("MegatronT5Model") or "encoder" in archive.config:
            config, sd, spec, info = _import_t5(archive, staging)
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


# --------------------------------------------------------------------------------- T5 / mT5
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


def _export_t5(path: str, config: Any, sd: dict, tok, tp: int, out: Path) -> dict:
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
    stored = _stored_name("spiece.model")
    tokenizer = {"library": "sentencepiece", "type": None, "model": "nemo:" + stored,
                 "vocab_file": None, "merge_file": None, "num_sentinel_tokens": 100,
                 "sentencepiece_legacy": True, "add_sentinel_tokens_in_reverse_order": True,
                 "add_sentinel_tokens_first": True}  # fmt: skip
    write_archive(out, _t5_config_yaml(config, tp, tokenizer), ranks,
                  {stored: files["spiece.model"]})  # fmt: skip
    return {"architecture": "Megatron-T5 (mT5)", "padded_vocab_size": padded}


def _import_t5(archive: Archive, root: Path) -> tuple[Any, dict, str, dict]:
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
    spec = _import_tokenizer(files, root)
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
