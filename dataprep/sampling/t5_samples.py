"""T5/mT5 training samples: `T5Samples` cuts a tokenized corpus into span-corrupted samples.

Each sample is recomputable alone from `(seed, sample index)`, so any worker can build it; the
masking itself is t5.py's canonical T5 (sentinels descending from `vocab_size - 1`,
`<extra_id_0>` the last id). Megatron-core and NeMo mask differently (sentence based, ascending
sentinels). `build_t5_samples` gives the samples of a dataset (or of one split of it) to the
trainer, `dataprep report` and `preview-masking`; `sentinel_ids_of` reads a tokenizer's sentinels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dataprep.errors import ConfigError, DataprepError, UsageError
from dataprep.sampling.t5 import (
    _check_density,
    _check_sentinels,
    _inputs_targets,
    corrupted_lengths,
    random_spans_helper,
    random_spans_noise_mask,
    span_counts,
)

__all__ = [
    "MIN_INPUTS_LENGTH",
    "T5Example",
    "T5Samples",
    "build_t5_samples",
    "sentinel_ids_of",
]


# The shortest encoder input `T5Samples.lengths_for` accepts, whatever the density: one clean token,
# one sentinel and EOS (from a chunk of 2 raw tokens at T5's density).
MIN_INPUTS_LENGTH = 3


def sentinel_ids_of(tokenizer: Any) -> list[int]:
    """The tokenizer's sentinel ids in order; a UsageError naming the tokenizer if it has none."""
    ids = list(getattr(tokenizer, "sentinel_ids", None) or [])
    if not ids:
        name = getattr(tokenizer, "name", type(tokenizer).__name__)
        raise ConfigError(
            f"tokenizer {ConfigError.quote(name)} has no sentinel pieces <extra_id_0>, "
            "<extra_id_1>, ...: T5 span corruption needs a T5/mT5 SentencePiece model "
            "(e.g. {tokenizer} mt5-toy)",
            "tokenizer",
        )
    if getattr(tokenizer, "eos_id", None) is None:
        raise UsageError(f"tokenizer {getattr(tokenizer, 'name', tokenizer)} has no EOS id")
    return ids


@dataclass(frozen=True, slots=True)
class T5Example:
    """One span-corrupted sample; `inputs`/`targets` end with EOS."""

    index: int  # sample number k
    tokens: np.ndarray  # (tokens_length,) raw token ids the sample was cut from
    inputs: np.ndarray  # encoder input ids, int64
    targets: np.ndarray  # decoder target ids (labels), int64
    noise_mask: np.ndarray  # (tokens_length,) bool, True = token moved to the targets
    sentinels: np.ndarray  # sentinel ids used, in order (<extra_id_0>, <extra_id_1>, ...)

    @property
    def num_spans(self) -> int:
        return int(self.sentinels.size)

    @property
    def noise_density(self) -> float:
        return float(self.noise_mask.mean()) if self.noise_mask.size else 0.0


