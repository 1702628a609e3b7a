"""Throughput of the indexed-dataset writer, reader and merge, side by side with megatron-core.

    python benchmarks/bench_indexed.py [--tokens 5000000] [--mean-doc-len 500]

Writes the same documents with: our `add_documents` (one flat array), our `add_document` per
document, and megatron-core's `IndexedDatasetBuilder.add_document` per document; then merges 4
copies with ours and with megatron's `add_index`. Prints best-of-3 seconds, Mtokens/s and ratios.
Our writer fsyncs at close (megatron's does not), which is included. Timings on a shared machine
are noisy: compare the ratios, and run twice.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np

from dataprep.indexed import IndexedDatasetReader, IndexedDatasetWriter, merge_datasets


def timed(fn, repeat: int = 3) -> float:
    """Best of `repeat` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=5_000_000)
    ap.add_argument("--mean-doc-len", type=int, default=500)
    args = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(0)
    lengths = rng.geometric(1 / args.mean_doc_len, size=2 * args.tokens // args.mean_doc_len)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), args.tokens)]
    tokens = rng.integers(0, 50257, size=int(lengths.sum()), dtype=np.int64)
    docs = np.split(tokens, np.cumsum(lengths)[:-1])
    n = tokens.size
    print(f"{n:,} tokens in {len(docs):,} documents (uint16)")

    with tempfile.TemporaryDirectory() as d:

        def ours_bulk():
            with IndexedDatasetWriter(f"{d}/bulk", dtype=np.uint16) as w:
                w.add_documents(tokens, lengths)

        def ours_loop():
            with IndexedDatasetWriter(f"{d}/loop", dtype=np.uint16) as w:
                for doc in docs:
                    w.add_document(doc)

        def megatron_loop():
            b = IndexedDatasetBuilder(f"{d}/meg.bin", dtype=np.uint16)
            for doc in docs:
                b.add_document(doc, [doc.size])
            b.finalize(f"{d}/meg.idx")

        def read_all():
            r = IndexedDatasetReader(f"{d}/bulk")
            total = 0
            for i in range(len(r)):
                total += r[i].size
            assert total == n

        def bulk_call_only():
            w = IndexedDatasetWriter(f"{d}/call", dtype=np.uint16)
            t = time.perf_counter()
            w.add_documents(tokens, lengths)
            elapsed.append(time.perf_counter() - t)
            w.abort()

        elapsed: list[float] = []
        for _ in range(3):
            bulk_call_only()
        results = {
            "ours add_documents call alone": min(elapsed),
            "ours add_documents (flat array)": timed(ours_bulk),
            "ours add_document per doc": timed(ours_loop),
            "megatron add_document per doc": timed(megatron_loop),
        }
        base = results["megatron add_document per doc"]
        for name, sec in results.items():
            print(
                f"  write  {name:34s} {sec:7.3f} s  {n / sec / 1e6:8.1f} Mtok/s  "
                f"x{base / sec:6.1f} vs megatron"
            )
        sec = timed(read_all)
        print(
            f"  read   every sequence with reader[i]     {sec:7.3f} s  {n / sec / 1e6:8.1f} Mtok/s"
        )

        parts = [f"{d}/bulk"] * 4
        ours = timed(lambda: merge_datasets(parts, f"{d}/merged", overwrite=True))

        def megatron_merge():
            b = IndexedDatasetBuilder(f"{d}/mmerged.bin", dtype=np.uint16)
            for p in parts:
                b.add_index(p)
            b.finalize(f"{d}/mmerged.idx")

        theirs = timed(megatron_merge)
        print(
            f"  merge  4 copies: ours {ours:.3f} s, megatron {theirs:.3f} s, "
            f"x{theirs / ours:.1f} vs megatron"
        )


if __name__ == "__main__":
    main()
