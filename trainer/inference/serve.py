"""`dataprep serve`: NeMo's GPT eval server and OpenAI's legacy completions API over HTTP.

Three layers: the route logic (`Server`: parse a request, make `Row`s, shape the answer; the
OpenAI routes' part in `trainer.inference.openai_api`) knows no HTTP framework;
`trainer.inference.batcher.Batcher` owns the model in one thread and runs the rows of concurrent
requests as one batch (each row answered as if alone); `create_app` is the FastAPI layer (uvicorn
serves it: a maintained ASGI stack with typed request handling).

Routes:
- `PUT /generate`: the Megatron-GPT card's request; the answer is NeMo's object, `sentences`
  detokenized as NeMo's `ids_to_text` does (special tokens dropped; `tokens` keep them).
  Errors: HTTP 400 with `{"error": "..."}` naming the field and its range (413 for a big body).
- `POST /v1/completions`: OpenAI's legacy completions contract: `prompt` (string, list of strings,
  token ids or lists of them), `max_tokens` (16; 0 with `echo` scores the prompt only),
  `temperature` (0 = greedy), `top_p`, `top_k`, `n`, `stop` (a string or up to 4), `seed`, `echo`,
  `logprobs` (N: the N most likely tokens per position beside the chosen one, as
  `{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`), `stream` (server-sent events,
  then `data: [DONE]`), `usage`. Errors in OpenAI's shape, `{"error": {"message", "type",
  "param", "code"}}`, with 4xx codes. Prompt text is encoded as vLLM does: a special token's
  text (`<|endoftext|>`) is that token.
- `GET /v1/models`, `GET /health`, and vLLM's tokenizer routes (`GET /tokenizer_info`,
  `POST /tokenize`, `POST /detokenize`), which lm-evaluation-harness's `local-completions` model
  uses to tokenize with the served model's own tokenizer.
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations (Request) live
import asyncio
import json
import logging
import threading
import time
import uuid
from typing import Any

from dataprep.errors import UsageError
from trainer.inference.api_common import MAX_SENTENCES, RequestError, check_keys, openai_error
from trainer.inference.batcher import Batcher, Cancelled
from trainer.inference.generate import (
    Row,
    RowResult,
    SamplingParams,
    generate_rows,
    nemo_response,
    nemo_rows,
    text_of,
)
from trainer.inference.openai_api import Completion, OpenAIRoutes, safe_to_send

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1 << 20

GENERATE_KEYS = {
    "sentences", "tokens_to_generate", "temperature", "add_BOS", "top_k", "top_p", "greedy",
    "all_probs", "repetition_penalty", "min_tokens_to_generate", "end_strings", "random_seed",
    "compute_logprob",
}  # fmt: skip


def _prompts(value: Any, field: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise RequestError(
            f"{field} must be a string or a list of 1 to {MAX_SENTENCES} strings", param=field
        )
    if len(value) > MAX_SENTENCES:
        raise RequestError(
            f"{field} has {len(value)} entries; at most {MAX_SENTENCES} per request", param=field
        )
    return value


def parse_generate(body: Any, limit: int) -> tuple[list[str], SamplingParams]:
    """PUT /generate: (prompts, params) from NeMo's request, or RequestError."""
    body = check_keys(body, GENERATE_KEYS, "PUT /generate")
    if "sentences" not in body:
        raise RequestError(f"sentences is required: a list of 1 to {MAX_SENTENCES} prompt strings")
    prompts = _prompts(body["sentences"], "sentences")
    fields = {k: v for k, v in body.items() if k != "sentences"}
    if isinstance(fields.get("end_strings"), list):
        fields["end_strings"] = tuple(fields["end_strings"])
    try:
        return prompts, SamplingParams(**fields, max_tokens_limit=limit)
    except UsageError as e:
        raise RequestError(str(e), param=str(e).split(" ", 1)[0]) from None


