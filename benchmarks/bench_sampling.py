"""GPT sample-index build time: dataprep (numpy) vs megatron-core (its C++ helpers), side by side.

Synthetic dataset: --docs documents with lengths drawn from a long-tailed distribution (a few
million tokens). Both sides build the same document, sample and shuffle indices (checked equal) for
the same configuration; the table shows the best of --repeats interleaved runs and our/their ratio
(< 1: ours faster). Also the blending indices for 2, 3 and 5 datasets (weights 1:2:..:n and
Dirichlet-random) and 10 and 22 datasets (Dirichlet; the Pile has 22 components).

    python benchmarks/bench_sampling.py [--docs 100000] [--seq-length 1024] [--epochs 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from dataprep.sampling import (
    build_blending_indices,
    build_document_index,
    build_sample_index,
    build_shuffle_index,
)
from dataprep.sampling.gpt import plan_epochs


def best_of(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--seq-length", type=int, default=1024)
    ap.add_argument("--epochs", type=float, default=2.5, help="samples requested, in epochs")
    ap.add_argument("--blend-size", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    warnings.filterwarnings("ignore")
    from megatron.core.datasets import helpers
    from megatron.core.datasets.gpt_dataset import _build_document_index, _build_shuffle_index

    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.lognormal(3.0, 1.0, args.docs).astype(np.int32) + 1, 20_000)
    tokens = int(lengths.sum())
    L, E, seed = args.seq_length, 1, 1234
    indices = np.arange(args.docs, dtype=np.int32)
    num_samples = int(args.epochs * (tokens - E) // L)
    epochs, separate, sans_final = plan_epochs(tokens, num_samples, seq_length=L, add_extra_token=E)
    print(
        f"{args.docs} documents, {tokens:,} tokens, seq_length {L}, {num_samples} samples asked "
        f"-> {epochs} epochs (separate final epoch: {separate})"
    )

    def ours():
        r = np.random.RandomState(seed)
        di = build_document_index(indices, epochs, r, separate)
        t0 = time.perf_counter()
        si = build_sample_index(
            lengths, di, seq_length=L, num_epochs=epochs, tokens_per_epoch=tokens
        )
        ours.sample_time = time.perf_counter() - t0
        total = len(si) - 1
        sh = build_shuffle_index(sans_final if separate else total, total, r)
        return di, si, sh

    def theirs():
        r = np.random.RandomState(seed)
        di = _build_document_index(indices, epochs, r, separate)
        t0 = time.perf_counter()
        si = helpers.build_sample_idx(lengths, di, L, epochs, tokens, True, True)
        theirs.sample_time = time.perf_counter() - t0
        total = len(si) - 1
        sh = _build_shuffle_index(sans_final if separate else total, total, r)
        return di, si, sh

    rows = []
    t_ours_all, t_theirs_all, t_ours_si, t_theirs_si = [], [], [], []
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        t, a = best_of(ours, 1)
        t_ours_all.append(t)
        t_ours_si.append(ours.sample_time)
        t, b = best_of(theirs, 1)
        t_theirs_all.append(t)
        t_theirs_si.append(theirs.sample_time)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y), "arrays differ from megatron-core"
    rows.append(("sample index (build_sample_idx)", min(t_ours_si), min(t_theirs_si)))
    rows.append(("document + sample + shuffle", min(t_ours_all), min(t_theirs_all)))

    rng = np.random.default_rng(0)
    blends = [(f"{num} datasets 1:..:{num}", np.arange(1, num + 1)) for num in (2, 3, 5)]
    blends += [(f"{num} datasets Dirichlet", rng.dirichlet(np.ones(num))) for num in (2, 3, 5)]
    blends += [(f"{num} datasets Dirichlet", rng.dirichlet(np.ones(num))) for num in (10, 22)]
    for label, raw in blends:
        w = (raw / np.sum(raw)).tolist()
        num, size = len(w), args.blend_size

        def cpp(w=w, num=num, size=size):
            d, s = np.zeros(size, np.int16), np.zeros(size, np.int64)
            helpers.build_blending_indices(d, s, w, num, size, False)
            return d, s

        t_ours, t_theirs = [], []
        for _ in range(args.repeats):  # interleaved
            t, (od, os_) = best_of(lambda w=w, size=size: build_blending_indices(w, size), 1)
            t_ours.append(t)
            t, (td, ts) = best_of(cpp, 1)
            t_theirs.append(t)
        assert np.array_equal(od, td) and np.array_equal(os_, ts), "blend differs"
        rows.append((f"blending, {label}, {size:,}", min(t_ours), min(t_theirs)))

    print(f"{'':48} {'dataprep':>10} {'megatron':>10} {'ratio':>7}")
    for name, to, tt in rows:
        print(f"{name:48} {to * 1e3:8.1f}ms {tt * 1e3:8.1f}ms {to / tt:7.2f}")


if __name__ == "__main__":
    main()
