"""Text generation for GPT and GPT-J checkpoints with NeMo's sampling parameters (serving.md §1).

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
from dataclasses import dataclass, field, fields
from typing import Any

from dataprep.errors import UsageError

log = logging.getLogger(__name__)

MAX_TEMPERATURE = 100.0


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """NeMo's generation parameters: same names, defaults and ranges (serving.md §1)."""

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
    from trainer.models import GPT, GPTJ

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


def _seed(params: SamplingParams, tp_group) -> int:
    """The sampling seed, the same on every TP rank."""
    if params.random_seed is not None:
        return params.random_seed
    seed = random.SystemRandom().randrange(2**31)
    if tp_group is not None:
        import torch.distributed as dist

        box = [seed]
        dist.broadcast_object_list(box, src=dist.get_global_rank(tp_group, 0), group=tp_group)
        seed = box[0]
    return seed


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
    import torch

    _check_model(model)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise UsageError("every prompt must have at least one token (use add_BOS for empty text)")
    block = model.config.block_size
    lengths = [len(p) for p in prompts]
    if max(lengths) >= block:
        raise UsageError(
            f"a prompt has {max(lengths)} tokens; the model's context is {block} tokens, so a "
            f"prompt may have at most {block - 1}"
        )
    B, N = len(prompts), params.tokens_to_generate
    ends = [min(n + N, block) for n in lengths]  # exclusive end of each row
    total = max(ends)
    pad = eod_id if eod_id is not None else 0
    tokens = torch.full((B, total), pad, dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = torch.tensor(p, dtype=torch.long)
    lengths_t = torch.tensor(lengths)
    V = model.config.vocab_size
    seen = torch.zeros(B, V, dtype=torch.bool)
    start = min(lengths)
    for i, p in enumerate(prompts):
        seen[i, torch.tensor(p[:start])] = True
    logprobs = torch.zeros(B, max(total - 1, 0))
    full = [] if params.all_probs else None
    done = torch.zeros(B, dtype=torch.bool)
    finished_at = list(ends)
    gen = torch.Generator().manual_seed(_seed(params, tp_group))
    cache = new_cache(model) if params.use_cache else None

    with torch.no_grad():
        prev = 0
        for pos in range(start, total):
            # logits for position pos - 1 predict the token at pos
            inputs = tokens[:, prev:pos] if cache is not None else tokens[:, :pos]
            logits = _real_logits(model, model(inputs, cache=cache), tp_group)
            logp = torch.log_softmax(logits, dim=-1)  # (B, T_in, V)
            if pos == start:  # the first forward covers 0 .. start - 1 (with or without cache)
                gathered = logp[:, : start - 1].gather(-1, tokens[:, 1:start, None])
                logprobs[:, : start - 1] = gathered.squeeze(-1)
                if full is not None:
                    full.append(logp[:, : start - 1])
            prev = pos
            last, scores = logp[:, -1], logits[:, -1]
            sample_scores = process_logits(scores, params, seen=seen, banned=None)
            if eod_id is not None and params.min_tokens_to_generate:
                young = pos - lengths_t < params.min_tokens_to_generate  # new tokens so far
                sample_scores[young, eod_id] = float("-inf")
            if params.greedy:
                choice = sample_scores.argmax(-1)
            else:
                choice = torch.multinomial(sample_scores.softmax(-1), 1, generator=gen).squeeze(-1)
            in_prompt = pos < lengths_t
            nxt = torch.where(in_prompt, tokens[:, pos], choice)
            nxt = torch.where(done, tokens[:, pos], nxt)
            tokens[:, pos] = nxt
            seen[torch.arange(B), nxt] = True
            logprobs[:, pos - 1] = last.gather(-1, nxt[:, None]).squeeze(-1)
            if full is not None:
                full.append(last[:, None])
            for i in range(B):
                if done[i] or in_prompt[i]:
                    continue
                new = tokens[i, lengths[i] : pos + 1].tolist()
                if (
                    (eod_id is not None and nxt[i] == eod_id)
                    or pos + 1 >= ends[i]
                    or (stop_text is not None and stop_text(i, new))
                ):
                    done[i] = True
                    finished_at[i] = pos + 1
            if bool(done.all()):
                break

    ids = [tokens[i, : finished_at[i]].tolist() for i in range(B)]
    lps = [logprobs[i, : finished_at[i] - 1].tolist() for i in range(B)]
    fulls = None
    if full is not None:
        stacked = torch.cat(full, dim=1)  # (B, positions, V)
        fulls = [stacked[i, : finished_at[i] - 1].tolist() for i in range(B)]
    return ids, lps, fulls


def generate(
    model, tokenizer, prompts: list[str], params: SamplingParams, *, tp_group=None
) -> tuple[dict[str, Any], list[int]]:
    """(NeMo's response object for `prompts` (serving.md §1), the prompts' token counts)."""
    if not prompts:
        raise UsageError("no prompt given: pass at least one")
    bos = getattr(tokenizer, "bos_id", None)
    if bos is None:
        bos = tokenizer.eod_id
    if params.add_BOS and bos is None:
        raise UsageError(f"add_BOS: the tokenizer {tokenizer.name} has no BOS or EOD token")
    encoded = [([bos] if params.add_BOS else []) + tokenizer.encode(p) for p in prompts]
    if any(not e for e in encoded):
        raise UsageError("an empty prompt has no token to start from; pass add_BOS / --add-BOS")

    def stop_text(row: int, new: list[int]) -> bool:
        text = tokenizer.decode(new)
        return any(text.endswith(e) for e in params.end_strings)

    ids, lps, fulls = generate_ids(
        model, encoded, params, eod_id=tokenizer.eod_id, stop_text=stop_text, tp_group=tp_group
    )
    response: dict[str, Any] = {
        "sentences": [tokenizer.decode(r) for r in ids],
        "tokens": [[tokenizer.id_to_piece(t) for t in r] for r in ids],
        "token_ids": ids,
        "logprob": lps,
        "offsets": [token_offsets(tokenizer, r) for r in ids],
    }
    if fulls is not None:
        response["full_logprob"] = fulls
    return response, [len(e) for e in encoded]


def token_offsets(tokenizer, ids: list[int]) -> list[int]:
    """Character offset of each token in the decoded sentence (the text decoded before it)."""
    return [len(tokenizer.decode(ids[:i])) for i in range(len(ids))]


def load_for_inference(path, *, tp_group=None, tokenizer: str | None = None):
    """(model in eval mode, tokenizer, checkpoint dir) of a `dataprep train --save` checkpoint;
    the tokenizer is the one recorded at training time unless `tokenizer` names another."""
    from dataprep.errors import DataprepError
    from dataprep.tokenizers import load_tokenizer
    from trainer.checkpoint import load_model, read_metadata, resolve_checkpoint

    ckpt = resolve_checkpoint(path)
    spec = tokenizer or (read_metadata(ckpt).get("info") or {}).get("tokenizer")
    if not spec:
        raise UsageError(
            f"{ckpt}: the checkpoint does not record its tokenizer; pass --tokenizer NAME_OR_PATH"
        )
    tok = load_tokenizer(spec)
    model = load_model(ckpt, tp_group=tp_group)
    if tok.vocab_size > model.config.vocab_size:
        raise DataprepError(
            f"{ckpt}: tokenizer {tok.name} has {tok.vocab_size} ids but the model only "
            f"{model.config.vocab_size}; pass the tokenizer the model was trained with"
        )
    return model, tok, ckpt
