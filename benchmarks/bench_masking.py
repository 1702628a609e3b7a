"""T5 span corruption throughput: samples/s of `T5Samples` at encoder length 512 (568 raw tokens).

The synthetic dataset is a real `.bin/.idx` pair (int32 ids below an mT5-sized vocabulary,
documents of random length) written to a temporary directory, so the numbers include reading the
memory map. `masking_samples_per_second(...)` is importable, e.g. to set the masking cost beside
a training step time.

    python benchmarks/bench_masking.py [--num-samples 5000] [--seq-length 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from dataprep.indexed import IndexedDatasetReader, IndexedDatasetWriter
from dataprep.sampling.t5 import (
    canonical_sentinel_ids,
    noise_spans_to_sentinels,
    random_spans_noise_mask,
)
from dataprep.sampling.t5_samples import T5Samples

MT5_VOCAB = 250_100  # mT5: <extra_id_0> = 250099


def write_synthetic_dataset(
    prefix: str | Path, *, num_tokens: int, vocab_size: int = MT5_VOCAB, seed: int = 0
) -> str:
    """Documents of 50..3000 random ids (none a sentinel), num_tokens in all; returns the prefix."""
    rng = np.random.default_rng(seed)
    with IndexedDatasetWriter(prefix, dtype=np.int32) as w:
        written = 0
        while written < num_tokens:
            n = min(int(rng.integers(50, 3000)), num_tokens - written)
            w.add_document(rng.integers(3, vocab_size - 100, size=n, dtype=np.int32))
            written += n
    return str(prefix)


def masking_samples_per_second(
    *,
    inputs_length: int = 512,
    num_samples: int = 5000,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    vocab_size: int = MT5_VOCAB,
    seed: int = 1234,
    prefix: str | Path | None = None,
) -> float:
    """Samples/s of T5Samples[k] for k = 0..num_samples-1 (one process, one thread).

    Over the dataset at `prefix`, or a synthetic one with exactly num_samples chunks.
    """
    sentinels = canonical_sentinel_ids(vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        if prefix is None:
            tokens_length, _ = T5Samples.lengths_for(
                inputs_length,
                noise_density=noise_density,
                mean_noise_span_length=mean_noise_span_length,
            )
            prefix = write_synthetic_dataset(
                Path(tmp) / "synthetic",
                vocab_size=vocab_size,
                num_tokens=num_samples * tokens_length,
            )
        samples = T5Samples(
            IndexedDatasetReader(prefix),
            sentinel_ids=sentinels,
            eos_id=1,
            inputs_length=inputs_length,
            noise_density=noise_density,
            mean_noise_span_length=mean_noise_span_length,
            seed=seed,
        )
        n = min(num_samples, len(samples))
        samples[0]  # warm up
        t0 = time.perf_counter()
        for k in range(n):
            samples[k]
        return n / (time.perf_counter() - t0)


def _stage_rates(inputs_length: int, num_samples: int) -> dict[str, float]:
    """Samples/s of the mask alone and of mask + both sentinel replacements, on one chunk."""
    tokens_length, _ = T5Samples.lengths_for(inputs_length)
    tokens = np.arange(tokens_length, dtype=np.int64)
    sentinels = canonical_sentinel_ids(MT5_VOCAB)
    rates = {}
    t0 = time.perf_counter()
    for k in range(num_samples):
        random_spans_noise_mask(
            tokens_length,
            noise_density=0.15,
            mean_noise_span_length=3.0,
            rng=np.random.default_rng([1234, k]),
        )
    rates["mask only (default_rng([seed, k]) + mask)"] = num_samples / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for k in range(num_samples):
        m = random_spans_noise_mask(
            tokens_length,
            noise_density=0.15,
            mean_noise_span_length=3.0,
            rng=np.random.default_rng([1234, k]),
        )
        noise_spans_to_sentinels(tokens, m, sentinel_ids=sentinels)
        noise_spans_to_sentinels(tokens, ~m, sentinel_ids=sentinels)
    rates["mask + inputs + targets"] = num_samples / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for k in range(num_samples):
        np.random.default_rng([1234, k])
    rates["default_rng([seed, k]) alone"] = num_samples / (time.perf_counter() - t0)
    return rates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--seq-length", type=int, default=512)
    args = p.parse_args(argv)
    tokens_length, targets_length = T5Samples.lengths_for(args.seq_length)
    print(
        f"encoder {args.seq_length}, raw chunk {tokens_length}, target {targets_length}; "
        f"{args.num_samples} samples, mT5 vocabulary ({MT5_VOCAB})"
    )
    for name, rate in _stage_rates(args.seq_length, args.num_samples).items():
        print(f"  {name:<45} {rate:>10,.0f} samples/s")
    rate = masking_samples_per_second(inputs_length=args.seq_length, num_samples=args.num_samples)
    print(
        f"  {'T5Samples[k] over a .bin/.idx dataset':<45} {rate:>10,.0f} samples/s"
        f"  ({rate * tokens_length / 1e6:.2f} M raw tokens/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
