"""Text generation for GPT and GPT-J checkpoints with NeMo's sampling parameters.

`generate(model, tokenizer, prompts, params)` runs every prompt in one batch and returns NeMo's
response object: `sentences`, `tokens`, `token_ids`, `logprob`, `offsets` (+ `full_logprob`).
Batching as NeMo's: prompts are right-padded, decoding starts at the shortest prompt's length and a
row whose prompt is longer keeps its own prompt tokens until they run out, so causal attention
never sees padding and every row gets exactly what it would get alone. Each row generates up to
`tokens_to_generate` tokens after its own prompt.

KV cache: the first forward covers the shortest prompt; every later step feeds one position and
reuses the keys/values of the earlier ones (trainer/models/gpt.py `cached_attention`). Without it
(`use_cache=False`) every step runs the whole prefix again; benchmarks/bench_generate.py times both.

Scores: the logits' padded vocabulary columns (and, under TP, the other ranks' slices, gathered
first) are cut to `vocab_size`. `logprob` is the model's log-softmax of each token after the first
(raw logits, before any sampling change); the sampled token comes from the logits after, in this
order, repetition penalty (CTRL/HF rule), the end-of-document ban of `min_tokens_to_generate`,
temperature, top-k and top-p.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any

from dataprep.errors import ConfigError, UsageError

log = logging.getLogger(__name__)

MAX_TEMPERATURE = 100.0


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """NeMo's generation parameters: same names, defaults and ranges (NeMo's
    `megatron_gpt_eval.py` / text generation server)."""

    tokens_to_generate: int = 64  # new tokens per prompt, >= 1
    temperature: float = 1.0  # 0 < t <= 100 (unused when greedy)
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    top_p: float = 0.9  # keep the smallest set with probability >= p; 0 or 1 = off
    greedy: bool = False  # argmax instead of sampling
    repetition_penalty: float = 1.0  # >= 1; 1 = off
    min_tokens_to_generate: int = 0  # no end of document before this many new tokens
    add_BOS: bool = False  # prepend the tokenizer's BOS (GPT-2: <|endoftext|>)  # noqa: N815
    all_probs: bool = False  # also return the whole distribution at every position
    compute_logprob: bool = False  # return `logprob` (generate always computes it)
    end_strings: tuple[str, ...] = ("<|endoftext|>",)  # stop once the generation ends with one
    random_seed: int | None = None  # >= 0; None = a fresh seed
    use_cache: bool = True  # KV cache (off only for the benchmark)
    max_tokens_limit: int = field(default=0, repr=False)  # 0 = none; the server sets its limit

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> UsageError:
            return UsageError(f"{name} must be {expected}, got {getattr(self, name)!r}")

        for name in ("tokens_to_generate", "top_k", "min_tokens_to_generate"):
            if type(getattr(self, name)) is not int:
                raise bad(name, "an integer")
        for name in ("temperature", "top_p", "repetition_penalty"):
            if type(getattr(self, name)) not in (int, float):
                raise bad(name, "a number")
        for name in ("greedy", "add_BOS", "all_probs", "compute_logprob", "use_cache"):
            if type(getattr(self, name)) is not bool:
                raise bad(name, "true or false")
        limit = self.max_tokens_limit
        if self.tokens_to_generate < 1 or (limit and self.tokens_to_generate > limit):
            raise bad("tokens_to_generate", f"an integer in [1, {limit}]" if limit else ">= 1")
        if not self.greedy and not 0 < self.temperature <= MAX_TEMPERATURE:
            raise bad("temperature", f"in (0, {MAX_TEMPERATURE:g}] unless greedy is true")
        if not 0.0 <= self.top_p <= 1.0:
            raise bad("top_p", "in [0, 1]")
        if self.top_k < 0:
            raise bad("top_k", "an integer >= 0")
        if self.repetition_penalty < 1.0:
            raise bad("repetition_penalty", ">= 1")
        if self.min_tokens_to_generate < 0:
            raise bad("min_tokens_to_generate", "an integer >= 0")
        ends = self.end_strings
        if isinstance(ends, str) or not all(isinstance(e, str) and e for e in ends):
            raise bad("end_strings", "a list of non-empty strings")
        object.__setattr__(self, "end_strings", tuple(ends))
        seed = self.random_seed
        if seed is not None and (type(seed) is not int or seed < 0):
            raise bad("random_seed", "an integer >= 0 or null")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name not in ("use_cache", "max_tokens_limit")]


def new_cache(model) -> list[dict]:
    """An empty KV cache for a GPT / GPT-J: one dict per layer (trainer/models/gpt.py)."""
    return [{} for _ in range(model.config.n_layer)]


def _check_model(model) -> None:
    from trainer.models.gpt import GPT
    from trainer.models.gptj import GPTJ

    if not isinstance(model, GPT | GPTJ):
        raise UsageError(
            f"generate needs a GPT or GPT-J checkpoint, this one holds a {type(model).__name__}; "
            "for mT5 use `dataprep fill-mask`"
        )


def _real_logits(model, logits, tp_group):
    """(B, V) real-vocabulary scores from this rank's (B, padded / tp) slice."""
    from trainer.parallel import gather_from_tp_region

    return gather_from_tp_region(logits, tp_group)[..., : model.config.vocab_size].float()


