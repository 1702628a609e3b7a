"""`dataprep serve` under concurrent clients: batched against one request at a time, one run.

    python benchmarks/bench_serve.py [--checkpoint CKPT] [--clients 1 4 8] [--requests 6]
        [--max-tokens 32] [--rounds 2]

Two servers of the same checkpoint run side by side: `--max-batch-size 8` (the default) and
`--max-batch-size 1` (every request alone, as NeMo's server and ours before batching). In each
round and for each client count N, N threads on loopback each send `--requests` greedy
`POST /v1/completions` one after another (distinct prompts, `max_tokens` new tokens, no stop),
first to one server and then to the other, so both see the same machine load. Printed per N:
completion tokens per second (all clients' tokens / wall time) and the p50/p99 request latency,
medians over rounds, and the batched / serial ratios. Without --checkpoint a gpt-tiny is trained
for 2 steps on the shipped toy Pile (the weights do not matter for speed). The machine is shared
and noisy: the ratios, measured in one run, are the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def _checkpoint(tmp: Path) -> str:
    from dataprep.cli import main as cli_main

    inputs = [str(p) for p in sorted((ROOT / "pipelines" / "toy" / "pile").glob("*.jsonl.zst"))]
    assert cli_main(["build-index", "--input", *inputs, "--output-prefix", str(tmp / "pile"),
                     "--tokenizer", "gpt2", "--append-eod", "--no-progress"]) == 0  # fmt: skip
    assert cli_main(["train", "--data-path", str(tmp / "pile_text_document"), "--model",
                     "gpt-tiny", "--seq-length", "64", "--train-iters", "2", "--micro-batch-size",
                     "2", "--save", str(tmp / "ckpt"), "--no-progress"]) == 0  # fmt: skip
    return str(tmp / "ckpt")


def _start(ckpt: str, port: int, batch: int, log) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "dataprep", "serve", ckpt, "--port", str(port),
                             "--max-batch-size", str(batch)], stdout=log, stderr=log)  # fmt: skip
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server on port {port} did not start (see {log.name})") from None
            time.sleep(0.2)


def _load(port: int, clients: int, requests: int, max_tokens: int) -> tuple[float, float, float]:
    """(completion tokens/s, p50 latency s, p99 latency s) of `clients` threads."""
    url = f"http://127.0.0.1:{port}/v1/completions"
    latencies: list[float] = []
    tokens = [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        for i in range(requests):
            body = {"prompt": f"Client {k} asks question {i}: what is", "max_tokens": max_tokens,
                    "temperature": 0}  # fmt: skip
            t0 = time.perf_counter()
            out = _post(url, body)
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                tokens[0] += out["usage"]["completion_tokens"]

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return tokens[0] / wall, statistics.median(latencies), p99


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", help="a GPT checkpoint (default: a gpt-tiny trained here)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--requests", type=int, default=6, help="requests per client (6)")
    p.add_argument("--max-tokens", type=int, default=32, help="new tokens per request (32)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds, median (2)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from trainer.launch import find_free_port

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or _checkpoint(Path(tmp))
        ports = {"batched": find_free_port(), "serial": find_free_port()}
        log = open(Path(tmp) / "servers.log", "w")
        procs = [_start(ckpt, ports["batched"], 8, log), _start(ckpt, ports["serial"], 1, log)]
        try:
            for port in ports.values():  # warm-up: first requests load kernels
                _load(port, 2, 1, args.max_tokens)
            results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
            for _ in range(args.rounds):
                for n in args.clients:
                    for mode, port in ports.items():
                        results.setdefault((mode, n), []).append(
                            _load(port, n, args.requests, args.max_tokens)
                        )
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
            log.close()

    def med(mode: str, n: int, k: int) -> float:
        return statistics.median(r[k] for r in results[mode, n])

    print(f"gpt checkpoint {ckpt if args.checkpoint else '(gpt-tiny, random-ish)'}, "
          f"{args.requests} greedy requests of {args.max_tokens} tokens per client, "
          f"medians of {args.rounds} interleaved rounds")  # fmt: skip
    print("| clients | tokens/s batched | tokens/s serial | batched ÷ serial "
          "| p50 batched / serial "
          "(s) | p99 batched / serial (s) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for n in args.clients:
        b, s = med("batched", n, 0), med("serial", n, 0)
        print(f"| {n} | {b:,.0f} | {s:,.0f} | {b / s:.2f} | {med('batched', n, 1):.2f} / "
              f"{med('serial', n, 1):.2f} | {med('batched', n, 2):.2f} / "
              f"{med('serial', n, 2):.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
