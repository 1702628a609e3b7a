"""`dataprep serve`: NeMo's GPT eval server and OpenAI's legacy completions API over HTTP.

Three layers: the route logic (`Server`: parse a request, make `Row`s, shape the answer) knows no
HTTP framework; `trainer.inference.batcher.Batcher` owns the model in one thread and runs the rows
of concurrent requests as one batch (each row answered as if alone); `create_app` is the FastAPI
layer (uvicorn serves it: a maintained ASGI stack with typed request handling).

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
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from dataprep.errors import UsageError
from trainer.inference.batcher import Batcher, Cancelled
from trainer.inference.generate import (
    Row,
    RowResult,
    SamplingParams,
    generate_rows,
    nemo_response,
    nemo_rows,
    special_ids,
    text_of,
    token_offsets,
)

log = logging.getLogger(__name__)

MAX_SENTENCES = 128  # NeMo's limit, and ours for prompts x n of one completions request
MAX_LOGPROBS = 20  # top alternatives per position
MAX_STOP = 4  # OpenAI's limit on stop strings
DEFAULT_MAX_BODY_BYTES = 1 << 20

GENERATE_KEYS = {
    "sentences", "tokens_to_generate", "temperature", "add_BOS", "top_k", "top_p", "greedy",
    "all_probs", "repetition_penalty", "min_tokens_to_generate", "end_strings", "random_seed",
    "compute_logprob",
}  # fmt: skip
COMPLETIONS_KEYS = {
    "prompt", "max_tokens", "temperature", "top_p", "top_k", "logprobs", "seed", "model", "n",
    "stream", "stop", "echo", "user", "stream_options",
}  # fmt: skip
# OpenAI fields we accept only at their neutral value (a request relying on them is refused)
NEUTRAL = {"presence_penalty": 0, "frequency_penalty": 0, "best_of": 1, "logit_bias": {},
           "suffix": None}  # fmt: skip


class RequestError(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param = status, param


def openai_error(e: RequestError) -> dict:
    kind = "invalid_request_error" if e.status < 500 else "server_error"
    return {"error": {"message": str(e), "type": kind, "param": e.param, "code": None}}


def _check_keys(body: Any, allowed: set[str], route: str) -> dict:
    if not isinstance(body, dict):
        raise RequestError(f"the body of {route} must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(
            f"unknown field {unknown[0]!r} for {route}; allowed: {sorted(allowed)}",
            param=unknown[0],
        )
    return body


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
    body = _check_keys(body, GENERATE_KEYS, "PUT /generate")
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


def encode_special(tok, text: str) -> list[int]:
    """Text to ids as vLLM's /tokenize and completions do: a special token's text is the token."""
    specials = {tok.id_to_piece(i): i for i in special_ids(tok)}
    if not specials or not any(s in text for s in specials):
        return tok.encode(text)
    out: list[int] = []
    pattern = "(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
    for part in re.split(pattern, text):
        if part in specials:
            out.append(specials[part])
        elif part:
            out += tok.encode(part)
    return out


@dataclass
class Completion:
    """A parsed POST /v1/completions request."""

    prompts: list[list[int]]  # token ids of each prompt
    texts: list[str]  # each prompt's text (as sent, or decoded from its ids)
    params: SamplingParams
    max_new: int  # 0: score only (echo)
    n: int
    seed: int | None
    stop: list[str]
    echo: bool
    top_n: int | None  # None: no logprobs
    stream: bool
    model: str | None = None
    rows: list[Row] = field(default_factory=list)


def _int(body: dict, name: str, default: int | None, lo: int, hi: int | None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if type(value) is not int or value < lo or (hi is not None and value > hi):
        expected = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
        raise RequestError(f"{name} must be {expected}, got {value!r}", param=name)
    return value


def parse_completions(body: Any, tok, *, limit: int, context: int) -> Completion:
    """POST /v1/completions: a Completion, or a RequestError naming the field as OpenAI does."""
    route = "POST /v1/completions"
    body = _check_keys(body, COMPLETIONS_KEYS | set(NEUTRAL), route)
    for name, neutral in NEUTRAL.items():
        if name in body and body[name] != neutral and body[name] is not None:
            raise RequestError(f"{name} is not supported (only {neutral!r})", param=name)
    if "prompt" not in body:
        raise RequestError("prompt is required: a string or a list of strings", param="prompt")
    prompts, texts = _completion_prompts(body["prompt"], tok)
    echo = body.get("echo", False)
    stream = body.get("stream", False)
    for name, value in (("echo", echo), ("stream", stream)):
        if type(value) is not bool:
            raise RequestError(f"{name} must be true or false, got {value!r}", param=name)
    max_new = _int(body, "max_tokens", 16, 0, limit)
    n = _int(body, "n", 1, 1, MAX_SENTENCES)
    if n * len(prompts) > MAX_SENTENCES:
        raise RequestError(
            f"n x prompts is {n * len(prompts)}; at most {MAX_SENTENCES} per request", param="n"
        )
    top_n = _int(body, "logprobs", None, 0, MAX_LOGPROBS)
    seed = body.get("seed")
    if seed is not None and (type(seed) is not int or seed < 0):
        raise RequestError(f"seed must be an integer >= 0 or null, got {seed!r}", param="seed")
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stop, list)
        or len(stop) > MAX_STOP
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise RequestError(
            f"stop must be a non-empty string or a list of at most {MAX_STOP}, got "
            f"{body.get('stop')!r}",
            param="stop",
        )
    temperature = body.get("temperature", 1.0)
    if type(temperature) not in (int, float) or not 0 <= temperature <= 100:
        raise RequestError(
            f"temperature must be in [0, 100] (0 = greedy), got {temperature!r}",
            param="temperature",
        )
    if body.get("model") is not None and not isinstance(body["model"], str):
        raise RequestError(f"model must be a string, got {body['model']!r}", param="model")
    fields = {
        "tokens_to_generate": max(max_new, 1),  # 0 is the Row's max_new_tokens, below
        "temperature": temperature if temperature != 0 else 1.0,
        "greedy": temperature == 0,
        "top_p": body.get("top_p", 1.0),
        "top_k": body.get("top_k", 0),
        "end_strings": (),
    }
    try:
        params = SamplingParams(**fields)
    except UsageError as e:
        raise RequestError(str(e), param=str(e).split(" ", 1)[0]) from None
    if max_new == 0 and not echo:
        raise RequestError("max_tokens 0 needs echo: true (it scores the prompt)",
                           param="max_tokens")  # fmt: skip
    for ids in prompts:
        if len(ids) > context:
            raise RequestError(
                f"a prompt has {len(ids)} tokens; the model's context is {context} tokens, so a "
                f"prompt may have at most {context}",
                param="prompt",
            )
    return Completion(prompts, texts, params, max_new, n, seed, stop, echo, top_n, stream,
                      body.get("model"))  # fmt: skip


def _completion_prompts(value: Any, tok) -> tuple[list[list[int]], list[str]]:
    """(ids, texts) of OpenAI's prompt forms: "text", ["a", "b"], [1, 2], [[1, 2], [3]]."""

    def ids_ok(x: Any) -> bool:
        return isinstance(x, list) and bool(x) and all(type(i) is int for i in x)

    bad = RequestError(
        "prompt must be a string, a list of strings, a list of token ids or a list of such lists "
        f"(1 to {MAX_SENTENCES} prompts)",
        param="prompt",
    )
    if isinstance(value, str):
        value = [value]
    elif ids_ok(value):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > MAX_SENTENCES:
        raise bad
    prompts, texts = [], []
    for p in value:
        if isinstance(p, str):
            ids = encode_special(tok, p)
            if not ids:
                raise RequestError("an empty prompt has no token to start from", param="prompt")
            prompts.append(ids)
            texts.append(p)
        elif ids_ok(p):
            out = [i for i in p if not 0 <= i < tok.vocab_size]
            if out:
                raise RequestError(
                    f"prompt token id {out[0]} is outside the vocabulary [0, {tok.vocab_size})",
                    param="prompt",
                )
            prompts.append(list(p))
            texts.append(tok.decode(p))
        else:
            raise bad
    return prompts, texts


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _safe_to_send(text: str, stop: list[str]) -> str:
    """The part of a growing completion that no later token can change: not a possible start of a
    stop string, nor a character still missing bytes."""
    text, _ = _cut_at_stop(text, stop)
    held = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                held = max(held, k)
                break
    text = text[: len(text) - held]
    return text.rstrip("\ufffd")


