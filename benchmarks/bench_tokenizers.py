"""GPT-2 tokenization throughput, side by side on the same text: HF tokenizers vs tiktoken variants.

    python benchmarks/bench_tokenizers.py [--mb 12] [--rounds 3] [--input PATH ...]

Variants (all produce the same ids, which the script checks):
  hf-batch        HF `tokenizers` encode_batch with its own thread pool (the library default)
  hf-1thread      HF `tokenizers`, encode() per text in one thread (our HFTokenizer default)
  tiktoken-1      our GPT2BPETokenizer.encode_batch(num_threads=1): encode_ordinary in a loop
  tiktoken-pool1  tiktoken encode_ordinary_batch(num_threads=1) (a 1-thread pool per call)
  tiktoken-2thr   encode_batch(num_threads=2): two threads in one process
  tiktoken-2proc  two worker processes (what build-index does), each loading the tokenizer from its
                  spec, texts sent in ~1 MB chunks, ids returned as uint16 arrays
  spm-mt5-toy     SentencePiece mt5-toy, 1 thread (a different vocabulary, for scale only)
Text: the shipped toy corpora (Pile + mC4 formats, English, code, 9 other languages) repeated to
--mb megabytes of UTF-8. Rounds are interleaved; medians are reported, with ratios to tiktoken-1.
Timings on a shared machine are noisy: compare the ratios, and run twice.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path

import numpy as np

from dataprep.readers import expand_inputs, iter_documents
from dataprep.tokenizers import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUTS = [str(ROOT / "pipelines" / "toy" / "pile"), str(ROOT / "pipelines" / "toy" / "mc4")]

_WORKER = None


def _init_worker(spec: str) -> None:
    global _WORKER
    _WORKER = load_tokenizer(spec)


def _encode_chunk(texts: list[str]) -> list[np.ndarray]:
    return [np.asarray(ids, dtype=np.uint16) for ids in _WORKER.encode_batch(texts)]


def load_texts(inputs: list[str], mb: float) -> list[str]:
    docs = [d.text for path in expand_inputs(inputs) for d in iter_documents(path) if d.text]
    target = int(mb * 1e6)
    texts, size, i = [], 0, 0
    while size < target:
        t = docs[i % len(docs)]
        texts.append(t)
        size += len(t.encode("utf-8"))
        i += 1
    return texts


def chunks(texts: list[str], nbytes: int = 1 << 20) -> list[list[str]]:
    out, cur, size = [], [], 0
    for t in texts:
        cur.append(t)
        size += len(t)
        if size >= nbytes:
            out.append(cur)
            cur, size = [], 0
    if cur:
        out.append(cur)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", nargs="+", default=DEFAULT_INPUTS)
    ap.add_argument("--mb", type=float, default=12.0, help="megabytes of UTF-8 text (default 12)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    texts = load_texts(args.input, args.mb)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    print(f"{len(texts):,} documents, {nbytes / 1e6:.1f} MB UTF-8, {os.cpu_count()} CPUs")

    tok = load_tokenizer("gpt2")
    hf = tok_hf_reference()
    spm = load_tokenizer("mt5-toy")
    enc = tok._enc
    parts = chunks(texts)
    pool = mp.get_context("spawn").Pool(2, initializer=_init_worker, initargs=(tok.spec,))
    pool.map(_encode_chunk, [["warm up"]] * 2)

    def two_procs():
        return [a for chunk in pool.imap(_encode_chunk, parts) for a in chunk]

    variants = {
        "hf-batch": lambda: [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)],
        "hf-1thread": lambda: [hf.encode(t, add_special_tokens=False).ids for t in texts],
        "tiktoken-1": lambda: tok.encode_batch(texts),
        "tiktoken-pool1": lambda: enc.encode_ordinary_batch(texts, num_threads=1),
        "tiktoken-2thr": lambda: tok.encode_batch(texts, num_threads=2),
        "tiktoken-2proc": two_procs,
        "spm-mt5-toy": lambda: spm.encode_batch(texts),
    }
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    reference = None
    n_tokens = 0
    for r in range(args.rounds):
        for name, fn in variants.items():
            t = time.perf_counter()
            ids = fn()
            seconds[name].append(time.perf_counter() - t)
            if name == "spm-mt5-toy" or r > 0:
                continue
            ids = [x.tolist() if isinstance(x, np.ndarray) else x for x in ids]
            if reference is None:
                reference, n_tokens = ids, sum(map(len, ids))
            elif ids != reference:
                raise SystemExit(f"{name}: ids differ from hf-batch")
    pool.close()
    pool.join()

    base = statistics.median(seconds["tiktoken-1"])
    print(f"GPT-2: {n_tokens:,} tokens, {nbytes / n_tokens:.2f} bytes/token; ids identical in all")
    print(f"{'variant':<16}{'median s':>10}{'MB/s':>9}{'min-max MB/s':>16}{'vs tiktoken-1':>15}")
    for name, s in seconds.items():
        med = statistics.median(s)
        lo, hi = nbytes / max(s) / 1e6, nbytes / min(s) / 1e6
        print(
            f"{name:<16}{med:>10.2f}{nbytes / med / 1e6:>9.2f}{f'{lo:.1f}-{hi:.1f}':>16}"
            f"{base / med:>14.2f}x"
        )


def tok_hf_reference():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    d = ROOT / "tokenizer_assets" / "gpt2"
    t = Tokenizer(models.BPE.from_file(str(d / "vocab.json"), str(d / "merges.txt")))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    return t


if __name__ == "__main__":
    main()