class Server(OpenAIRoutes):
    """The model behind a Batcher, and the route logic, independent of the HTTP framework."""

    def __init__(self, model, tokenizer, *, name: str, max_tokens: int, max_body_bytes: int,
                 max_batch_size: int = 8, batch_wait_ms: float = 5.0):  # fmt: skip
        self.model, self.tok, self.name = model, tokenizer, name
        self.max_tokens, self.max_body_bytes = max_tokens, max_body_bytes
        self.context = model.config.block_size
        self.created = int(time.time())
        self.batcher = Batcher(self._run_rows, max_batch_size=max_batch_size,
                               wait_ms=batch_wait_ms)  # fmt: skip

    def _run_rows(self, rows: list[Row]) -> list[RowResult]:
        return generate_rows(self.model, rows, eod_id=self.tok.eod_id)

    def _results(self, rows: list[Row]) -> list[RowResult]:
        try:
            return [f.result() for f in self.batcher.submit(rows)]
        except UsageError as e:  # e.g. a prompt longer than the context
            raise RequestError(str(e)) from None

    # -- PUT /generate
    def put_generate(self, body: Any) -> dict:
        prompts, params = parse_generate(body, self.max_tokens)
        try:
            rows = nemo_rows(self.tok, prompts, params)
        except UsageError as e:
            raise RequestError(str(e)) from None
        for r in rows:
            if len(r.prompt) > self.context:
                raise RequestError(
                    f"a prompt has {len(r.prompt)} tokens; the model's context is "
                    f"{self.context} tokens, so a prompt may have at most {self.context}"
                )
        response = nemo_response(self.tok, self._results(rows), all_probs=params.all_probs)
        if not (params.compute_logprob or params.all_probs):
            response["logprob"] = None  # NeMo: null unless asked for
        return response

    def health(self) -> dict:
        return {"status": "ok", "model": self.name, "architecture": type(self.model).__name__,
                "context": self.context, "max_tokens_to_generate": self.max_tokens}  # fmt: skip


