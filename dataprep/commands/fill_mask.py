"""`dataprep fill-mask CKPT --prompt "... <mask> ..."`: mT5 span filling
(trainer/inference/fill_mask.py)."""

from __future__ import annotations

import argparse
import json
import os

HELP = "fill <mask> spans of a prompt with an mT5 checkpoint (the Megatron-mT5 card's answer)"
DESCRIPTION = """\
Replace each <mask> of the prompt by the next sentinel (<extra_id_0>, <extra_id_1>, ..., as
`dataprep preview-masking --prompt` shows), run the encoder on it (EOS appended, as in training)
and decode greedily until EOS. Prints the fills and each generated token with its log-probability;
--json prints the Megatron-mT5 card's object {"prompt", "completion": {"text", "tokens": [[id,
piece, logprob], ...]}, "masked_input"} (one line per prompt). The tokens are those of
transformers' MT5ForConditionalGeneration.generate (greedy) on the same weights.

examples:
  dataprep fill-mask out/ckpt-mt5 --prompt "La capitale de la France est <mask>."
  dataprep fill-mask out/ckpt-mt5 --prompt "Die <mask> ist <mask>." --json"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="mT5 checkpoint directory or --save root")
    p.add_argument("--prompt", action="append", default=[], help="text with <mask> (repeatable)")
    p.add_argument("--tokenizer", help="tokenizer spec (default: the one recorded in CKPT)")
    p.add_argument("--tokens-to-generate", type=int, default=32, help="decoder tokens at most (32)")
    p.add_argument("--json", action="store_true", help="print the card's object, one per line")


def run(args: argparse.Namespace) -> int:
    from dataprep.errors import UsageError
    from trainer.inference.fill_mask import check_model, fill_mask, masked_ids
    from trainer.inference.loading import load_for_inference

    if not os.path.exists(args.checkpoint):
        raise UsageError(f"checkpoint {args.checkpoint}: no such directory")
    if not args.prompt:
        raise UsageError('no prompt: pass --prompt "text with <mask>" (repeatable)')
    model, tok, _ = load_for_inference(args.checkpoint, tokenizer=args.tokenizer)
    check_model(model)  # a GPT's tokenizer has no sentinels: say what is wrong, not that
    for prompt in args.prompt:
        masked_ids(prompt, tok)  # every prompt checked before any output
    for prompt in args.prompt:
        answer = fill_mask(model, tok, prompt, max_new_tokens=args.tokens_to_generate)
        if args.json:
            print(json.dumps(answer, ensure_ascii=False))
            continue
        print(f"prompt:       {answer['prompt']}")
        print(f"masked input: {answer['masked_input']}")
        print(f"completion:   {answer['completion']['text']}")
        for t, piece, lp in answer["completion"]["tokens"]:
            print(f"  {t:>6} {piece!r:<20} logprob {lp:.4f}")
    return 0
