"""build-index on a local Ray vs the local process pool, same input, same cores, one run.

    python benchmarks/bench_build_ray.py [--mb 20] [--shards 4] [--workers 2] [--rounds 1]

The corpus is the shipped Pile toy corpus repeated in reshuffled order (benchmarks/build_index.py)
up to --mb MB of text, cut into --shards `.jsonl.zst` files (Ray runs one task per compressed
file). Columns, seconds of wall time (medians of interleaved rounds):
  local      `dataprep build-index --workers N` as a subprocess (start-up included)
  ray        `dataprep build-index --executor ray --workers N` as a subprocess: starts a local Ray
             with N CPUs, so Ray's start-up (several seconds) is included
  ray warm   build_index in a process whose Ray is already running (a cluster one joins)
The ratio is local / ray (throughput of Ray relative to the pool; the target is >= 0.8). The
estimate for one more machine: the driver's merge is sequential (a copy of the output .bin,
timed here), the tasks are spread over twice the CPUs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_index import make_corpus  # noqa: E402


def shard(zst_corpus: Path, texts: list[str], directory: Path, shards: int) -> Path:
    import zstandard

    directory.mkdir()
    per = -(-len(texts) // shards)
    for k in range(shards):
        lines = "".join(
            json.dumps({"text": t, "meta": {"pile_set_name": "toy"}}) + "\n"
            for t in texts[k * per : (k + 1) * per]
        )
        (directory / f"{k:02d}.jsonl.zst").write_bytes(
            zstandard.ZstdCompressor(level=3).compress(lines.encode("utf-8"))
        )
    return directory


def cli(inputs: Path, out: Path, workers: int, *extra: str) -> float:
    args = [sys.executable, "-m", "dataprep", "build-index", "--input", str(inputs)]
    args += ["--output-prefix", str(out), "--append-eod", "--workers", str(workers)]
    args += ["--no-progress", "--overwrite", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"build-index failed:\n{proc.stderr}")
    return time.perf_counter() - t0


def warm(inputs: Path, out: Path, workers: int) -> float:
    from dataprep.build import BuildConfig, build_index

    config = BuildConfig(
        inputs=(str(inputs),),
        output_prefix=str(out),
        append_eod=True,
        workers=workers,
        executor="ray",
        overwrite=True,
        progress=False,
    )
    t0 = time.perf_counter()
    build_index(config)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=float, default=20)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _, zst, texts = make_corpus(work, args.mb)
        inputs = shard(zst, texts, work / "shards", args.shards)
        mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        times: dict[str, list[float]] = {"local": [], "ray": [], "ray warm": []}
        for _ in range(args.rounds):
            times["local"].append(cli(inputs, work / "local", args.workers))
            times["ray"].append(cli(inputs, work / "ray", args.workers, "--executor", "ray"))
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        for _ in range(args.rounds):
            times["ray warm"].append(warm(inputs, work / "warm", args.workers))
        ray.shutdown()
        for suffix in ("_text_document.bin", "_text_document.idx"):
            a = (work / f"local{suffix}").read_bytes()
            assert (
                a == (work / f"ray{suffix}").read_bytes() == (work / f"warm{suffix}").read_bytes()
            )
        bin_path = work / "local_text_document.bin"
        t0 = time.perf_counter()
        shutil.copyfile(bin_path, work / "copy.bin")
        merge = time.perf_counter() - t0
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{mb:.1f} MB of text in {args.shards} shards, --workers {args.workers}, "
        f"{args.rounds} round(s); outputs byte-identical"
    )
    print("| run | seconds | MB/s | local / this |")
    print("| --- | --- | --- | --- |")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} | {mb / v:.2f} | {med['local'] / v:.2f} |")
    two = merge + (med["ray warm"] - merge) / 2
    print(
        f"one more {args.workers}-CPU machine (estimate): merge {merge:.2f} s stays in the driver, "
        f"tasks halve: {two:.2f} s warm ({mb / two:.2f} MB/s, {med['local'] / two:.2f}x local)"
    )


if __name__ == "__main__":
    main()
