"""`dataprep export-megatron CKPT OUT`: a GPT checkpoint in Megatron-LM's legacy layout."""

from __future__ import annotations

import argparse

HELP = "write a GPT checkpoint in Megatron-LM's legacy layout (release/mp_rank_XX) at any TP"
DESCRIPTION = """\
Write a GPT checkpoint (any TP it was trained at) as Megatron-LM saves one:
OUT/latest_checkpointed_iteration.txt ("release") and OUT/release/mp_rank_XX/model_optim_rng.pt for
each of the --tensor-model-parallel-size ranks, holding {"model": {"language_model": {"embedding",
"encoder"}}, "checkpoint_version": 3.0, "args": Namespace(...)}; the vocabulary is padded as
Megatron pads it (a multiple of 128 x TP, zero rows). Megatron-LM reads it with --load OUT
--use-checkpoint-args (no optimizer state: add --no-load-optim --no-load-rng --finetune), and so
do the tools built for that layout. OUT is written under a temporary name and renamed when whole.

examples:
  dataprep export-megatron out/smoke/gpt/checkpoint out/megatron-gpt
  dataprep export-megatron out/smoke/gpt/checkpoint out/mlm-tp2 --tensor-model-parallel-size 2"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="GPT checkpoint or --save root")
    p.add_argument("output", metavar="OUT", help="directory to write")
    p.add_argument("--tensor-model-parallel-size", type=int, default=1,
                   help="TP ranks to shard into (1)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")


def run(args: argparse.Namespace) -> int:
    import os

    from dataprep.errors import UsageError
    from trainer.checkpoint.megatron import export_megatron

    if not os.path.exists(args.checkpoint):
        raise UsageError(f"checkpoint {args.checkpoint}: no such directory")
    out = export_megatron(args.checkpoint, args.output, tp=args.tensor_model_parallel_size,
                          overwrite=args.overwrite)  # fmt: skip
    c = out["config"]
    print(
        f"{out['path']}: Megatron-LM legacy GPT (checkpoint_version 3.0, release, "
        f"TP={out['tp']}), {c.n_layer} layers, hidden {c.n_embd}, {c.n_head} heads, vocabulary "
        f"{out['vocab_size']:,} padded to {out['padded_vocab_size']:,}, from {out['source']}"
    )
    return 0
