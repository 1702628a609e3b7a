"""`dataprep eval`: perplexity on a dataset split and LAMBADA-style last-word accuracy.

Split perplexity: the windows are exactly those megatron-core's `GPTDataset` serves for that split
with `num_samples=None` (one epoch; `dataprep.sampling.gpt.GPTSamples`, whose indices the sampling
tests compare with megatron-core's), seq_length / split / seed defaulting to the training run's.
Each window w of seq_length + 1 ids gives seq_length predictions (inputs w[:-1], targets w[1:]);
mean loss = mean negative log-likelihood in nats over all of them (PAD_ID targets of a kept
partial sample skipped), perplexity = exp(mean loss).

LAMBADA (lm-evaluation-harness's `lambada_openai`): each JSONL record {"text"}
gives context = the words before the last space and target = " " + last word, encoded as
lm-evaluation-harness does (`encode_pair`). acc = the mean over records of "every target token is
the argmax"; perplexity = exp(-mean target log-likelihood). trainer/inference/lm_eval_model.py
answers lm_eval's requests with the same `loglikelihood`, so both give the same numbers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from dataprep.errors import ConfigError, DataConfigError, DataprepError, ReadError, UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SplitResult:
    split: str
    windows: int
    tokens: int  # predictions scored
    mean_loss: float  # nats per token
    perplexity: float


@dataclass(frozen=True, slots=True)
class LambadaResult:
    records: int
    acc: float
    perplexity: float


def train_defaults(checkpoint: str) -> dict:
    """seq_length, split and seed of the run that wrote a checkpoint (empty if not recorded)."""
    from trainer.checkpoint import read_metadata

    tc = (read_metadata(checkpoint).get("extra") or {}).get("train_config") or {}
    return {k: tc[k] for k in ("seq_length", "split", "seed") if k in tc}


def _real(model, logits):
    return logits[..., : model.config.vocab_size].float()


def _check_causal(model) -> None:
    from trainer.models.gpt import GPT
    from trainer.models.gptj import GPTJ

    if not isinstance(model, GPT | GPTJ):
        raise UsageError(
            f"eval needs a GPT or GPT-J checkpoint, this one holds a {type(model).__name__}"
        )


def split_perplexity(
    model,
    prefix: str,
    *,
    split_name: str,
    seq_length: int,
    split: str,
    seed: int,
    batch_size: int = 8,
    max_windows: int | None = None,
    progress: bool = True,
) -> SplitResult:
    """Mean loss and perplexity over the GPTDataset windows of one split of `prefix`."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from dataprep.sampling.gpt import PAD_ID, GPTSamples, GPTSamplesConfig

    _check_causal(model)
    if seq_length > model.config.block_size:
        raise ConfigError(
            f"{{seq_length}} {seq_length} exceeds the model's context {model.config.block_size}",
            "seq_length",
        )
    config = GPTSamplesConfig(seq_length=seq_length, seed=seed, split=split)
    samples = GPTSamples(prefix, num_samples=None, split_name=split_name, config=config)
    n = len(samples) if max_windows is None else min(len(samples), max_windows)
    if n == 0:
        raise DataConfigError(
            f"{ConfigError.quote(prefix)}: the {split_name} split of {{split}} {split} holds no "
            f"window of {seq_length} + 1 tokens; use a smaller {{seq_length}} or a larger split "
            "share",
            "split",
            "seq_length",
        )
    top = int(max(int(np.max(samples[k])) for k in range(min(n, 64))))
    if top >= model.config.vocab_size:
        raise DataprepError(
            f"{prefix}: token id {top} is outside the model's vocabulary of "
            f"{model.config.vocab_size}; evaluate with data made by the model's tokenizer"
        )
    total, count = 0.0, 0
    bar = tqdm(
        total=n,
        desc=f"eval {split_name}",
        unit="window",
        disable=not progress or not sys.stderr.isatty(),
    )
    with torch.no_grad():
        for start in range(0, n, batch_size):
            w = torch.tensor(
                np.stack([samples[k] for k in range(start, min(n, start + batch_size))])
            )
            inputs, targets = w[:, :-1].clamp(min=0), w[:, 1:]
            logits = _real(model, model(inputs))
            keep = targets != PAD_ID
            loss = torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum")
            total += float(loss)
            count += int(keep.sum())
            bar.update(len(w))
    bar.close()
    mean = total / count
    return SplitResult(split_name, n, count, mean, math.exp(mean))


