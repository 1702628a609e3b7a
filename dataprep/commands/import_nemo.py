"""`dataprep import-nemo FILE.nemo CKPT`: a NeMo 1.x Megatron-GPT or Megatron-T5 archive."""

from __future__ import annotations

import argparse

HELP = "turn a NeMo 1.x .nemo (Megatron-GPT, Megatron-T5/mT5, any TP) into a checkpoint"
DESCRIPTION = """\
Read a NeMo 1.x .nemo archive (a tar, gzip'd before NeMo 1.7: model_config.yaml, model_weights.ckpt
or mp_rank_XX/model_weights.ckpt per TP rank, the tokenizer files the config names) and write
CKPT/iter_0000000 for generate, serve, eval, fill-mask, export-hf and train --load. Megatron-GPT
must have the GPT-2 architecture (learned positions, LayerNorm, GELU, tied head); Megatron-T5 the T5
v1.1 / mT5 one NeMo's HF converter writes (relative position buckets, RMSNorm, gated GELU, untied
head). The ranks are merged; the weights are read with torch's weights_only loader, so nothing in
the archive runs. The tokenizer comes from the archive: files equal to a shipped tokenizer become
its name (gpt2, mt5-toy), others are kept in CKPT/tokenizer/.

examples:
  dataprep import-nemo nemo_gpt1.3B_fp16.nemo out/ckpt-gpt-1.3b
  dataprep import-nemo out/mt5.nemo out/ckpt-mt5
  dataprep fill-mask out/ckpt-mt5 --prompt "La capitale de la France est <mask>." """


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="FILE.nemo", help="the .nemo archive")
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint root to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CKPT")


def run(args: argparse.Namespace) -> int:
    from trainer.checkpoint.nemo import import_nemo

    path, config, info = import_nemo(args.source, args.checkpoint, overwrite=args.overwrite)
    print(
        f"{path}: {type(config).__name__.removesuffix('Config')} from {info['source']} "
        f"({info['architecture']}, TP={info['tp']} PP={info['pp']} merged, {info['rows']:,} "
        f"embedding rows -> vocabulary {config.vocab_size:,}), tokenizer {info['tokenizer']}"
    )
    return 0
