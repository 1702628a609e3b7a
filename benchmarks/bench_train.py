"""Training throughput through the real loop: tokens/s at TP=1 and TP=2, data-wait share, MFU.

For gpt-tiny and a bigger GPT (4 layers, d 256, 4 heads; reference/tensor-parallel.md §5 used it)
on a synthetic GPT-2-vocabulary dataset, and for mt5-tiny, it runs `trainer.train` (TP=1 in this
process with 2 torch threads, TP=2 as two local ranks with 1 thread each) and reads the metrics
JSONL:

- tokens/s: median over the steps after the first two;
- data wait: time the loop waited for the prefetch thread / loop time (goal < 1 %);
- MFU: model FLOPs per token (`flops_per_token`, 6N + attention) x tokens/s divided by a fp32 matmul
  peak measured here (a 2048^3 torch.matmul on 2 threads): a fraction of what this machine does;
- masking vs training: T5 span-corruption samples/s (`bench_masking.masking_samples_per_second`, one
  thread) over the samples/s one mt5-tiny step consumes; above 1 means one core masks faster than
  training eats, so the prefetch thread keeps up.

CPU times vary by up to 2x on a shared machine: compare the rows of one run, not runs.

    python benchmarks/bench_train.py [--steps 12] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dataprep.indexed import IndexedDatasetWriter
from trainer.metrics import read_metrics
from trainer.train import TrainConfig, resolve_model_config, run, train


def write_dataset(
    prefix: Path, *, vocab: int, num_tokens: int, spec: str, eos: int | None, seed: int = 0
) -> str:
    """Random documents of 50..2000 ids below `vocab` (a zipf-ish mix, as text), with a manifest."""
    rng = np.random.default_rng(seed)
    top = vocab - 200  # keep clear of sentinels
    written = 0
    with IndexedDatasetWriter(prefix, dtype=np.uint16) as w:
        while written < num_tokens:
            n = int(rng.integers(50, 2000))
            ids = np.minimum(rng.zipf(1.3, size=n), top - 1) + 2
            if eos is not None:
                ids[-1] = eos
            w.add_document(ids.astype(np.uint16))
            written += n
    Path(str(prefix) + ".json").write_text(
        json.dumps(
            {
                "tokens": written,
                "max_token_id": top + 1,
                "tokenizer": {"spec": spec, "vocab_size": vocab},
            }
        )
    )
    return str(prefix)


def matmul_peak_flops(n: int = 2048, threads: int = 2, repeats: int = 5) -> float:
    """Best fp32 FLOP/s of an n^3 matmul on `threads` threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    torch.set_num_threads(old)
    return 2 * n**3 / best


def measure(config: TrainConfig) -> dict:
    """Run one training job; tokens/s, step time and data-wait share from its metrics."""
    if config.tensor_model_parallel_size == 1:
        train(config)
    elif run(config) != 0:
        raise SystemExit(f"training failed: {config}")
    recs = [r for r in read_metrics(config.metrics) if "loss" in r][2:]
    step = sum(r["step_time_s"] for r in recs)
    return {
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in recs),
        "step_s": statistics.median(r["step_time_s"] for r in recs),
        "data_wait_share": sum(r["data_wait_s"] for r in recs) / step if step else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--repeats", type=int, default=1, help="alternate TP=1/TP=2 runs N times")
    args = p.parse_args(argv)

    peak = matmul_peak_flops()
    print(f"fp32 matmul peak (2048^3, 2 threads): {peak / 1e9:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gpt = write_dataset(tmp / "gpt", vocab=50257, num_tokens=400_000, spec="gpt2", eos=50256)
        from dataprep.tokenizers import load_tokenizer

        mt5_tok = load_tokenizer("mt5-toy")
        mt5 = write_dataset(
            tmp / "mt5",
            vocab=mt5_tok.vocab_size,
            num_tokens=300_000,
            spec="mt5-toy",
            eos=mt5_tok.eos_id,
            seed=1,
        )
        bigger = tmp / "gpt-small4.json"
        bigger.write_text(
            json.dumps({"preset": "gpt-tiny", "n_layer": 4, "n_embd": 256, "n_head": 4})
        )
        cases = [
            ("gpt-tiny", dict(data_path=(gpt,), model="gpt-tiny", seq_length=128)),
            ("gpt 4x256", dict(data_path=(gpt,), model=str(bigger), seq_length=128)),
            ("mt5-tiny", dict(data_path=(mt5,), model="mt5-tiny", encoder_seq_length=128)),
        ]
        print(
            f"\n{'model':10s} {'TP':>2s} {'tokens/s':>9s} {'s/step':>7s} {'data wait':>9s} "
            f"{'MFU':>6s}"
        )
        mt5_step_s = {}
        for name, kw in cases:
            rows: dict[int, list[dict]] = {1: [], 2: []}
            for rep in range(args.repeats):
                for tp in (1, 2):
                    cfg = TrainConfig(
                        micro_batch_size=8,
                        train_iters=args.steps,
                        lr=1e-3,
                        tensor_model_parallel_size=tp,
                        progress=False,
                        num_threads=2 if tp == 1 else 1,
                        make_vocab_size_divisible_by=256,
                        metrics=str(tmp / f"{name}-{tp}-{rep}.jsonl"),
                        **kw,
                    )
                    rows[tp].append(measure(cfg))
            kind, mc = resolve_model_config(
                cfg,
                vocab_size=json.loads(Path(kw["data_path"][0] + ".json").read_text())["tokenizer"][
                    "vocab_size"
                ],
            )
            from trainer.models import build_model

            model = build_model(mc)
            if kind == "gpt":
                fpt = model.flops_per_token(kw["seq_length"])
            else:
                from dataprep.sampling.t5 import T5Samples

                dec = T5Samples.lengths_for(kw["encoder_seq_length"])[1]
                fpt = model.flops_per_token(kw["encoder_seq_length"], dec)
            for tp in (1, 2):
                r = {k: statistics.median(x[k] for x in rows[tp]) for k in rows[tp][0]}
                mfu = fpt * r["tokens_per_s"] / peak
                print(
                    f"{name:10s} {tp:2d} {r['tokens_per_s']:9,.0f} {r['step_s']:7.3f} "
                    f"{100 * r['data_wait_share']:8.2f}% {100 * mfu:5.1f}%"
                )
                if kind == "mt5":
                    mt5_step_s[tp] = r["step_s"]

    try:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_masking import masking_samples_per_second
    except ImportError:
        print("\nbenchmarks/bench_masking.py not found: masking ratio skipped")
        return 0
    sps = masking_samples_per_second(inputs_length=128, num_samples=2000)
    print(f"\nT5 masking: {sps:,.0f} samples/s on one thread (encoder length 128)")
    for tp, s in sorted(mt5_step_s.items()):
        train_sps = 8 / s
        print(
            f"mt5-tiny TP={tp}: one step of 8 samples takes {s * 1e3:.0f} ms = {train_sps:,.0f} "
            f"samples/s; masking / training = {sps / train_sps:,.1f}x "
            f"(masking one step's batch = {100 * train_sps / sps:.2f}% of the step)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
