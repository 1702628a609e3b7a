"""`dataprep import-hf HF_DIR CKPT`: a Hugging Face GPT-2 / GPT-J / mT5 folder as a checkpoint."""

from __future__ import annotations

import argparse

HELP = "turn a Hugging Face GPT-2 / GPT-J / mT5 folder into a checkpoint dataprep train loads"
DESCRIPTION = """\
Turn a Hugging Face model folder (save_pretrained: config.json + weights) of a supported
architecture -- gpt2 (GPT2LMHeadModel), gptj (GPTJForCausalLM), mt5 (MT5ForConditionalGeneration)
-- into a checkpoint CKPT/iter_0000000 that `dataprep train --load CKPT` continues from at any TP
size (the model is taken from the checkpoint when --model is not given; there is no optimizer
state, so AdamW starts fresh at step 0). The vocabulary is padded to Megatron's 128 rows with zero
rows that take no part in the loss. `dataprep export-hf CKPT OUT` gives back identical tensors.

example:
  dataprep import-hf out/hf-gpt out/ckpt-from-hf
  dataprep train --data-path out/pile_text_document --load out/ckpt-from-hf --save out/ckpt-ft
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("hf_dir", metavar="HF_DIR", help="a Hugging Face model folder")
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint root to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CKPT")


def run(args: argparse.Namespace) -> int:
    from trainer.checkpoint.hf import import_hf

    path, config = import_hf(args.hf_dir, args.checkpoint, overwrite=args.overwrite)
    print(
        f"{path}: {type(config).__name__} from {args.hf_dir}, vocabulary {config.vocab_size:,} "
        f"({config.padded_vocab_size:,} rows); continue with dataprep train --load "
        f"{args.checkpoint}"
    )
    return 0
