"""Megatron-LM legacy GPT checkpoints in and out (GPT-2 architecture).

Layout (Megatron-LM `save_checkpoint`, non-distributed): `SAVE/latest_checkpointed_iteration.txt`
("release" or an iteration), `SAVE/{release|iter_NNNNNNN}/mp_rank_XX[_YYY]/model_optim_rng.pt`,
one file per TP rank XX (and PP rank YYY when PP > 1); NVIDIA's GPT-2 345M release is a zip of
`release/mp_rank_00/model_optim_rng.pt`. Each file holds `model.language_model` with `embedding`
(`word_embeddings` rows split over TP, `position_embeddings`) and `transformer` (older) or
`encoder` (newer) with `layers.{i}.*` and `final_layernorm.*`; `checkpoint_version` (absent: 0)
and `args` (an `argparse.Namespace`, absent in the oldest releases).

The fused QKV rows are ordered by `checkpoint_version`: 0 `[3, heads, head_dim]`, 1.0
`[heads, head_dim, 3]`, >= 2.0 `[heads, 3, head_dim]`, within each TP rank's block of heads.
Reading turns every rank's block into q, k and v before merging ranks; writing uses version 3.0.
Files are read with `trainer.checkpoint.safe_pickle.load_pt` (weights_only, Megatron's enums as
inert stand-ins): nothing in them runs.

The import goes through the GPT-2 (Hugging Face) names and layouts of `trainer.checkpoint.hf`, so
the name tables are written once: Megatron <-> HF GPT-2 in `trainer.checkpoint.megatron_layout`
(the layer table and the QKV row orders), HF GPT-2 <-> ours in `trainer.checkpoint.hf`.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from dataprep.errors import ConfigError, DataprepError, UsageError
from trainer.checkpoint.megatron_layout import MegatronShape, megatron_shards, states_to_hf
from trainer.checkpoint.safe_pickle import load_pt

TRACKER = "latest_checkpointed_iteration.txt"
FILE = "model_optim_rng.pt"
RANK_DIR = re.compile(r"mp_rank_(\d{2})(?:_(\d{3}))?$")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = tree
    return out


# -------------------------------------------------------------------------------------- reading
def _rank_files(src: Path) -> tuple[dict[tuple[int, int], Any], str]:
    """{(tp, pp): loaded file} and a description of where they came from."""
    if src.is_file() and zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as z:
            members = [m for m in z.namelist() if m.endswith("/" + FILE)]
            found = {}
            for m in members:
                rank = RANK_DIR.match(m.split("/")[-2])
                if rank:
                    found[m] = (int(rank.group(1)), int(rank.group(2) or 0))
            if not any(tp == 0 and pp == 0 for tp, pp in found.values()):
                raise DataprepError(
                    f"{src}: the zip holds no mp_rank_00/{FILE} (found: "
                    f"{', '.join(z.namelist()[:5]) or 'nothing'}); expected Megatron-LM's layout "
                    f"such as release/mp_rank_00/{FILE}"
                )
            dirs = {m.rsplit("/", 2)[0] for m in found}
            if len(dirs) > 1:
                raise DataprepError(f"{src}: the zip holds several iterations {sorted(dirs)}")
            out = {}
            for m, rank in found.items():
                with z.open(m) as f:
                    out[rank] = load_pt(io.BytesIO(f.read()), what="Megatron-LM checkpoint",
                                        name=f"{src}:{m}")  # fmt: skip
            return out, f"{src} ({next(iter(dirs))})"
    if src.is_file():
        return {(0, 0): load_pt(src, what="Megatron-LM checkpoint")}, str(src)
    if not src.is_dir():
        raise UsageError(f"{src}: no such file or directory")
    it = src
    tracker = src / TRACKER
    if tracker.is_file():
        text = tracker.read_text().strip()
        it = src / ("release" if text == "release" else f"iter_{int(text):07d}") if (
            text == "release" or text.isdigit()) else None  # fmt: skip
        if it is None:
            raise DataprepError(f"{tracker}: expected 'release' or an iteration, got {text!r}")
        if not it.is_dir():
            raise DataprepError(f"{tracker} names {it.name}, which is not in {src}")
    ranks = {}
    for d in sorted(it.iterdir()) if it.is_dir() else []:
        m = RANK_DIR.match(d.name)
        if m and (d / FILE).is_file():
            ranks[(int(m.group(1)), int(m.group(2) or 0))] = d / FILE
    if not ranks:
        raise DataprepError(
            f"{src}: no Megatron-LM checkpoint here (expected {TRACKER} and "
            f"release/ or iter_*/ with mp_rank_00/{FILE})"
        )
    return {r: load_pt(p, what="Megatron-LM checkpoint") for r, p in ranks.items()}, str(it)


def _check_architecture(where: str, args: Any, keys: list[str]) -> None:
    def has(*parts: str) -> bool:
        return any(all(p in k for p in parts) for k in keys)

    if has("decoder.") and has("encoder."):
        raise DataprepError(
            f"{where}: an encoder-decoder (T5) checkpoint; import-megatron reads GPT"
        )
    if has("binary_head") or has("lm_head.dense") or has("pooler"):
        raise DataprepError(f"{where}: a BERT checkpoint; import-megatron reads GPT")
    if has("decoder.layers") or has("linear_qkv"):
        raise DataprepError(
            f"{where}: a megatron-core (mcore) GPTModel checkpoint; import-megatron reads the "
            "legacy language_model layout"
        )
    if has("experts") or has("router"):
        raise DataprepError(f"{where}: a mixture-of-experts checkpoint; only dense GPT-2 is read")
    if args is None:
        return
    checks = [
        ("num_experts", lambda v: not v, "a mixture-of-experts model"),
        ("swiglu", lambda v: not v, "a SwiGLU MLP"),
        ("normalization", lambda v: v in (None, "LayerNorm"), "RMSNorm"),
        ("position_embedding_type", lambda v: v in (None, "learned_absolute"), "rotary positions"),
        ("use_rotary_position_embeddings", lambda v: not v, "rotary positions"),
        ("untie_embeddings_and_output_weights", lambda v: not v, "an untied output layer"),
        ("group_query_attention", lambda v: not v, "grouped-query attention"),
        ("add_bias_linear", lambda v: v in (None, True), "linear layers without biases"),
        ("apply_layernorm_1p", lambda v: not v, "LayerNorm 1p"),
    ]
    for name, ok, what in checks:
        value = getattr(args, name, None)
        if not ok(value):
            raise DataprepError(
                f"{where}: {what} ({name}={value!r}); import-megatron reads the GPT-2 "
                "architecture (learned positions, LayerNorm, GELU, tied head)"
            )


def read_megatron(
    src: str | os.PathLike, *, flags: dict[str, int | None], vocab_size: int
) -> tuple[dict[str, torch.Tensor], MegatronShape, dict]:
    """(HF GPT-2 state dict with `vocab_size` rows, shape, facts about the source)."""
    src = Path(src)
    files, where = _rank_files(src)
    first = files[(0, 0)]
    if not isinstance(first, dict) or "model" not in first:
        raise DataprepError(f"{where}: not a Megatron-LM checkpoint (no 'model' at its top level)")
    args = first.get("args")
    version = float(first.get("checkpoint_version", 0) or 0)
    tp = 1 + max(r[0] for r in files)
    pp = 1 + max(r[1] for r in files)
    missing = [(t, p) for t in range(tp) for p in range(pp) if (t, p) not in files]
    if missing:
        raise DataprepError(f"{where}: rank files missing for (tp, pp) {missing}")
    states = {}
    for rank, f in files.items():
        lm = f.get("model", {}).get("language_model") if isinstance(f.get("model"), dict) else None
        if lm is None:
            keys = list(_flatten(f.get("model", {})))
            _check_architecture(where, args, keys)
            raise DataprepError(f"{where}: no model.language_model in {rank}; not a legacy GPT")
        states[rank] = _flatten(lm)
    keys = [k for s in states.values() for k in s]
    _check_architecture(where, args, keys)
    shape = _shape(where, args, flags, states)
    hf, rows = states_to_hf(where, states, version=version, shape=shape, vocab_size=vocab_size)
    info = {"source": where, "checkpoint_version": version, "tp": tp, "pp": pp,
            "rows": rows, "args": args is not None}  # fmt: skip
    return hf, shape, info


def _shape(where: str, args: Any, flags: dict[str, int | None], states: dict) -> MegatronShape:
    fields = ("num_layers", "hidden_size", "num_attention_heads", "max_position_embeddings")
    values = {}
    for name in fields:
        value = getattr(args, name, None) if args is not None else None
        flag = flags.get(name)
        if value is not None and flag is not None and flag != value:
            raise ConfigError(
                f"{{{name}}} {flag} contradicts the checkpoint's args ({value})", name
            )
        values[name] = value if value is not None else flag
    absent = [n for n, v in values.items() if v is None]
    if absent:
        raise ConfigError(
            f"{ConfigError.quote(where)} has no args with the model's shape; pass Megatron's "
            f"{' '.join('{' + n + '}' for n in absent)} (NVIDIA's GPT-2 345M: {{num_layers}} 24 "
            "{hidden_size} 1024 {num_attention_heads} 16 {max_position_embeddings} 1024)",
            *fields,
        )
    shape = MegatronShape(**values)
    found = {int(k.split(".")[2]) for s in states.values() for k in s if ".layers." in k}
    stages = 1 + max(r[1] for r in states)
    if len(found) * stages != shape.num_layers:
        raise DataprepError(
            f"{where}: {len(found) * stages} layers in the files, but the shape says "
            f"{shape.num_layers}"
        )
    ffn = getattr(args, "ffn_hidden_size", None) if args is not None else None
    if ffn not in (None, 4 * shape.hidden_size):
        raise DataprepError(
            f"{where}: ffn_hidden_size {ffn} is not 4 x hidden_size {shape.hidden_size}; only "
            "the GPT-2 MLP is read"
        )
    return shape


def import_megatron(src, root, *, flags: dict[str, int | None], tokenizer: str = "gpt2",
                    overwrite: bool = False) -> tuple[str, Any, dict]:  # fmt: skip
    """A Megatron-LM GPT checkpoint -> our checkpoint `root/iter_0000000` (step 0, no optimizer
    state); (its path, config, facts about the source)."""
    import shutil

    from dataprep.tokenizers import load_tokenizer
    from trainer import checkpoint as ckpt
    from trainer.checkpoint.hf import from_hf_state_dict
    from trainer.models import build_model
    from trainer.models.gpt import GPTConfig

    root = Path(root)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise ConfigError(
            f"{ConfigError.quote(root)} exists and is not empty; pass {{overwrite}}", "overwrite"
        )
    tok = load_tokenizer(tokenizer)
    hf, shape, info = read_megatron(src, flags=flags, vocab_size=tok.vocab_size)
    config = GPTConfig(n_layer=shape.num_layers, n_head=shape.num_attention_heads,
                       n_embd=shape.hidden_size, block_size=shape.max_position_embeddings,
                       vocab_size=tok.vocab_size)  # fmt: skip
    model = build_model(config)
    model.load_state_dict(from_hf_state_dict(hf, config))
    if overwrite and root.exists():
        shutil.rmtree(root)
    source = str(Path(src).absolute())
    path = ckpt.save_checkpoint(root, model, None, step=0,
                                extra={"step": 0, "imported_from": source},
                                info={"tokenizer": tok.spec, "imported_from": source})  # fmt: skip
    return str(path), config, info


# -------------------------------------------------------------------------------------- writing
def megatron_args(config: Any, *, tp: int, padded: int, tokenizer_type: str) -> argparse.Namespace:
    """The `args` Megatron-LM's `--use-checkpoint-args` and the converters read."""
    return argparse.Namespace(
        num_layers=config.n_layer,
        hidden_size=config.n_embd,
        ffn_hidden_size=4 * config.n_embd,
        num_attention_heads=config.n_head,
        kv_channels=config.n_embd // config.n_head,
        max_position_embeddings=config.block_size,
        seq_length=config.block_size,
        position_embedding_type="learned_absolute",
        add_position_embedding=True,
        use_rotary_position_embeddings=False,
        normalization="LayerNorm",
        layernorm_epsilon=config.layer_norm_epsilon,
        apply_layernorm_1p=False,
        add_bias_linear=True,
        add_qkv_bias=True,
        swiglu=False,
        openai_gelu=True,  # ours is GPT-2's tanh GELU
        bias_gelu_fusion=False,
        untie_embeddings_and_output_weights=False,
        group_query_attention=False,
        num_query_groups=1,
        num_experts=None,
        apply_query_key_layer_scaling=False,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=1,
        make_vocab_size_divisible_by=128,
        padded_vocab_size=padded,
        orig_vocab_size=config.vocab_size,
        tokenizer_type=tokenizer_type,
        hidden_dropout=config.dropout,
        attention_dropout=config.attn_dropout,
        fp16=False,
        bf16=False,
        iteration=0,
        consumed_train_samples=0,
        consumed_valid_samples=0,
    )


