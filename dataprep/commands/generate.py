"""`dataprep generate CKPT --prompt TEXT`: sample text from a GPT / GPT-J checkpoint
(trainer/inference/generate.py), NeMo's flags and response object."""

from __future__ import annotations

import argparse
import json
import os

HELP = "generate text from a GPT or GPT-J checkpoint with NeMo's sampling flags (KV cache, TP)"
DESCRIPTION = """\
Continue one or more prompts with a checkpoint of `dataprep train --save` (GPT or GPT-J, any TP
size; the --save root means its latest iteration). The flags are NeMo's sampling parameters with
the same names, defaults and meanings; all prompts run as one padded batch, each getting up to
--tokens-to-generate new tokens, decoded with a KV cache. --json prints NeMo's response object
(sentences, tokens, token_ids, logprob, offsets; full_logprob with --all-probs). logprob[i] is the
model's log-probability of token i + 1 given the tokens before it (raw model, before temperature
and the other sampling changes). --nproc-per-node 2 runs the model tensor-parallel over 2 local
ranks (same output as one process).

examples:
  dataprep generate out/ckpt-gpt --prompt "The capital of France is" --greedy
  dataprep generate out/ckpt-gpt --prompt "Once upon a time" --prompt "import numpy" \\
      --tokens-to-generate 40 --top-k 40 --top-p 0.9 --temperature 0.8 --random-seed 7
  dataprep generate out/ckpt-gpt --prompts-file prompts.txt --greedy --json > out.json
  dataprep generate out/ckpt-gpt --prompt "Hello" --greedy --nproc-per-node 2"""


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """NeMo's sampling flags (shared with `dataprep eval`-style callers)."""
    g = p.add_argument_group("sampling (NeMo's parameters)")
    g.add_argument("--tokens-to-generate", type=int, default=64, help="new tokens per prompt (64)")
    g.add_argument("--temperature", type=float, default=1.0, help="in (0, 100] (1.0)")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = off")
    g.add_argument("--top-p", type=float, default=0.9, help="nucleus mass in [0, 1]; 0 = off (0.9)")
    g.add_argument("--greedy", action="store_true", help="argmax decoding (ignores temperature)")
    g.add_argument(
        "--repetition-penalty", type=float, default=1.0, help="CTRL penalty >= 1; 1 = off"
    )
    g.add_argument(
        "--min-tokens-to-generate", type=int, default=0, help="no end of document before this many"
    )
    g.add_argument("--add-BOS", dest="add_BOS", action="store_true", help="prepend BOS / EOD")
    g.add_argument("--all-probs", action="store_true", help="add full_logprob to --json output")
    g.add_argument(
        "--end-strings",
        nargs="*",
        default=["<|endoftext|>"],
        metavar="S",
        help="stop a prompt once its generation ends with one of these (<|endoftext|>)",
    )
    g.add_argument("--random-seed", type=int, default=None, help="seed for reproducible sampling")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory or --save root")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for several)")
    p.add_argument("--prompts-file", help="a text file with one prompt per line")
    p.add_argument("--tokenizer", help="tokenizer spec (default: the one recorded in CKPT)")
    p.add_argument("--json", action="store_true", help="print NeMo's response object as JSON")
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="run tensor-parallel over N local ranks (TP = N)",
    )
    p.add_argument("--no-kv-cache", action="store_true", help="recompute the prefix every step")
    add_sampling_arguments(p)


def sampling_params(args: argparse.Namespace):
    from trainer.inference.generate import SamplingParams

    return SamplingParams(
        tokens_to_generate=args.tokens_to_generate,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        greedy=args.greedy,
        repetition_penalty=args.repetition_penalty,
        min_tokens_to_generate=args.min_tokens_to_generate,
        add_BOS=args.add_BOS,
        all_probs=args.all_probs,
        end_strings=tuple(args.end_strings),
        random_seed=args.random_seed,
        use_cache=not getattr(args, "no_kv_cache", False),
    )


def _prompts(args: argparse.Namespace) -> list[str]:
    from dataprep.errors import UsageError

    prompts = list(args.prompt)
    if args.prompts_file:
        if not os.path.isfile(args.prompts_file):
            raise UsageError(f"--prompts-file {args.prompts_file}: no such file")
        with open(args.prompts_file, encoding="utf-8") as f:
            prompts += [line.rstrip("\n") for line in f if line.strip()]
    if not prompts:
        raise UsageError("no prompt: pass --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


def run(args: argparse.Namespace) -> int:
    from dataprep.errors import UsageError

    if not os.path.exists(args.checkpoint):
        raise UsageError(f"checkpoint {args.checkpoint}: no such directory")
    prompts = _prompts(args)
    params = sampling_params(args)  # checks the ranges before anything is loaded
    job = {"checkpoint": args.checkpoint, "tokenizer": args.tokenizer, "prompts": prompts,
           "json": args.json, "params": {k: getattr(params, k) for k in params.field_names()},
           "use_cache": params.use_cache}  # fmt: skip
    if args.nproc_per_node < 1:
        raise UsageError(f"--nproc-per-node must be >= 1, got {args.nproc_per_node}")
    from trainer.launch import launch_local, torchrun_rank

    if torchrun_rank() is not None:  # a rank of `torchrun -m dataprep generate`: TP = world size
        return _rank_job(job)
    if args.nproc_per_node > 1:
        return launch_local(
            args.nproc_per_node,
            "dataprep.commands.generate:worker_main",
            json.dumps(job),
            report_errors=True,
        )
    return _run_job(job, tp_group=None, rank=0)


def shown(text: str) -> str:
    """Text in double quotes with JSON's escapes (\\n, \\t, \\u0000): a completion of spaces or
    newlines is visible, and its edges are clear."""
    return json.dumps(text, ensure_ascii=False)


def _run_job(job: dict, *, tp_group, rank: int) -> int:
    from trainer.inference.generate import SamplingParams, generate
    from trainer.inference.loading import load_for_inference

    params = SamplingParams(**job["params"], use_cache=job["use_cache"])
    model, tok, _ = load_for_inference(
        job["checkpoint"], tp_group=tp_group, tokenizer=job["tokenizer"]
    )
    response, prompt_lengths = generate(model, tok, job["prompts"], params, tp_group=tp_group)
    if rank == 0:
        if job["json"]:
            print(json.dumps(response, ensure_ascii=False))
        else:
            for i, prompt in enumerate(job["prompts"]):
                new = response["token_ids"][i][prompt_lengths[i] :]
                lps = response["logprob"][i][prompt_lengths[i] - 1 :]
                mean = sum(lps) / len(lps) if lps else float("nan")
                print(f"[{i}] prompt: {shown(prompt)}")
                print(f"    generated ({len(new)} tokens, mean logprob {mean:.3f}): "
                      f"{shown(tok.decode(new))}")  # fmt: skip
    return 0


def worker_main() -> int:
    """A rank started by `launch_local` for --nproc-per-node N: TP = N."""
    from trainer.launch import rank_main

    return rank_main(lambda payload: _rank_job(json.loads(payload)), name="dataprep generate")


def _rank_job(job: dict) -> int:
    """`job` on this rank, the model tensor-parallel over all ranks of the job."""
    from trainer.launch import dist_env, setup_distributed, teardown_distributed

    layout = setup_distributed(dist_env().world_size)
    try:
        return _run_job(job, tp_group=layout.tp_group, rank=layout.rank)
    finally:
        teardown_distributed(layout)