def process_logits(scores, params: SamplingParams, *, seen, banned: int | None = None):
    """Sampling scores (B, V) from raw ones: repetition penalty over `seen` (B, V) bool, the
    `banned` id at -inf, then temperature, top-k, top-p (HF's rules: the most likely token always
    stays)."""
    import torch

    scores = scores.clone()
    if params.repetition_penalty != 1.0:
        p = params.repetition_penalty
        penalised = torch.where(scores < 0, scores * p, scores / p)
        scores = torch.where(seen, penalised, scores)
    if banned is not None:
        scores[:, banned] = float("-inf")
    if params.greedy:
        return scores
    scores = scores / params.temperature
    if params.top_k > 0:
        k = min(params.top_k, scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if 0.0 < params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        cum = sorted_scores.softmax(-1).cumsum(-1)
        drop = cum - sorted_scores.softmax(-1) >= params.top_p  # mass before this token >= p
        drop[:, 0] = False
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return scores


def _row_seeds(rows: list[Row], tp_group) -> list[int]:
    """Each row's sampling seed (its params' random_seed, else a fresh one), the same on every TP
    rank."""
    fresh = random.SystemRandom()
    seeds = [
        r.params.random_seed if r.params.random_seed is not None else fresh.randrange(2**31)
        for r in rows
    ]
    if tp_group is not None:
        import torch.distributed as dist

        box = [seeds]
        dist.broadcast_object_list(box, src=dist.get_global_rank(tp_group, 0), group=tp_group)
        seeds = box[0]
    return seeds


@dataclass
class Row:
    """One sequence to continue: its prompt ids and how. Rows of one batch may differ in every
    field; each gets what it would get alone (its own sampling generator, seeded by its params)."""

    prompt: list[int]
    params: SamplingParams
    max_new_tokens: int | None = None  # None: params.tokens_to_generate; 0 scores the prompt only
    top_n: int = 0  # also the top_n most likely ids with their logprobs at every position
    stop_text: Callable[[list[int]], bool] | None = None  # new ids -> True ends the row
    # each new id as soon as it is chosen, with its logprob and (top_n) the top (id, logprob)s
    on_token: Callable[[int, float, list | None], None] | None = None
    cancelled: Callable[[], bool] | None = None  # True: stop the row now (a client went away)


@dataclass
class RowResult:
    ids: list[int]  # prompt + generation
    logprobs: list[float]  # logprobs[j] = log p(ids[j + 1] | ids[: j + 1])
    top: list[list[tuple[int, float]]] | None  # per position of logprobs, the top_n (id, logprob)
    full: list | None  # all_probs: the whole distribution per position
    finish_reason: str  # "length", "stop" (EOD or a stop text) or "cancelled"


def generate_rows(model, rows: list[Row], *, eod_id: int | None, tp_group=None) -> list[RowResult]:
    """Continue every row in one right-padded batch (see the module docstring)."""
    import torch

    _check_model(model)
    if not rows or any(len(r.prompt) == 0 for r in rows):
        raise UsageError("every prompt must have at least one token (use add_BOS for empty text)")
    block = model.config.block_size
    lengths = [len(r.prompt) for r in rows]
    if max(lengths) > block:  # a prompt of `block` tokens still gets its next token predicted
        raise UsageError(
            f"a prompt has {max(lengths)} tokens; the model's context is {block} tokens, so a "
            f"prompt may have at most {block}"
        )
    B, V = len(rows), model.config.vocab_size
    new = [r.params.tokens_to_generate if r.max_new_tokens is None else r.max_new_tokens
           for r in rows]  # fmt: skip
    # exclusive end per row: the token at position `block` is predicted, never fed back
    ends = [min(n + k, block + 1) for n, k in zip(lengths, new, strict=True)]
    total = max(ends)
    pad = eod_id if eod_id is not None else 0
    tokens = torch.full((B, total), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : lengths[i]] = torch.tensor(r.prompt, dtype=torch.long)
    start = min(lengths)
    seen = torch.zeros(B, V, dtype=torch.bool)  # the ids before the current position, per row
    for i, r in enumerate(rows):
        seen[i, torch.tensor(r.prompt[:start])] = True
    logprobs = torch.zeros(B, max(total - 1, 0))
    top_n = max(r.top_n for r in rows)
    tops: list[list] = [[] for _ in rows]
    full = [] if any(r.params.all_probs for r in rows) else None
    done = [n >= e for n, e in zip(lengths, ends, strict=True)]  # nothing to generate
    finish = ["length"] * B
    finished_at = list(ends)
    gens = [torch.Generator().manual_seed(s) for s in _row_seeds(rows, tp_group)]
    use_cache = all(r.params.use_cache for r in rows)
    cache = new_cache(model) if use_cache else None

    def record_tops(logp, first: int) -> None:  # logp (B, T, V) for positions first .. first+T-1
        if top_n:
            values, ids = torch.topk(logp, top_n, dim=-1)
            for i, r in enumerate(rows):
                if r.top_n:
                    tops[i] += [list(zip(ids[i, t, : r.top_n].tolist(),
                                         values[i, t, : r.top_n].tolist(), strict=True))
                                for t in range(logp.shape[1])]  # fmt: skip

    with torch.no_grad():
        logits = _real_logits(model, model(tokens[:, :start], cache=cache), tp_group)
        logp = torch.log_softmax(logits, dim=-1)  # (B, start, V)
        logprobs[:, : start - 1] = logp[:, : start - 1].gather(-1, tokens[:, 1:start, None])[..., 0]
        record_tops(logp[:, : start - 1], 0)
        if full is not None:
            full.append(logp[:, : start - 1])
        last, scores = logp[:, -1], logits[:, -1]  # predict position `start`
        for pos in range(start, total):
            nxt = tokens[:, pos].clone()  # prompt tokens (teacher-forced) and padding
            active = [i for i in range(B) if not done[i] and pos >= lengths[i]]
            for i in active:
                if rows[i].cancelled is not None and rows[i].cancelled():
                    done[i], finish[i], finished_at[i] = True, "cancelled", pos
            active = [i for i in active if not done[i]]
            groups: dict[SamplingParams, list[int]] = {}
            for i in active:
                groups.setdefault(rows[i].params, []).append(i)
            for params, members in groups.items():
                idx = torch.tensor(members)
                sample = process_logits(scores[idx], params, seen=seen[idx])
                if eod_id is not None and params.min_tokens_to_generate:
                    young = torch.tensor([pos - lengths[i] < params.min_tokens_to_generate
                                          for i in members])  # fmt: skip
                    sample[young, eod_id] = float("-inf")
                if params.greedy:
                    nxt[idx] = sample.argmax(-1)
                else:
                    probs = sample.softmax(-1)
                    for k, i in enumerate(members):  # each row's own generator: as if alone
                        nxt[i] = torch.multinomial(probs[k], 1, generator=gens[i])[0]
            tokens[:, pos] = nxt
            seen[torch.arange(B), nxt] = True
            logprobs[:, pos - 1] = last.gather(-1, nxt[:, None])[:, 0]
            record_tops(last[:, None], pos - 1)
            if full is not None:
                full.append(last[:, None])
            for i in active:
                t = int(nxt[i])
                if rows[i].on_token is not None:
                    top = tops[i][-1] if rows[i].top_n else None
                    rows[i].on_token(t, float(logprobs[i, pos - 1]), top)
                stop = rows[i].stop_text
                if (eod_id is not None and t == eod_id) or (
                    stop is not None and stop(tokens[i, lengths[i] : pos + 1].tolist())
                ):
                    done[i], finish[i], finished_at[i] = True, "stop", pos + 1
                elif pos + 1 >= ends[i]:
                    done[i], finished_at[i] = True, pos + 1
            if all(pos + 1 >= finished_at[i] for i in range(B)):  # prompts scored too
                break
            step = tokens[:, pos : pos + 1] if cache is not None else tokens[:, : pos + 1]
            logits = _real_logits(model, model(step, cache=cache), tp_group)
            last, scores = torch.log_softmax(logits[:, -1], dim=-1), logits[:, -1]

    results = []
    for i in range(B):
        end = finished_at[i]
        result = RowResult(
            ids=tokens[i, :end].tolist(),
            logprobs=logprobs[i, : end - 1].tolist(),
            top=tops[i][: end - 1] if rows[i].top_n else None,
            full=None,
            finish_reason=finish[i],
        )
        if full is not None and rows[i].params.all_probs:
            result.full = torch.cat(full, dim=1)[i, : end - 1].tolist()
        results.append(result)
    return results


def generate_ids(
    model,
    prompts: list[list[int]],
    params: SamplingParams,
    *,
    eod_id: int | None,
    stop_text=None,
    tp_group=None,
) -> tuple[list[list[int]], list[list[float]], list[Any] | None]:
    """(ids, logprobs, full log-probs or None) for each prompt: ids = prompt + generation;
    logprobs[i][j] = log p(ids[i][j + 1] | ids[i][: j + 1]). `stop_text(row, new_ids)` -> True
    ends a row (end strings)."""
    rows = [
        Row(p, params, stop_text=None if stop_text is None else partial(stop_text, i))
        for i, p in enumerate(prompts)
    ]
    out = generate_rows(model, rows, eod_id=eod_id, tp_group=tp_group)
    fulls = [r.full for r in out] if params.all_probs else None
    return [r.ids for r in out], [r.logprobs for r in out], fulls


def generate(
    model, tokenizer, prompts: list[str], params: SamplingParams, *, tp_group=None
) -> tuple[dict[str, Any], list[int]]:
    """(NeMo's response object for `prompts`, the prompts' token counts)."""
    if not prompts:
        raise UsageError("no prompt given: pass at least one")
    rows = nemo_rows(tokenizer, prompts, params)
    results = generate_rows(model, rows, eod_id=tokenizer.eod_id, tp_group=tp_group)
    return nemo_response(tokenizer, results, all_probs=params.all_probs), [
        len(r.prompt) for r in rows
    ]


def nemo_rows(tokenizer, prompts: list[str], params: SamplingParams) -> list[Row]:
    """One Row per prompt of NeMo's request: encoded (BOS first with add_BOS), stopped by
    `params.end_strings` at the end of the generated text."""
    bos = getattr(tokenizer, "bos_id", None)
    if bos is None:
        bos = tokenizer.eod_id
    if params.add_BOS and bos is None:
        raise UsageError(f"add_BOS: the tokenizer {tokenizer.name} has no BOS or EOD token")
    encoded = [([bos] if params.add_BOS else []) + tokenizer.encode(p) for p in prompts]
    if any(not e for e in encoded):
        raise ConfigError("an empty prompt has no token to start from; pass {add_BOS}", "add_BOS")

    def stop_text(new: list[int]) -> bool:
        text = tokenizer.decode(new)
        return any(text.endswith(e) for e in params.end_strings)

    return [Row(e, params, stop_text=stop_text if params.end_strings else None) for e in encoded]


def special_ids(tokenizer) -> set[int]:
    """The ids NeMo's `ids_to_text` drops: the tokenizer's special tokens (EOD, BOS, EOS, pad)."""
    ids = (getattr(tokenizer, a, None) for a in ("eod_id", "bos_id", "eos_id", "pad_id"))
    return {i for i in ids if i is not None}


def text_of(tokenizer, ids: list[int]) -> str:
    """Text as NeMo's `ids_to_text` gives it: special tokens dropped, the rest decoded."""
    special = special_ids(tokenizer)
    return tokenizer.decode([i for i in ids if i not in special])


def nemo_response(tokenizer, results: list[RowResult], *, all_probs: bool) -> dict[str, Any]:
    """NeMo's response object: `sentences` as its `ids_to_text` (no special tokens); `tokens`,
    `token_ids`, `logprob` and `offsets` (into the decoded ids, specials included) keep them."""
    response: dict[str, Any] = {
        "sentences": [text_of(tokenizer, r.ids) for r in results],
        "tokens": [[tokenizer.id_to_piece(t) for t in r.ids] for r in results],
        "token_ids": [r.ids for r in results],
        "logprob": [r.logprobs for r in results],
        "offsets": [token_offsets(tokenizer, r.ids) for r in results],
    }
    if all_probs:
        response["full_logprob"] = [r.full for r in results]
    return response


def token_offsets(tokenizer, ids: list[int]) -> list[int]:
    """Character offset of each token in the decoded sentence (the text decoded before it)."""
    return [len(tokenizer.decode(ids[:i])) for i in range(len(ids))]
