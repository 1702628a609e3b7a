"""Reader throughput: `iter_documents` on a synthetic Pile-like `.jsonl.zst` vs raw zstd.

Run: python benchmarks/bench_readers.py [--size-mb 20] [--repeats 3]
Prints MB/s of decompressed bytes for each variant (best of `--repeats`, variants interleaved in one
run, so the ratios hold on a busy machine) and each one's speed as a fraction of raw decompression.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import zstandard

from dataprep.readers import iter_documents, records
from dataprep.readers import jsonl as jsonl_module
from dataprep.readers.compression import open_decompressed


def make_corpus(path: Path, size: int, seed: int = 0) -> int:
    """~`size` bytes of Pile-like JSON Lines (0.5-8 KB docs of word salad) as 4 zstd frames."""
    rng = random.Random(seed)
    words = [
        "".join(rng.choices("etaoinshrdlucmfwypvbgkjqxz", k=rng.randint(1, 10)))
        for _ in range(20_000)
    ]
    words += ["日本語", "中文", "émoji\U0001f600", "naïve"]
    sets = ["Pile-CC", "Github", "PubMed Central", "ArXiv", "Wikipedia (en)"]
    lines, total = [], 0
    while total < size:
        text = " ".join(rng.choices(words, k=rng.randint(80, 1300)))
        line = json.dumps({"text": text, "meta": {"pile_set_name": rng.choice(sets)}}) + "\n"
        lines.append(line.encode())
        total += len(lines[-1])
    data = b"".join(lines)
    cctx = zstandard.ZstdCompressor(level=3)
    quarter = len(data) // 4 + 1
    path.write_bytes(
        b"".join(cctx.compress(data[i : i + quarter]) for i in range(0, len(data), quarter))
    )
    return len(data)


def raw_zstd(path: Path) -> int:
    with open(path, "rb") as fh:
        reader = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(
            fh, read_across_frames=True
        )
        total = 0
        while chunk := reader.read(1 << 20):
            total += len(chunk)
    return total


def our_lines(path: Path) -> int:
    with open_decompressed(path) as reader:
        return sum(len(line) for line in reader)


def documents(path: Path) -> int:
    return sum(len(d.text) for d in iter_documents(path, fmt="pile"))


def documents_stdlib_json(path: Path) -> int:
    saved = jsonl_module.parse_line
    jsonl_module.parse_line = records.parse_line_stdlib  # what orjson saves, side by side
    try:
        return documents(path)
    finally:
        jsonl_module.parse_line = saved


def documents_filtered(path: Path) -> int:
    return sum(1 for _ in iter_documents(path, fmt="pile", filters={"pile_set_name": {"Github"}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl.zst"
        size = make_corpus(path, int(args.size_mb * 1e6))
        packed = path.stat().st_size / 1e6
        print(f"corpus: {size / 1e6:.1f} MB JSON Lines, {packed:.1f} MB zstd (level 3, 4 frames)")
        variants = {
            "raw zstd stream_reader (1 MiB reads)": raw_zstd,
            "open_decompressed: lines": our_lines,
            "iter_documents (pile)": documents,
            "iter_documents, stdlib json": documents_stdlib_json,
            "iter_documents + pile_set_name filter": documents_filtered,
        }
        best = {name: float("inf") for name in variants}
        for _ in range(args.repeats):  # interleaved, so machine load affects all variants alike
            for name, run in variants.items():
                start = time.perf_counter()
                run(path)
                best[name] = min(best[name], time.perf_counter() - start)
        base = size / best["raw zstd stream_reader (1 MiB reads)"]
        print(f"{'variant':<40} {'MB/s':>8} {'vs raw':>7}")
        for name, seconds in best.items():
            rate = size / seconds
            print(f"{name:<40} {rate / 1e6:8.1f} {rate / base:7.2f}")


if __name__ == "__main__":
    main()
