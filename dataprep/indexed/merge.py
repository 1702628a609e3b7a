"""Merge several `.bin/.idx` datasets into one, as Megatron's `tools/merge_datasets.py` does with
`IndexedDatasetBuilder.add_index` (reference/formats.md §1.5, §2.3), with the same bytes as output.

Every input is opened and checked first (format, dtype, tokenizer), so a mismatch fails before
anything is written. The `.bin` files are then streamed, never loaded; `document_indices` are
rebased.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dataprep.errors import DataprepError, UsageError
from dataprep.indexed.reader import IndexedDatasetReader
from dataprep.indexed.writer import IndexedDatasetWriter

logger = logging.getLogger(__name__)

# keys of a manifest's "tokenizer" entry that identify the tokenizer (the first present in both
# wins)
_TOKENIZER_FINGERPRINT_KEYS = ("identity", "fingerprint", "sha256")
# compared when no fingerprint is recorded: every one of these present in both must agree
_TOKENIZER_FIELDS = ("name", "spec", "vocab_size", "eod_id")


@dataclass(frozen=True)
class MergeSource:
    prefix: str
    num_documents: int
    num_sequences: int
    num_tokens: int


@dataclass(frozen=True)
class MergeSummary:
    output_prefix: str
    dtype: np.dtype
    sources: tuple[MergeSource, ...]
    num_documents: int
    num_sequences: int
    num_tokens: int
    tokenizer: (
        dict[str, Any] | None
    )  # the sources' common manifest "tokenizer" entry, if any had one


def _tokenizer_conflict(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """A description of how two manifest tokenizer entries differ, or None if they agree."""
    for key in _TOKENIZER_FINGERPRINT_KEYS:
        if key in a and key in b:
            return None if a[key] == b[key] else f"{key} {a[key]!r} vs {b[key]!r}"
    for key in _TOKENIZER_FIELDS:
        if key in a and key in b and a[key] != b[key]:
            return f"{key} {a[key]!r} vs {b[key]!r}"
    return None


def merge_datasets(
    prefixes: Sequence[str | os.PathLike],
    output_prefix: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> MergeSummary:
    """Concatenate datasets in the given order into `output_prefix.bin/.idx`."""
    from dataprep.manifest import load_manifest

    prefixes = [os.fspath(p) for p in prefixes]
    output_prefix = os.fspath(output_prefix)
    if not prefixes:
        raise UsageError("nothing to merge: give at least one input dataset")
    out_abs = os.path.abspath(output_prefix)
    if any(os.path.abspath(p) == out_abs for p in prefixes):
        raise UsageError(f"output prefix {output_prefix} is also an input; choose another output")
    existing = [p for p in (output_prefix + ".bin", output_prefix + ".idx") if os.path.exists(p)]
    if existing and not overwrite:
        raise DataprepError(
            f"{' and '.join(existing)} already exist; pass --overwrite (overwrite=True) to "
            "replace them"
        )

    readers = [IndexedDatasetReader(p) for p in prefixes]
    first = readers[0]
    for r in readers[1:]:
        if r.dtype != first.dtype:
            raise DataprepError(
                f"cannot merge {first.path_prefix} (dtype {first.dtype.name}) with {r.path_prefix} "
                f"(dtype {r.dtype.name}): all inputs must share a token dtype; rebuild one of them"
            )
    tokenizer: dict[str, Any] | None = None
    tokenizer_from = None
    for p in prefixes:
        manifest = load_manifest(p)
        entry = manifest.get("tokenizer") if isinstance(manifest, dict) else None
        if not isinstance(entry, dict):
            continue
        if tokenizer is None:
            tokenizer, tokenizer_from = entry, p
        elif (conflict := _tokenizer_conflict(tokenizer, entry)) is not None:
            raise DataprepError(
                f"cannot merge {tokenizer_from} with {p}: their build manifests name different "
                f"tokenizers ({conflict}); token ids from different tokenizers cannot be mixed"
            )

    sources = tuple(
        MergeSource(r.path_prefix, r.num_documents, len(r), r.num_tokens) for r in readers
    )
    dtype = first.dtype
    del readers, first  # release the memory maps before copying
    with IndexedDatasetWriter(output_prefix, dtype=dtype) as writer:
        for p in prefixes:
            logger.info("appending %s", p)
            writer.add_index(p)
    summary = MergeSummary(
        output_prefix=output_prefix,
        dtype=writer.dtype,
        sources=sources,
        num_documents=sum(s.num_documents for s in sources),
        num_sequences=sum(s.num_sequences for s in sources),
        num_tokens=sum(s.num_tokens for s in sources),
        tokenizer=tokenizer,
    )
    logger.info(
        "merged %d datasets into %s: %d documents, %d tokens",
        len(sources),
        output_prefix,
        summary.num_documents,
        summary.num_tokens,
    )
    return summary
