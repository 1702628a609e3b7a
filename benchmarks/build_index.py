"""build-index throughput side by side: raw GPT-2 encoder vs our end-to-end build vs Megatron-LM.

    python benchmarks/build_index.py [--mb 20] [--workers 2] [--megatron /path/to/Megatron-LM]

One run, same text, same cores. Columns (MB = 10^6 UTF-8 bytes of document text, wall-clock
seconds): raw encoder      tiktoken GPT-2 on texts already in memory: `encode_to_numpy` in `workers`
processes,
                   and `encode_ordinary_batch` with `workers` threads in one process; the
                   faster one is
                   the reference. No reading, no writing, no start-up.
ours end to end  `dataprep build-index` as a subprocess: .jsonl.zst in -> .bin/.idx out, start-up
included Megatron-LM      `tools/preprocess_data.py --workers N` on the same documents as plain
.jsonl (it cannot read
                   zstd), start-up included; skipped unless --megatron PATH is given
Then peak RSS of our build (main process and largest worker) for two inputs 10x apart: it must not
grow. The corpus is the shipped Pile toy corpus (real text) repeated in reshuffled order up to --mb
megabytes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPT2 = REPO / "tokenizer_assets" / "gpt2"


def make_corpus(directory: Path, megabytes: float, seed: int = 0) -> tuple[Path, Path, list[str]]:
    import zstandard

    from dataprep.readers import expand_inputs, iter_documents

    base = [
        d.text for p in expand_inputs([str(REPO / "pipelines/toy/pile")]) for d in iter_documents(p)
    ]
    rng = random.Random(seed)
    texts: list[str] = []
    size = 0
    while size < megabytes * 1e6:
        batch = base[:]
        rng.shuffle(batch)
        for t in batch:
            texts.append(t)
            size += len(t.encode("utf-8"))
            if size >= megabytes * 1e6:
                break
    lines = "".join(json.dumps({"text": t, "meta": {"pile_set_name": "toy"}}) + "\n" for t in texts)
    plain = directory / f"corpus{megabytes:g}.jsonl"
    plain.write_text(lines, encoding="utf-8")
    zst = directory / f"corpus{megabytes:g}.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor(level=3).compress(lines.encode("utf-8")))
    return plain, zst, texts


_ENC = None


def _init() -> None:
    global _ENC
    from dataprep.tokenizers import load_tokenizer

    _ENC = load_tokenizer("gpt2")


def _encode(texts: list[str]) -> int:
    return sum(len(ids) for ids in _ENC.encode_numpy(texts))


def raw_encoder(texts: list[str], workers: int) -> dict[str, float]:
    from dataprep.tokenizers import load_tokenizer

    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    chunks = [texts[i : i + 200] for i in range(0, len(texts), 200)]
    out = {}
    with multiprocessing.get_context("fork").Pool(workers, initializer=_init) as pool:
        pool.map(_encode, chunks[:workers])  # warm up
        t0 = time.perf_counter()
        sum(pool.map(_encode, chunks, chunksize=1))
        out["processes"] = nbytes / (time.perf_counter() - t0) / 1e6
    enc = load_tokenizer("gpt2")
    import tiktoken  # noqa: F401  (the gpt2 tokenizer is tiktoken-backed)

    inner = getattr(enc, "_enc", None)  # the tiktoken.Encoding behind our GPT-2 tokenizer
    if inner is not None and hasattr(inner, "encode_ordinary_batch"):
        t0 = time.perf_counter()
        for c in chunks:
            inner.encode_ordinary_batch(c, num_threads=workers)
        out["threads"] = nbytes / (time.perf_counter() - t0) / 1e6
    return out


_RSS_WRAPPER = r"""
import resource, sys
from dataprep.cli import main
code = main(sys.argv[1:])
# VmHWM is per address space, so unlike ru_maxrss it does not carry the launching process's peak
# across exec; the workers are forked after exec, so RUSAGE_CHILDREN is clean for them
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
own = int(hwm) / 1024
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"RSS {own:.0f} {kids:.0f}", file=sys.stderr)
sys.exit(code)
"""


def ours(zst: Path, out: Path, workers: int) -> dict[str, float]:
    args = [
        sys.executable,
        "-c",
        _RSS_WRAPPER,
        "build-index",
        "--input",
        str(zst),
        "--output-prefix",
        str(out),
        "--tokenizer",
        "gpt2",
        "--append-eod",
        "--workers",
        str(workers),
        "--no-progress",
        "--overwrite",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"dataprep build-index failed:\n{proc.stderr}")
    rss = [line for line in proc.stderr.splitlines() if line.startswith("RSS ")][-1].split()
    # the summary's own timer: reading, tokenizing and writing, without interpreter start-up
    loop = float(proc.stdout.split(" MB of text in ")[1].split(" s")[0].replace(",", ""))
    return {"wall": wall, "loop": loop, "rss_main": float(rss[1]), "rss_worker": float(rss[2])}


def megatron(megatron_root: Path, plain: Path, work: Path, workers: int) -> dict[str, float]:
    script = megatron_root / "tools" / "preprocess_data.py"
    if not script.exists():
        raise SystemExit(f"--megatron {megatron_root}: no tools/preprocess_data.py there")
    # offline set-up: AutoTokenizer("gpt2") reads ./gpt2/,
    # and a typing.override shim lets Megatron HEAD run on Python 3.11
    (work / "gpt2").mkdir(exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2 / name, work / "gpt2" / name)
    (work / "gpt2" / "config.json").write_text('{"model_type": "gpt2", "vocab_size": 50257}')
    (work / "gpt2" / "tokenizer_config.json").write_text('{"model_max_length": 1000000000}')
    shim = work / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(
        "import typing, typing_extensions\ntyping.override = typing_extensions.override\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=f"{shim}:{megatron_root}")
    out = work / "mlm"
    args = [
        sys.executable,
        str(script),
        "--input",
        str(plain),
        "--tokenizer-type",
        "GPT2BPETokenizer",
        "--vocab-file",
        str(work / "gpt2/vocab.json"),
        "--merge-file",
        str(work / "gpt2/merges.txt"),
        "--append-eod",
        "--output-prefix",
        str(out),
        "--workers",
        str(workers),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=work, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"Megatron's preprocess_data.py failed:\n{proc.stderr[-3000:]}")
    return {"wall": wall, "prefix": str(out) + "_text_document"}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--mb", type=float, default=20.0, help="corpus size in MB of text (default 20)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of raw vs ours (default 3)"
    )
    p.add_argument("--megatron", type=Path, help="path of a Megatron-LM checkout (optional)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain, zst, texts = make_corpus(tmp, args.mb)
        small_plain, small_zst, _ = make_corpus(tmp, args.mb / 10, seed=1)
        nbytes = sum(len(t.encode("utf-8")) for t in texts)
        print(
            f"corpus: {len(texts):,} documents, {nbytes / 1e6:.1f} MB of text "
            f"({zst.stat().st_size / 1e6:.1f} MB as .jsonl.zst); {args.workers} workers; "
            f"{os.cpu_count()} CPUs"
        )

        # interleave the two measurements round by round: this machine's speed drifts by up to 2x
        rounds = []
        for _ in range(args.rounds):
            raw = raw_encoder(texts, args.workers)
            run = ours(zst, tmp / "ours", args.workers)
            rounds.append((raw, run))
        mlm = None
        if args.megatron:
            mlm = megatron(args.megatron.resolve(), plain, tmp, args.workers)
        small = ours(small_zst, tmp / "small", args.workers)

        def median(values):
            return statistics.median(values)

        raw = {how: median([r[0][how] for r in rounds]) for how in rounds[0][0]}
        run = {
            k: median([r[1][k] for r in rounds]) for k in ("wall", "loop", "rss_main", "rss_worker")
        }
        ours_mbs = nbytes / run["wall"] / 1e6
        ratio_e2e = median([nbytes / r[1]["wall"] / 1e6 / max(r[0].values()) for r in rounds])
        ratio_loop = median([nbytes / r[1]["loop"] / 1e6 / max(r[0].values()) for r in rounds])
        print(f"\n{'column':<44}{'MB/s':>8}")
        for how, mbs in raw.items():
            print(f"{'raw tiktoken encoder, ' + str(args.workers) + ' ' + how:<44}{mbs:>8.2f}")
        print(f"{'ours end to end (zst -> .bin/.idx)':<44}{ours_mbs:>8.2f}")
        loop_mbs = nbytes / run["loop"] / 1e6
        print(
            f"{'  without start-up (' + format(run['wall'] - run['loop'], '.2f') + ' s)':<44}"
            f"{loop_mbs:>8.2f}"
        )
        if mlm:
            mlm_mbs = nbytes / mlm["wall"] / 1e6
            print(f"{'Megatron-LM preprocess_data.py (jsonl)':<44}{mlm_mbs:>8.2f}")
        else:
            print(
                f"{'Megatron-LM preprocess_data.py':<44}{'skipped (no --megatron PATH given)':>8}"
            )
        print(
            f"\nours / fastest raw encoder = {ratio_e2e:.2f}   (goal >= 0.9); without start-up "
            f"{ratio_loop:.2f}   (medians over {args.rounds} interleaved rounds)"
        )
        if mlm:
            print(f"ours / Megatron-LM        = {ours_mbs / mlm_mbs:.2f}   (goal >= 5)")
            same = all(
                Path(str(tmp / "ours") + "_text_document" + s).read_bytes()
                == Path(mlm["prefix"] + s).read_bytes()
                for s in (".bin", ".idx")
            )
            print(f"our .bin/.idx byte-identical to Megatron's: {'yes' if same else 'NO'}")
        print(
            f"\npeak RSS, MB (main / largest worker): {args.mb / 10:g} MB input "
            f"{small['rss_main']:.0f} / {small['rss_worker']:.0f};  {args.mb:g} MB input "
            f"{run['rss_main']:.0f} / {run['rss_worker']:.0f}"
        )


if __name__ == "__main__":
    main()
