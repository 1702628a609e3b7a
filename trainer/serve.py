"""`dataprep serve`: NeMo's GPT eval server interface over HTTP (reference/serving.md §1).

FastAPI on uvicorn (README "Use the model" says why). Routes: `PUT /generate` (the Megatron-GPT
card's request, answered with the `generate --json` object), `POST /v1/completions` (OpenAI's
completions shape) and `GET /health`. One model behind a lock: requests are queued, never
interleaved on the model. Every bad request is HTTP 400 with `{"error": "..."}` naming the field and
its allowed range (NeMo answers most of them with a bare string and HTTP 200); a body over the size
limit is 413. One log line per request: method, path, status, milliseconds, prompts and tokens.
"""

import json
import logging
import threading
import time
import uuid
from typing import Any

from dataprep.errors import UsageError
from trainer.generate import SamplingParams, generate

log = logging.getLogger(__name__)

MAX_SENTENCES = 128  # NeMo's limit
DEFAULT_MAX_BODY_BYTES = 1 << 20

GENERATE_KEYS = {
    "sentences", "tokens_to_generate", "temperature", "add_BOS", "top_k", "top_p", "greedy",
    "all_probs", "repetition_penalty", "min_tokens_to_generate", "end_strings", "random_seed",
    "compute_logprob",
}  # fmt: skip
COMPLETIONS_KEYS = {
    "prompt", "max_tokens", "temperature", "top_p", "top_k", "logprobs", "end_strings", "seed",
    "model", "n", "stream", "stop",
}  # fmt: skip


class RequestError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _check_keys(body: Any, allowed: set[str], route: str) -> dict:
    if not isinstance(body, dict):
        raise RequestError(f"the body of {route} must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r} for {route}; allowed: {sorted(allowed)}")
    return body


