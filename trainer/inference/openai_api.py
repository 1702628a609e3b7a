"""The OpenAI-style routes of `dataprep serve`: request parsing and response building.

`parse_completions` validates a `POST /v1/completions` body (OpenAI's legacy completions contract)
into a `Completion`; `OpenAIRoutes` (a base of `trainer.inference.serve.Server`) turns it into
Rows and shapes the completion and logprobs objects, and answers `GET /v1/models` and vLLM's
tokenizer routes. `encode_special` encodes prompt text as vLLM does; `cut_at_stop` and
`safe_to_send` cut a completion at its stop strings (whole or still growing, as streamed).
"""

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from dataprep.errors import UsageError
from trainer.inference.api_common import MAX_SENTENCES, RequestError, check_keys
from trainer.inference.generate import (
    Row,
    RowResult,
    SamplingParams,
    special_ids,
    text_of,
    token_offsets,
)

MAX_LOGPROBS = 20  # top alternatives per position
MAX_STOP = 4  # OpenAI's limit on stop strings

COMPLETIONS_KEYS = {
    "prompt", "max_tokens", "temperature", "top_p", "top_k", "logprobs", "seed", "model", "n",
    "stream", "stop", "echo", "user", "stream_options",
}  # fmt: skip
# OpenAI fields we accept only at their neutral value (a request relying on them is refused)
NEUTRAL = {"presence_penalty": 0, "frequency_penalty": 0, "best_of": 1, "logit_bias": {},
           "suffix": None}  # fmt: skip


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
    body = check_keys(body, COMPLETIONS_KEYS | set(NEUTRAL), route)
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


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def safe_to_send(text: str, stop: list[str]) -> str:
    """The part of a growing completion that no later token can change: not a possible start of a
    stop string, nor a character still missing bytes."""
    text, _ = cut_at_stop(text, stop)
    held = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                held = max(held, k)
                break
    text = text[: len(text) - held]
    return text.rstrip("\ufffd")


def _fields(p: SamplingParams) -> dict:
    return {k: getattr(p, k) for k in SamplingParams.field_names()}


class OpenAIRoutes:
    """The route logic of POST /v1/completions, GET /v1/models and the tokenizer routes; its
    subclass provides `tok`, `name`, `context`, `max_tokens` and `_results(rows)`."""

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
        text, stopped = cut_at_stop(text_of(self.tok, new), req.stop)
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
        body = check_keys(body, {"prompt", "add_special_tokens", "model"}, "POST /tokenize")
        if not isinstance(body.get("prompt"), str):
            raise RequestError("prompt must be a string", param="prompt")
        ids = encode_special(self.tok, body["prompt"])
        return {"tokens": ids, "count": len(ids), "max_model_len": self.context}

    def detokenize(self, body: Any) -> dict:
        body = check_keys(body, {"tokens", "model"}, "POST /detokenize")
        ids = body.get("tokens")
        if not isinstance(ids, list) or not all(
            type(i) is int and 0 <= i < self.tok.vocab_size for i in ids
        ):
            raise RequestError(
                f"tokens must be a list of ids in [0, {self.tok.vocab_size})", param="tokens"
            )
        return {"prompt": self.tok.decode(ids)}
