"""`dataprep export-hf CKPT OUT`: a trained checkpoint as a Hugging Face folder
(trainer/checkpoint/hf.py)."""

from __future__ import annotations

import argparse

HELP = "write a dataprep train checkpoint as a Hugging Face model folder (GPT-2, GPT-J, mT5)"
DESCRIPTION = """\
Write a checkpoint of `dataprep train --save` (any TP size; given the --save root, its latest
iteration) as a folder that transformers loads with nothing else: GPT -> GPT2LMHeadModel, GPT-J ->
GPTJForCausalLM (AutoModelForCausalLM), mT5 -> MT5ForConditionalGeneration
(AutoModelForSeq2SeqLM). The TP shards are merged, the padded vocabulary rows cut to the
tokenizer's size, the weights written as model.safetensors with config.json and a
generation_config.json holding the eos/pad ids, and the tokenizer the data was built with saved
beside them (AutoTokenizer gives the same ids; checked on probe texts). Before the folder is
renamed into place it is loaded back with transformers and its logits are compared with the
checkpoint's on a probe batch (limit 1e-4).

examples:
  dataprep export-hf out/smoke/gpt/ckpt out/hf-gpt
  python -c "import transformers as t; m = t.AutoModelForCausalLM.from_pretrained('out/hf-gpt')"
  dataprep export-hf out/ckpt-mt5/iter_0000300 out/hf-mt5 --tokenizer mt5-toy
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory or --save root")
    p.add_argument("out", metavar="OUT", help="output folder (must not exist, or --overwrite)")
    p.add_argument(
        "--tokenizer",
        help="tokenizer spec (default: the one recorded at training time / in the data manifest)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip loading the folder back to compare logits (saves memory for big models)",
    )


def run(args: argparse.Namespace) -> int:
    from trainer.checkpoint.hf import export_hf

    s = export_hf(
        args.checkpoint, args.out, tokenizer=args.tokenizer, overwrite=args.overwrite,
        verify=args.verify,
    )  # fmt: skip
    check = (
        f"logits equal the checkpoint's within {s.max_logit_diff:.1e}"
        if s.max_logit_diff is not None
        else "not loaded back (--no-verify)"
    )
    print(
        f"{s.out}: {s.hf_class}, {s.params:,} parameters, vocabulary {s.vocab_size:,} "
        f"(checkpoint rows {s.padded_vocab_size:,}), from {s.checkpoint} (step {s.step}, TP={s.tp})"
    )
    print(f"  tokenizer {s.tokenizer}; reloaded with transformers: {check}")
    return 0