class T5Samples:
    """Span-corrupted samples over a tokenized corpus, each recomputable alone from (seed, k).

    The corpus is every token of the dataset in order, documents joined with no separator (T5's
    `reduce_concat_tokens`; an EOD the build appended stays in as an ordinary token), cut into
    consecutive chunks of `tokens_length` raw tokens (568 for inputs_length 512); sample k is chunk
    k corrupted with `np.random.default_rng([seed, k])`, so data-parallel workers agree without
    talking. A chunk gives exactly `inputs_length` encoder ids and `targets_length` decoder ids.
    The last partial chunk is dropped, so fewer than `tokens_length` tokens of the whole dataset
    are lost. T5 instead joins 128 documents at a time and keeps each batch's shorter last chunk
    (padded later), and takes one random chunk of at most 65536 tokens from each document.
    Shuffling the order of samples is left to the loader.
    """

    def __init__(
        self,
        source: Any,
        *,
        sentinel_ids: Sequence[int],
        eos_id: int,
        inputs_length: int = 512,
        noise_density: float = 0.15,
        mean_noise_span_length: float = 3.0,
        seed: int = 1234,
    ) -> None:
        """`source`: an IndexedDatasetReader (or its path prefix), or a flat array of token ids."""
        if not 0 < noise_density < 1:
            raise UsageError(
                f"noise density {noise_density} must be strictly between 0 and 1 (T5 uses 0.15)"
            )
        _check_density(noise_density, mean_noise_span_length)
        self.sentinel_ids = _check_sentinels(sentinel_ids)
        self.eos_id = int(eos_id)
        self.inputs_length = int(inputs_length)
        self.noise_density = float(noise_density)
        self.mean_noise_span_length = float(mean_noise_span_length)
        self.seed = int(seed)
        self.tokens_length, self.targets_length = self.lengths_for(
            self.inputs_length,
            noise_density=noise_density,
            mean_noise_span_length=mean_noise_span_length,
        )
        num_spans = span_counts(
            self.tokens_length,
            noise_density=noise_density,
            mean_noise_span_length=mean_noise_span_length,
        )[1]
        if num_spans > self.sentinel_ids.size:
            raise UsageError(
                f"seq length {inputs_length} makes {num_spans} noise spans per sample but the "
                f"tokenizer has {self.sentinel_ids.size} sentinels: use a shorter seq length, "
                "a lower noise density or a longer mean noise span length"
            )
        self.corpus = _flat_tokens(source)
        self.num_tokens = int(self.corpus.size)
        if self.num_tokens < self.tokens_length:
            raise DataprepError(
                f"the dataset has {self.num_tokens} tokens, fewer than the "
                f"{self.tokens_length} raw tokens one sample of encoder length "
                f"{self.inputs_length} needs: use more data or a shorter seq length"
            )

    @staticmethod
    def lengths_for(
        inputs_length: int, *, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
    ) -> tuple[int, int]:
        """(tokens_length, targets_length) for an encoder length: T5's helper, then checked exactly.

        For short encoders T5's arithmetic undercounts (it does not clamp noise to >= 1 token); the
        chunk is shortened until `corrupted_lengths` fits; targets_length is what a chunk gives.
        """
        tokens_length, _ = random_spans_helper(
            inputs_length,
            noise_density=noise_density,
            mean_noise_span_length=mean_noise_span_length,
        )
        kw = dict(noise_density=noise_density, mean_noise_span_length=mean_noise_span_length)
        while tokens_length >= 2 and corrupted_lengths(tokens_length, **kw)[0] > inputs_length:
            tokens_length -= 1
        if tokens_length < 2:
            raise UsageError(
                f"seq length {inputs_length} cannot hold one target: an encoder input needs at "
                "least one clean token, one sentinel and EOS (seq length >= 3)"
            )
        return tokens_length, corrupted_lengths(tokens_length, **kw)[1]

    def __len__(self) -> int:
        return self.num_tokens // self.tokens_length

    def chunk(self, k: int) -> np.ndarray:
        """The raw tokens sample k is cut from."""
        k = self._check_index(k)
        start = k * self.tokens_length
        return np.asarray(self.corpus[start : start + self.tokens_length])

    def __getitem__(self, k: int) -> T5Example:
        k = self._check_index(k)
        tokens = self.chunk(k)
        rng = np.random.default_rng([self.seed, k])
        mask = random_spans_noise_mask(
            tokens.size,
            noise_density=self.noise_density,
            mean_noise_span_length=self.mean_noise_span_length,
            rng=rng,
        )
        inputs, targets = _inputs_targets(tokens, mask, self.sentinel_ids, self.eos_id)
        num_spans = inputs.size - 1 - (mask.size - int(np.count_nonzero(mask)))  # - EOS - clean
        return T5Example(k, tokens, inputs, targets, mask, self.sentinel_ids[:num_spans].copy())

    def _check_index(self, k: int) -> int:
        n = len(self)
        k = int(k)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"sample {k} out of range: this dataset has {n} samples")
        return k


def build_t5_samples(
    source: Any,
    *,
    sentinel_ids: Sequence[int],
    eos_id: int,
    inputs_length: int = 512,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    seed: int = 1234,
    split: str | None = None,
    split_name: str = "train",
) -> T5Samples:
    """The span-corrupted samples of a dataset, or of the documents of one part of it.

    `source` is a dataset prefix, an IndexedDatasetReader or a flat array of token ids. With a
    Megatron `split` string ("969,30,1") only the documents of part `split_name` are used (the
    trainer's samples), and a problem with them names the dataset, the split and the documents;
    without one, every token of the source is (`dataprep report`, `preview-masking`).
    """
    kw = dict(sentinel_ids=sentinel_ids, eos_id=eos_id, inputs_length=inputs_length,
              noise_density=noise_density, mean_noise_span_length=mean_noise_span_length,
              seed=seed)  # fmt: skip
    if split is None:
        return T5Samples(source, **kw)
    from dataprep.indexed.reader import IndexedDatasetReader
    from dataprep.sampling.split import split_index, split_ranges

    reader = source if hasattr(source, "document_indices") else IndexedDatasetReader(source)
    span = split_ranges(split, reader.num_documents)[split_index(split_name)]
    beg, end = (0, 0) if span is None else span
    try:
        return T5Samples(_document_tokens(reader, beg, end), **kw)
    except DataprepError as e:
        raise DataprepError(
            f"dataset {reader.path_prefix} (split {split!r}, documents {beg}..{end}): {e}"
        ) from e


def _document_tokens(reader: Any, beg: int, end: int) -> np.ndarray:
    """The tokens of documents [beg, end) of a reader, in order: a view of its memory map."""
    first_seq, last_seq = int(reader.document_indices[beg]), int(reader.document_indices[end])
    item = reader.dtype.itemsize
    start = int(reader.sequence_pointers[first_seq]) // item if first_seq < len(reader) else 0
    stop = start
    if last_seq > first_seq:
        last = last_seq - 1
        stop = int(reader.sequence_pointers[last]) // item + int(reader.sequence_lengths[last])
    return reader.tokens()[start:stop]


def _flat_tokens(source: Any) -> np.ndarray:
    if isinstance(source, str | os.PathLike):
        from dataprep.indexed.reader import IndexedDatasetReader

        source = IndexedDatasetReader(source)
    if hasattr(source, "tokens") and callable(source.tokens):
        flat = source.tokens()
    else:
        flat = np.asarray(source)
    if flat.ndim != 1 or not np.issubdtype(flat.dtype, np.integer):
        raise UsageError(
            f"expected a 1-D array of integer token ids, got {flat.dtype} {flat.shape}"
        )
    return flat