class Server:
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

    # -- POST /v1/completions
    def parse_completions(self, body: Any) -> Completion:
        req = parse_completions(body, self.tok, limit=self.max_tokens, context=self.context)
        for ids in req.prompts:
            for j in range(req.n):
                seed = None if req.seed is None else req.seed + j  # choice j: seed + j
                params = SamplingParams(**{**_fields(req.params), "random_seed": seed})
                req.rows.append(
                    Row(
                        list(ids),
                        params,
                        max_new_tokens=req.max_new,
                        top_n=req.top_n or 0,
                        stop_text=self._stop_test(req.stop) if req.stop else None,
                    )
                )
        return req

    def _stop_test(self, stop: list[str]):
        def test(new: list[int]) -> bool:
            text = text_of(self.tok, new)
            return any(s in text for s in stop)

        return test

    def completions(self, body: Any) -> dict:
        req = self.parse_completions(body)
        results = self._results(req.rows)
        return self.completion_object(req, results)

    def completion_object(self, req: Completion, results: list[RowResult]) -> dict:
        choices, new_tokens = [], 0
        for k, result in enumerate(results):
            p = k // req.n
            choice, n_new = self._choice(req, p, result)
            choice["index"] = k
            choices.append(choice)
            new_tokens += n_new
        prompt_tokens = sum(len(ids) for ids in req.prompts)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": req.model or self.name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": new_tokens,
                "total_tokens": prompt_tokens + new_tokens,
            },
        }

    def _choice(self, req: Completion, p: int, result: RowResult) -> tuple[dict, int]:
        n_prompt = len(req.prompts[p])
        new = result.ids[n_prompt:]
        text, stopped = _cut_at_stop(text_of(self.tok, new), req.stop)
        finish = "stop" if stopped or result.finish_reason == "stop" else "length"
        if req.max_new == 0:
            finish = "length"
        full_text = req.texts[p] + text if req.echo else text
        logprobs = None
        if req.top_n is not None:
            first = 0 if req.echo else n_prompt
            logprobs = self.logprobs_object(result, first, req.top_n)
        return {"text": full_text, "logprobs": logprobs, "finish_reason": finish}, len(new)

    def logprobs_object(self, result: RowResult, first: int, top_n: int) -> dict:
        """OpenAI's logprobs for the tokens result.ids[first:] (position 0 has no logprob)."""
        ids = result.ids
        offsets = token_offsets(self.tok, ids)
        tokens, token_lps, tops, text_offset = [], [], [], []
        for j in range(first, len(ids)):
            tokens.append(self.tok.decode([ids[j]]))
            text_offset.append(offsets[j])
            if j == 0:
                token_lps.append(None)
                tops.append(None)
                continue
            lp = result.logprobs[j - 1]
            token_lps.append(lp)
            top: dict[str, float] = {}
            for i, v in (result.top or [[]] * len(ids))[j - 1][:top_n]:
                top.setdefault(self.tok.decode([i]), v)
            top.setdefault(tokens[-1], lp)  # the chosen token is always there
            tops.append(top)
        return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops,
                "text_offset": text_offset}  # fmt: skip

    # -- the small routes
    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.name, "object": "model",
                "created": self.created, "owned_by": "dataprep",
                "max_model_len": self.context}]}  # fmt: skip

    def tokenizer_info(self) -> dict:
        def piece(i):
            return None if i is None else self.tok.id_to_piece(i)

        eos = self.tok.eod_id if self.tok.eod_id is not None else self.tok.eos_id
        return {"tokenizer_class": type(self.tok).__name__, "name": self.tok.name,
                "eos_token": piece(eos), "bos_token": piece(self.tok.bos_id),
                "pad_token": piece(self.tok.pad_id), "model_max_length": self.context,
                "vocab_size": self.tok.vocab_size}  # fmt: skip

    def tokenize(self, body: Any) -> dict:
        body = _check_keys(body, {"prompt", "add_special_tokens", "model"}, "POST /tokenize")
        if not isinstance(body.get("prompt"), str):
            raise RequestError("prompt must be a string", param="prompt")
        ids = encode_special(self.tok, body["prompt"])
        return {"tokens": ids, "count": len(ids), "max_model_len": self.context}

    def detokenize(self, body: Any) -> dict:
        body = _check_keys(body, {"tokens", "model"}, "POST /detokenize")
        ids = body.get("tokens")
        if not isinstance(ids, list) or not all(
            type(i) is int and 0 <= i < self.tok.vocab_size for i in ids
        ):
            raise RequestError(
                f"tokens must be a list of ids in [0, {self.tok.vocab_size})", param="tokens"
            )
        return {"prompt": self.tok.decode(ids)}

    def health(self) -> dict:
        return {"status": "ok", "model": self.name, "architecture": type(self.model).__name__,
                "context": self.context, "max_tokens_to_generate": self.max_tokens}  # fmt: skip


def _fields(p: SamplingParams) -> dict:
    return {k: getattr(p, k) for k in SamplingParams.field_names()}


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
                safe = _safe_to_send(text_of(server.tok, new_ids[k]), req.stop)
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
