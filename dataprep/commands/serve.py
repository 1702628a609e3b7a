"""`dataprep serve CKPT --port 5555`: NeMo's GPT eval server over HTTP
(trainer/inference/serve.py)."""

from __future__ import annotations

import argparse
import errno
import os
import socket

from dataprep.errors import UsageError, require_extra

HELP = "serve a GPT / GPT-J checkpoint over HTTP: NeMo's PUT /generate and OpenAI /v1/completions"
DESCRIPTION = """\
Serve a checkpoint of `dataprep train --save` (GPT or GPT-J, any TP size, run in this one process)
on 127.0.0.1 (loopback) unless --host says otherwise. Routes:
  PUT  /generate        NeMo's request (sentences, tokens_to_generate, temperature, add_BOS, top_k,
                        top_p, greedy, all_probs, repetition_penalty, min_tokens_to_generate,
                        end_strings, random_seed, compute_logprob); answers with NeMo's object
                        (sentences without special tokens; logprob null unless asked for)
  POST /v1/completions  OpenAI's legacy completions: prompt (text or token ids), max_tokens,
                        temperature (0 = greedy), top_p, top_k, n, stop, seed, echo, logprobs N,
                        stream (server-sent events); errors as {"error": {"message", ...}}
  GET  /v1/models, GET /health, and vLLM's GET /tokenizer_info, POST /tokenize, /detokenize
                        (lm-evaluation-harness's local-completions model tokenizes through them)

Concurrent requests are batched: rows that arrive while the model is busy (or within
--batch-wait-ms of the first) run as one batch of up to --max-batch-size rows, each answered
exactly as it would be alone. A bad request gets HTTP 400 and a JSON error naming the field and its
allowed range; a body over --max-body-bytes gets 413. One log line per request on stderr. Stop with
Ctrl-C.

examples:
  dataprep serve out/ckpt-gpt --port 5555
  curl -s -X PUT localhost:5555/generate -H 'Content-Type: application/json' \\
      -d '{"sentences": ["Hello"], "tokens_to_generate": 8, "greedy": true}'
  curl -s localhost:5555/v1/completions -H 'Content-Type: application/json' \\
      -d '{"prompt": "Hello", "max_tokens": 8, "temperature": 0, "logprobs": 2}'
  lm_eval --model local-completions --tasks toy_lambada --include_path pipelines/lm_eval_tasks \\
      --model_args model=gpt,base_url=http://127.0.0.1:5555/v1/completions"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="GPT / GPT-J checkpoint or --save root")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, default=5555, help="TCP port (5555, as the NeMo card)")
    p.add_argument("--tokenizer", help="tokenizer spec (default: the one recorded in CKPT)")
    p.add_argument(
        "--max-tokens-to-generate",
        type=int,
        default=None,
        help="largest tokens_to_generate a request may ask (default: the model's context)",
    )
    p.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="larger bodies get 413 (1 MiB)"
    )
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=8,
        help="most rows (prompts x n) run together in one batch (8; 1 = one at a time)",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long the first waiting request waits for others to join it (5)",
    )


def run(args: argparse.Namespace) -> int:
    if not os.path.exists(args.checkpoint):
        raise UsageError(f"checkpoint {args.checkpoint}: no such directory")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in [0, 65535], got {args.port}")
    if args.max_tokens_to_generate is not None and args.max_tokens_to_generate < 1:
        raise UsageError(
            f"--max-tokens-to-generate must be >= 1, got {args.max_tokens_to_generate}"
        )
    if args.max_body_bytes < 1:
        raise UsageError(f"--max-body-bytes must be >= 1, got {args.max_body_bytes}")
    if args.max_batch_size < 1:
        raise UsageError(f"--max-batch-size must be >= 1, got {args.max_batch_size}")
    if not 0 <= args.batch_wait_ms <= 10_000:
        raise UsageError(f"--batch-wait-ms must be in [0, 10000], got {args.batch_wait_ms}")
    require_extra("uvicorn", "dataprep serve", "serve")
    require_extra("fastapi", "dataprep serve", "serve")
    sock = _bind(args.host, args.port)  # before the model loads and before "serving on ..."
    from trainer.inference.serve import serve

    try:
        return serve(
            args.checkpoint,
            host=args.host,
            port=sock.getsockname()[1],
            tokenizer=args.tokenizer,
            max_tokens=args.max_tokens_to_generate,
            max_body_bytes=args.max_body_bytes,
            sock=sock,
            max_batch_size=args.max_batch_size,
            batch_wait_ms=args.batch_wait_ms,
        )
    finally:
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a busy port is one usage error naming --port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UsageError(
                f"--port {port}: address {host}:{port} is already in use (another server?); "
                "choose another --port"
            ) from None
        raise UsageError(f"--host {host} --port {port}: cannot bind ({e.strerror})") from None
    sock.listen(128)
    return sock