def create_app(server: Server):
    """The FastAPI app for a Server."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="dataprep serve", docs_url=None, redoc_url=None, openapi_url=None)

    async def read_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > server.max_body_bytes:
            raise RequestError(
                f"body of {declared} bytes; the limit is {server.max_body_bytes}", 413
            )
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > server.max_body_bytes:
                raise RequestError(f"body over the limit of {server.max_body_bytes} bytes", 413)
        try:
            return json.loads(raw)
        except ValueError as e:
            raise RequestError(f"the body is not valid JSON: {e}") from None

    def summary(result: Any) -> str:
        if not isinstance(result, dict) or "token_ids" not in result:
            return ""
        n, tokens = len(result["token_ids"]), sum(len(r) for r in result["token_ids"])
        return f", {n} prompt(s), {tokens} tokens"

    async def handle(request: Request, method, *, openai: bool, level=logging.INFO) -> Any:
        t0, status, info = time.perf_counter(), 200, ""
        try:
            body = await read_json(request)
            result = await run_in_threadpool(method, body)
            info = summary(result)
            return JSONResponse(result)
        except RequestError as e:
            status, info = e.status, f": {e}"
            content = openai_error(e) if openai else {"error": str(e)}
            return JSONResponse(content, status_code=e.status)
        finally:
            ms = (time.perf_counter() - t0) * 1000
            log.log(level if status < 400 else logging.INFO, "%s %s %d %.0f ms%s",
                    request.method, request.url.path, status, ms, info)  # fmt: skip

    @app.put("/generate")
    async def put_generate(request: Request):
        return await handle(request, server.put_generate, openai=False)

    @app.post("/v1/completions")
    async def completions(request: Request):
        t0 = time.perf_counter()
        try:
            body = await read_json(request)
            req = server.parse_completions(body)
        except RequestError as e:
            log.info("POST /v1/completions %d %.0f ms: %s", e.status,
                     (time.perf_counter() - t0) * 1000, e)  # fmt: skip
            return JSONResponse(openai_error(e), status_code=e.status)
        if req.stream:
            return StreamingResponse(_stream(server, req, request, t0),
                                     media_type="text/event-stream")  # fmt: skip
        return await _complete(server, req, request, t0)

    @app.get("/v1/models")
    async def models():
        return server.models()

    @app.get("/tokenizer_info")
    async def tokenizer_info():
        return server.tokenizer_info()

    @app.post("/tokenize")
    async def tokenize(request: Request):
        return await handle(request, server.tokenize, openai=True, level=logging.DEBUG)

    @app.post("/detokenize")
    async def detokenize(request: Request):
        return await handle(request, server.detokenize, openai=True, level=logging.DEBUG)

    @app.get("/health")
    async def health():
        log.info("GET /health 200")
        return server.health()

    return app


async def _complete(server: Server, req: Completion, request, t0: float):
    """A whole (not streamed) completion; a client that disconnects cancels its rows."""
    from fastapi.responses import JSONResponse

    gone = threading.Event()
    for row in req.rows:
        row.cancelled = gone.is_set
    futures = [asyncio.wrap_future(f) for f in server.batcher.submit(req.rows)]
    waiter = asyncio.gather(*futures, return_exceptions=True)
    while not waiter.done():
        await asyncio.wait({waiter}, timeout=0.1)
        if not waiter.done() and await request.is_disconnected():
            gone.set()
    results = waiter.result()
    ms = (time.perf_counter() - t0) * 1000
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        e = errors[0]
        if isinstance(e, Cancelled) or gone.is_set():
            log.info("POST /v1/completions cancelled by the client after %.0f ms", ms)
            return JSONResponse(openai_error(RequestError("cancelled", 499)), status_code=499)
        error = RequestError(str(e)) if isinstance(e, UsageError) else RequestError(
            f"generation failed: {e}", 500)  # fmt: skip
        log.info("POST /v1/completions %d %.0f ms: %s", error.status, ms, error)
        return JSONResponse(openai_error(error), status_code=error.status)
    out = server.completion_object(req, results)
    log.info("POST /v1/completions 200 %.0f ms, %d choice(s), %d tokens", ms,
             len(out["choices"]), out["usage"]["completion_tokens"])  # fmt: skip
    return JSONResponse(out)


async def _stream(server: Server, req: Completion, request, t0: float):
    """Server-sent events: a chunk per new token of each choice (its text delta, held back while
    it could still become a stop string), a last chunk with its finish_reason, then [DONE]. A
    client that goes away cancels its rows at their next token."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    gone = threading.Event()
    for k, row in enumerate(req.rows):
        row.cancelled = gone.is_set
        row.on_token = lambda t, lp, top, k=k: loop.call_soon_threadsafe(
            events.put_nowait, ("token", k, (t, lp, top))
        )
    futures = server.batcher.submit(req.rows)
    for k, f in enumerate(futures):
        f.add_done_callback(
            lambda f, k=k: loop.call_soon_threadsafe(events.put_nowait, ("done", k, f))
        )
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    model = req.model or server.name

    def chunk(k: int, text: str, logprobs=None, finish=None) -> str:
        body = {"id": cid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": k, "text": text, "logprobs": logprobs,
                             "finish_reason": finish}]}  # fmt: skip
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    new_ids: list[list[int]] = [[] for _ in req.rows]
    sent = [0] * len(req.rows)
    left, tokens = len(req.rows), 0
    try:
        if req.echo:  # the prompt's text first (its logprobs: in non-streamed answers)
            for k in range(len(req.rows)):
                yield chunk(k, req.texts[k // req.n])
        while left:
            kind, k, value = await events.get()
            if kind == "token":
                t, lp, top = value
                new_ids[k].append(t)
                tokens += 1
                safe = safe_to_send(text_of(server.tok, new_ids[k]), req.stop)
                delta, sent[k] = safe[sent[k] :], max(sent[k], len(safe))
                logprobs = None
                if req.top_n is not None:
                    piece = server.tok.decode([t])
                    alts: dict[str, float] = {}
                    for i, v in (top or [])[: req.top_n]:
                        alts.setdefault(server.tok.decode([i]), v)
                    alts.setdefault(piece, lp)
                    logprobs = {"tokens": [piece], "token_logprobs": [lp],
                                "top_logprobs": [alts], "text_offset": [None]}  # fmt: skip
                yield chunk(k, delta, logprobs)
                continue
            left -= 1
            try:
                result = value.result()
            except Cancelled:
                continue
            except Exception as e:  # a row error after the stream began: say it in the stream
                yield f"data: {json.dumps(openai_error(RequestError(str(e), 500)))}\n\n"
                continue
            choice, _ = server._choice(req, k // req.n, result)
            text = choice["text"][len(req.texts[k // req.n]) :] if req.echo else choice["text"]
            yield chunk(k, text[sent[k] :], None, choice["finish_reason"])
        yield "data: [DONE]\n\n"
        log.info("POST /v1/completions 200 %.0f ms (stream), %d choice(s), %d tokens",
                 (time.perf_counter() - t0) * 1000, len(req.rows), tokens)  # fmt: skip
    finally:
        if left:  # the client went away mid-stream: free the rows' batch slots
            gone.set()
            log.info("POST /v1/completions stream closed by the client after %.0f ms",
                     (time.perf_counter() - t0) * 1000)  # fmt: skip


def serve(checkpoint: str, *, host: str, port: int, tokenizer: str | None, max_tokens: int | None,
          max_body_bytes: int, sock=None, max_batch_size: int = 8,
          batch_wait_ms: float = 5.0) -> int:  # fmt: skip
    """Load a checkpoint and serve it until interrupted (on `sock` when given: a bound socket)."""
    import uvicorn

    from trainer.inference.generate import _check_model
    from trainer.inference.loading import load_for_inference

    model, tok, path = load_for_inference(checkpoint, tokenizer=tokenizer)
    _check_model(model)
    limit = max_tokens or model.config.block_size
    server = Server(model, tok, name=path, max_tokens=limit, max_body_bytes=max_body_bytes,
                    max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms)  # fmt: skip
    log.info("serving %s (%s) on http://%s:%d, batches of up to %d requests' rows", path,
             type(model).__name__, host, port, max_batch_size)  # fmt: skip
    config = uvicorn.Config(
        create_app(server), host=host, port=port, log_level="warning", access_log=False
    )
    uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)
    return 0