def export_megatron(ckpt_path, out, *, tp: int = 1, overwrite: bool = False) -> dict:
    """Our GPT checkpoint -> Megatron-LM's legacy layout at TP `tp` (checkpoint_version 3.0,
    `release`); facts about what was written."""
    import shutil
    import tempfile

    from dataprep.tokenizers import load_tokenizer
    from trainer.checkpoint import (
        load_config,
        merge_checkpoint,
        read_metadata,
        resolve_checkpoint,
        tokenizer_spec,
    )
    from trainer.checkpoint.hf import to_hf_state_dict
    from trainer.models.gpt import GPTConfig

    path = resolve_checkpoint(ckpt_path)
    config = load_config(path)
    if type(config) is not GPTConfig:
        raise DataprepError(
            f"{path}: holds a {type(config).__name__.removesuffix('Config')}; export-megatron "
            "writes the GPT-2 architecture (GPT)"
        )
    if not config.bias:
        raise DataprepError(f"{path}: a GPT without biases; Megatron's GPT-2 layout has them")
    if tp < 1 or config.n_head % tp or (4 * config.n_embd) % tp:
        raise ConfigError(
            f"{{tensor_model_parallel_size}} {tp}: must be >= 1 and divide the {config.n_head} "
            "heads",
            "tensor_model_parallel_size",
        )
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{ConfigError.quote(out)} exists; pass {{overwrite}}", "overwrite")
    spec = tokenizer_spec(read_metadata(path))
    kind = "GPT2BPETokenizer"
    if spec:
        tok = load_tokenizer(spec)
        kind = "GPT2BPETokenizer" if getattr(tok, "kind", "") == "bytelevel-bpe" else \
            "HuggingFaceTokenizer"  # fmt: skip
    sd, _ = merge_checkpoint(path)
    shards, padded = megatron_shards(config, to_hf_state_dict(sd, config), tp)
    args = megatron_args(config, tp=tp, padded=padded, tokenizer_type=kind)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists()
                                else None))  # fmt: skip
    try:
        (tmp / TRACKER).write_text("release")
        for r, shard in enumerate(shards):
            encoder = {
                k[len("encoder.") :]: v for k, v in shard.items() if k.startswith("encoder.")
            }
            state = {
                "model": {"language_model": {
                    "embedding": {
                        "word_embeddings": {"weight": shard["embedding.word_embeddings.weight"]},
                        "position_embeddings": {
                            "weight": shard["embedding.position_embeddings.weight"]},
                    },
                    "encoder": encoder,
                }},
                "checkpoint_version": 3.0,
                "args": args,
                "iteration": 0,
            }  # fmt: skip
            d = tmp / "release" / f"mp_rank_{r:02d}"
            d.mkdir(parents=True)
            torch.save(state, d / FILE)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"path": str(out), "tp": tp, "padded_vocab_size": padded,
            "vocab_size": config.vocab_size, "source": path, "config": config}  # fmt: skip
