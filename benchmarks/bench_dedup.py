"""build-index --dedup on a corpus with planted duplicates: precision, recall, and MB/s.

    python benchmarks/bench_dedup.py [--copies 0.2] [--workers 2] [--seed 0]

The originals are the shipped Pile and mC4 toy corpora (distinct real documents). Planted
duplicates, appended after them in shuffled order: exact copies (half of them with whitespace
added around the text, which the normalisation trims) and near copies with a few words changed
(0.5-2 % of the words replaced; each change alters up to 5 shingles, so some fall below the 0.8
threshold: their true Jaccard is computed and they are counted apart, as "near < 0.8"). Each
build's `.duplicates.npy` is compared with the planted set: precision = planted among the
removed, recall = removed among the planted, per kind. Then the build's MB/s without dedup,
with exact and with minhash side by side (one subprocess each, start-up included, same input).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KINDS = ("exact", "near", "near_below")


THRESHOLD = 0.8


def jaccard(a: str, b: str) -> float:
    """The true Jaccard similarity of two texts' word 5-gram sets (what MinHash estimates)."""
    from dataprep.dedup import normalize, shingles

    x, y = set(shingles(normalize(a))), set(shingles(normalize(b)))
    return len(x & y) / len(x | y)


def corpus(directory: Path, copies: float, seed: int) -> tuple[Path, dict[int, str], float]:
    from dataprep.readers import expand_inputs, iter_documents

    texts = []
    for where in ("pipelines/toy/pile", "pipelines/toy/mc4"):
        texts += [d.text for p in expand_inputs([str(REPO / where)]) for d in iter_documents(p)]
    texts = list(dict.fromkeys(t for t in texts if len(t.split()) >= 20))  # distinct originals
    rng = random.Random(seed)
    planted: dict[int, str] = {}  # line -> kind
    extra = []
    for i in rng.sample(range(len(texts)), int(len(texts) * copies)):
        extra.append(("exact", (" \n" if rng.random() < 0.5 else "") + texts[i]))
    for i in rng.sample(range(len(texts)), int(len(texts) * copies)):
        words = texts[i].split()
        for j in rng.sample(range(len(words)), max(1, int(len(words) * rng.uniform(0.005, 0.02)))):
            words[j] = "CHANGED"
        copy = " ".join(words)
        extra.append(("near" if jaccard(copy, texts[i]) >= THRESHOLD else "near_below", copy))
    rng.shuffle(extra)
    lines = [*texts]
    for kind, text in extra:
        lines.append(text)
        planted[len(lines)] = kind
    path = directory / "planted.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in lines), encoding="utf-8")
    return path, planted, sum(len(t.encode("utf-8")) for t in lines) / 1e6


def build(src: Path, out: Path, workers: int, *extra: str) -> float:
    args = [sys.executable, "-m", "dataprep", "build-index", "--input", str(src)]
    args += ["--output-prefix", str(out), "--workers", str(workers), "--no-progress", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"build-index failed:\n{proc.stderr}")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--copies", type=float, default=0.2, help="share of originals copied, per kind")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, planted, mb = corpus(Path(tmp), args.copies, args.seed)
        count = {k: sum(v == k for v in planted.values()) for k in KINDS}
        print(
            f"{mb:.1f} MB, {len(planted)} planted duplicates ({count['exact']} exact, "
            f"{count['near']} near with Jaccard >= {THRESHOLD}, {count['near_below']} near "
            f"below it) among {max(planted)} documents"
        )
        print(
            "| --dedup | seconds | MB/s | removed | precision | recall: exact | near | "
            f"near < {THRESHOLD} |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for mode in (None, "exact", "minhash"):
            out = Path(tmp) / (mode or "none")
            seconds = build(src, out, args.workers, *(["--dedup", mode] if mode else []))
            row = f"| {mode or 'off'} | {seconds:.2f} | {mb / seconds:.2f} |"
            if mode is None:
                print(row + " - | - | - | - | - |")
                continue
            pairs = np.load(f"{out}_text_document.duplicates.npy")
            removed = set(pairs[:, 1].tolist())
            hit = removed & set(planted)
            precision = len(hit) / len(removed) if removed else 1.0
            recall = {k: len([x for x in hit if planted[x] == k]) / max(1, count[k]) for k in KINDS}
            print(
                row + f" {len(removed)} | {precision:.3f} | {recall['exact']:.3f} | "
                f"{recall['near']:.3f} | {recall['near_below']:.3f} |"
            )


if __name__ == "__main__":
    main()
