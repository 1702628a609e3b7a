"""`dataprep import-megatron SRC CKPT`: a Megatron-LM GPT checkpoint as one of ours."""

from __future__ import annotations

import argparse

HELP = (
    "turn a Megatron-LM GPT checkpoint (345M zip, model_optim_rng.pt, --save dir) into a checkpoint"
)
DESCRIPTION = """\
Read a Megatron-LM GPT checkpoint of the GPT-2 architecture (learned positions, LayerNorm, GELU,
tied head) and write CKPT/iter_0000000, which generate, serve, eval, export-hf and train --load
use. SRC is a .zip laid out as NVIDIA's GPT-2 345M release (release/mp_rank_00/model_optim_rng.pt),
one model_optim_rng.pt, or a Megatron-LM --save directory (latest_checkpointed_iteration.txt, then
release/ or iter_*/ with mp_rank_XX[_YYY]/): every TP rank and PP stage is merged. Every
checkpoint_version Megatron wrote (0, 1, 2, 3: the fused QKV row orders) is read. The shape comes
from the checkpoint's args; without args (the oldest releases) pass Megatron's own flags. Files are
read with torch's weights_only loader (Megatron's enums as inert stand-ins): nothing in them runs.
The tokenizer is GPT-2's BPE unless --tokenizer names another; the padded embedding rows beyond it
are dropped.

examples:
  dataprep import-megatron megatron_gpt2_345m_v0_0.zip out/ckpt-345m \\
      --num-layers 24 --hidden-size 1024 --num-attention-heads 16 --max-position-embeddings 1024
  dataprep import-megatron /runs/gpt/checkpoints out/ckpt-run      # TP/PP merged, args read
  dataprep generate out/ckpt-345m --prompt "The capital of France is" --greedy"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SRC", help=".zip, model_optim_rng.pt or a --save directory")
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint root to write")
    p.add_argument("--tokenizer", default="gpt2", help="tokenizer spec (gpt2)")
    for flag in ("--num-layers", "--hidden-size", "--num-attention-heads",
                 "--max-position-embeddings"):  # fmt: skip
        p.add_argument(
            flag, type=int, help="the model's shape when SRC has no args (Megatron's flag)"
        )
    p.add_argument("--overwrite", action="store_true", help="replace an existing CKPT")


def run(args: argparse.Namespace) -> int:
    from dataprep.errors import UsageError
    from trainer.checkpoint.megatron import import_megatron

    flags = {k: getattr(args, k) for k in ("num_layers", "hidden_size", "num_attention_heads",
                                           "max_position_embeddings")}  # fmt: skip
    for k, v in flags.items():
        if v is not None and v < 1:
            raise UsageError(f"--{k.replace('_', '-')} must be >= 1, got {v}")
    path, config, info = import_megatron(
        args.source,
        args.checkpoint,
        flags=flags,
        tokenizer=args.tokenizer,
        overwrite=args.overwrite,
    )
    print(
        f"{path}: GPT ({config.n_layer} layers, hidden {config.n_embd}, {config.n_head} heads, "
        f"{config.block_size} positions) from {info['source']}: checkpoint_version "
        f"{info['checkpoint_version']:g}, TP={info['tp']} PP={info['pp']} merged, "
        f"{info['rows']:,} embedding rows -> vocabulary {config.vocab_size:,}"
        + ("" if info["args"] else " (shape from flags: the file has no args)")
    )
    return 0