# --------------------------------------------------------------------------------------- LAMBADA
def lambada_pair(text: str) -> tuple[str, str]:
    """lambada_openai's doc_to_text / doc_to_target: (words but the last, " " + last word)."""
    words = text.split(" ")
    return " ".join(words[:-1]), " " + words[-1]


def encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness's `_encode_pair`: trailing spaces of the context move to the
    continuation; the continuation's ids are those of the whole text after the context's."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok.encode(context + continuation)
    ctx = tok.encode(context)
    return ctx, whole[len(ctx) :]


def loglikelihoods(
    model, pairs: list[tuple[list[int], list[int]]], *, eod_id: int, batch_size: int = 16
) -> list[tuple[float, bool]]:
    """(sum of log p(continuation | context), continuation is the greedy one) per (context ids,
    continuation ids); an empty context starts from `eod_id`; long inputs keep the last
    block_size ids."""
    import torch

    _check_causal(model)
    block = model.config.block_size
    out: list[tuple[float, bool]] = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            rows = []
            for ctx, cont in pairs[start : start + batch_size]:
                if not cont:
                    raise UsageError("an empty continuation has no likelihood to score")
                full = ((ctx or [eod_id]) + cont)[-(block + 1) :]
                rows.append((full[:-1], len(cont)))
            width = max(len(r) for r, _ in rows)
            batch = torch.full((len(rows), width), eod_id, dtype=torch.long)
            for i, (r, _) in enumerate(rows):
                batch[i, : len(r)] = torch.tensor(r)  # right padding: causal, never seen
            logits = model(batch)
            for i, ((r, m), (_, cont)) in enumerate(zip(rows, pairs[start : start + batch_size],
                                                        strict=True)):  # fmt: skip
                # predictions of the m continuation ids, over the real vocabulary
                span = torch.log_softmax(_real(model, logits[i, len(r) - m : len(r)]), dim=-1)
                target = torch.tensor(cont[-m:])
                ll = float(span.gather(-1, target[:, None]).sum())
                out.append((ll, bool((span.argmax(-1) == target).all())))
    return out


def read_lambada(path: str | os.PathLike) -> list[str]:
    """The "text" of every record of a LAMBADA JSONL file; bad lines are errors naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{{lambada}} {ConfigError.quote(path)}: no such file", "lambada")
    texts = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ReadError(path, f"not JSON: {e}", line=line_no) from None
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str) or " " not in text.strip():
                raise ReadError(
                    path, 'expected {"text": "<words> <last word>"} with at least two words',
                    line=line_no,
                )  # fmt: skip
            texts.append(text)
    if not texts:
        raise DataprepError(f"{path}: no records")
    return texts


def lambada(
    model, tok, path: str | os.PathLike, *, batch_size: int = 16, limit: int | None = None
) -> LambadaResult:
    """Accuracy and target perplexity over the records of a LAMBADA JSONL (the first `limit`)."""
    texts = read_lambada(path)[:limit]
    pairs = [encode_pair(tok, *lambada_pair(t)) for t in texts]
    results = loglikelihoods(model, pairs, eod_id=tok.eod_id, batch_size=batch_size)
    acc = sum(g for _, g in results) / len(results)
    ppl = math.exp(-sum(ll for ll, _ in results) / len(results))
    return LambadaResult(len(results), acc, ppl)
