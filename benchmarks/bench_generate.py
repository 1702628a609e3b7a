"""`dataprep generate` tokens/s with and without the KV cache, side by side in one run.

    python benchmarks/bench_generate.py [--presets gpt-tiny gptj-tiny gpt-125m] [--new 128]
        [--prompt-tokens 32] [--batch 1 4] [--rounds 3] [--threads 2]

Each preset is built with random weights (seed 0; GPT-2's vocabulary of 50257) and decodes
greedily from the same random prompts twice per round: with the cache (each step feeds one
position) and without it (each step runs the whole prefix again). The two must give the same
tokens; the table shows new tokens per second (batch x tokens / seconds, medians of interleaved
rounds) and their ratio. Absolute times on a shared machine are noise; the ratio is the figure.
"""

from __future__ import annotations

import argparse
import statistics
import time


def run_once(model, prompts, new: int, use_cache: bool):
    from trainer.inference.generate import SamplingParams, generate_ids

    params = SamplingParams(tokens_to_generate=new, greedy=True, use_cache=use_cache)
    t0 = time.perf_counter()
    ids, _, _ = generate_ids(model, prompts, params, eod_id=None)
    return time.perf_counter() - t0, ids


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["gpt-tiny", "gptj-tiny", "gpt-125m"])
    p.add_argument("--new", type=int, default=128, help="tokens to generate per prompt (128)")
    p.add_argument("--prompt-tokens", type=int, default=32, help="prompt length (32)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="prompts per batch (1 4)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds, median (3)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    args = p.parse_args()

    import torch

    from trainer.models import build_model, config_from_preset

    torch.set_num_threads(args.threads)
    print(f"greedy, {args.prompt_tokens}-token prompts, {args.new} new tokens, "
          f"{args.threads} threads, median of {args.rounds} interleaved rounds")  # fmt: skip
    print()
    print("| model | parameters | batch | tokens/s, KV cache | tokens/s, no cache | cache ÷ none |")
    print("| --- | --- | --- | --- | --- | --- |")
    for preset in args.presets:
        torch.manual_seed(0)
        model = build_model(config_from_preset(preset, vocab_size=50257)).eval()
        params = sum(p.numel() for p in model.parameters())
        if args.prompt_tokens + args.new > model.config.block_size:
            raise SystemExit(f"{preset}: prompt + new tokens exceed its context")
        for batch in args.batch:
            g = torch.Generator().manual_seed(1)
            prompts = torch.randint(0, 50257, (batch, args.prompt_tokens), generator=g).tolist()
            run_once(model, prompts, 4, True)  # warm-up
            times = {True: [], False: []}
            for _ in range(args.rounds):
                outputs = {}
                for use_cache in (True, False):
                    seconds, ids = run_once(model, prompts, args.new, use_cache)
                    times[use_cache].append(seconds)
                    outputs[use_cache] = ids
                if outputs[True] != outputs[False]:
                    raise SystemExit(f"{preset}: the cache changed the greedy tokens")
            rate = {k: batch * args.new / statistics.median(v) for k, v in times.items()}
            print(f"| {preset} | {params / 1e6:.1f} M | {batch} | {rate[True]:.1f} | "
                  f"{rate[False]:.1f} | {rate[True] / rate[False]:.2f} |")  # fmt: skip
    print()
    print("same greedy tokens with and without the cache in every round")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