def _prompts(value: Any, field: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise RequestError(f"{field} must be a string or a list of 1 to {MAX_SENTENCES} strings")
    if len(value) > MAX_SENTENCES:
        raise RequestError(f"{field} has {len(value)} entries; at most {MAX_SENTENCES} per request")
    return value


def _params(fields: dict, limit: int) -> SamplingParams:
    try:
        return SamplingParams(**fields, max_tokens_limit=limit)
    except UsageError as e:
        raise RequestError(str(e)) from None


def parse_generate(body: Any, limit: int) -> tuple[list[str], SamplingParams]:
    """PUT /generate: (prompts, params) from NeMo's request, or RequestError."""
    body = _check_keys(body, GENERATE_KEYS, "PUT /generate")
    if "sentences" not in body:
        raise RequestError(f"sentences is required: a list of 1 to {MAX_SENTENCES} prompt strings")
    prompts = _prompts(body["sentences"], "sentences")
    fields = {k: v for k, v in body.items() if k != "sentences"}
    if isinstance(fields.get("end_strings"), list):
        fields["end_strings"] = tuple(fields["end_strings"])
    return prompts, _params(fields, limit)


def parse_completions(body: Any, limit: int) -> tuple[list[str], SamplingParams, bool]:
    """POST /v1/completions: (prompts, params, logprobs wanted), OpenAI names mapped to NeMo's."""
    body = _check_keys(body, COMPLETIONS_KEYS, "POST /v1/completions")
    if "prompt" not in body:
        raise RequestError("prompt is required: a string or a list of strings")
    prompts = _prompts(body["prompt"], "prompt")
    if body.get("n", 1) != 1:
        raise RequestError(f"n must be 1 (one choice per prompt), got {body['n']!r}")
    if body.get("stream", False) is not False:
        raise RequestError("stream must be false: streaming is not supported")
    logprobs = body.get("logprobs", False)
    if logprobs is None:
        logprobs = False
    if not isinstance(logprobs, bool | int) or isinstance(logprobs, int) and logprobs < 0:
        raise RequestError(f"logprobs must be true/false or an integer >= 0, got {logprobs!r}")
    temperature = body.get("temperature", 1.0)
    ends = body.get("end_strings", body.get("stop", ["<|endoftext|>"]))
    if isinstance(ends, str):
        ends = [ends]
    fields = {
        "tokens_to_generate": body.get("max_tokens", 32),
        "temperature": temperature if temperature != 0 else 1.0,
        "greedy": temperature == 0,
        "top_p": body.get("top_p", 1.0),
        "top_k": body.get("top_k", 0),
        "random_seed": body.get("seed"),
        "end_strings": tuple(ends) if isinstance(ends, list) else ends,
    }
    if type(temperature) in (int, float) and not 0 <= temperature <= 100:
        raise RequestError(f"temperature must be in [0, 100] (0 = greedy), got {temperature!r}")
    try:
        params = SamplingParams(**fields, max_tokens_limit=limit)
    except UsageError as e:  # name the field as the client sent it
        message = str(e)
        for ours, openai in (("tokens_to_generate", "max_tokens"), ("random_seed", "seed")):
            if message.startswith(ours):
                message = openai + message[len(ours) :]
        raise RequestError(message) from None
    return prompts, params, bool(logprobs)


class Server:
    """The model, its lock and the route logic, independent of the HTTP framework."""

    def __init__(self, model, tokenizer, *, name: str, max_tokens: int, max_body_bytes: int):
        self.model, self.tok, self.name = model, tokenizer, name
        self.max_tokens, self.max_body_bytes = max_tokens, max_body_bytes
        self.lock = threading.Lock()

    def _generate(self, prompts: list[str], params: SamplingParams):
        with self.lock:  # one request on the model at a time
            try:
                return generate(self.model, self.tok, prompts, params)
            except UsageError as e:  # e.g. a prompt longer than the context
                raise RequestError(str(e)) from None

    def put_generate(self, body: Any) -> dict:
        prompts, params = parse_generate(body, self.max_tokens)
        response, _ = self._generate(prompts, params)
        if not (params.compute_logprob or params.all_probs):
            response["logprob"] = None  # NeMo: null unless asked for
        return response

    def completions(self, body: Any) -> dict:
        prompts, params, want_logprobs = parse_completions(body, self.max_tokens)
        response, lengths = self._generate(prompts, params)
        choices, completion_tokens = [], 0
        for i, n in enumerate(lengths):
            ids = response["token_ids"][i]
            new = ids[n:]
            completion_tokens += len(new)
            choices.append(
                {
                    "index": i,
                    "text": self.tok.decode(new),
                    "tokens": response["tokens"][i][n:],
                    "logprobs": response["logprob"][i][n - 1 :] if want_logprobs else None,
                    "finish_reason": "length" if len(new) >= params.tokens_to_generate else "stop",
                }
            )
        prompt_tokens = sum(lengths)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def health(self) -> dict:
        c = self.model.config
        return {"status": "ok", "model": self.name, "architecture": type(self.model).__name__,
                "context": c.block_size, "max_tokens_to_generate": self.max_tokens}  # fmt: skip


def create_app(server: Server):
    """The FastAPI app for a Server."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
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

    async def handle(request: Request, method) -> JSONResponse:
        t0, status, info = time.perf_counter(), 200, ""
        try:
            body = await read_json(request)
            result = await run_in_threadpool(method, body)
            if "choices" in result:
                n, tokens = len(result["choices"]), result["usage"]["completion_tokens"]
            else:
                n, tokens = len(result["token_ids"]), sum(len(r) for r in result["token_ids"])
            info = f", {n} prompt(s), {tokens} tokens"
            return JSONResponse(result)
        except RequestError as e:
            status, info = e.status, f": {e}"
            return JSONResponse({"error": str(e)}, status_code=e.status)
        finally:
            ms = (time.perf_counter() - t0) * 1000
            log.info("%s %s %d %.0f ms%s", request.method, request.url.path, status, ms, info)

    @app.put("/generate")
    async def put_generate(request: Request):
        return await handle(request, server.put_generate)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, server.completions)

    @app.get("/health")
    async def health():
        log.info("GET /health 200")
        return server.health()

    return app


def serve(checkpoint: str, *, host: str, port: int, tokenizer: str | None, max_tokens: int | None,
          max_body_bytes: int, sock=None) -> int:  # fmt: skip
    """Load a checkpoint and serve it until interrupted (on `sock` when given: a bound socket)."""
    import uvicorn

    from trainer.generate import _check_model, load_for_inference

    model, tok, path = load_for_inference(checkpoint, tokenizer=tokenizer)
    _check_model(model)
    limit = max_tokens or model.config.block_size
    server = Server(model, tok, name=path, max_tokens=limit, max_body_bytes=max_body_bytes)
    log.info("serving %s (%s) on http://%s:%d", path, type(model).__name__, host, port)
    config = uvicorn.Config(
        create_app(server), host=host, port=port, log_level="warning", access_log=False
    )
    uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)
    return 0
