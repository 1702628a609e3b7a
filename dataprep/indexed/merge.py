"""Merge several `.bin/.idx` datasets into one, as Megatron's `tools/merge_datasets.py` does with
`IndexedDatasetBuilder.add_index` (megatron-core `datasets/indexed_dataset.py`), with the same
bytes as output.

Every input is opened and checked first (format, dtype, tokenizer), so a mismatch fails before
anything is written. The `.bin` files are then streamed, never loaded; `document_indices` are
rebased. Beside the merged dataset go a merged manifest `{prefix}.json` (inputs concatenated,
counts summed) and, when every source has one, a merged `{prefix}.provenance.npy` whose file
indices are rebased into the concatenated inputs, so row i still names document i's source line.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.errors import ConfigError, DataprepError, UsageError
from dataprep.fileio import npy_memmap_atomic
from dataprep.indexed.reader import IndexedDatasetReader
from dataprep.indexed.writer import IndexedDatasetWriter
from dataprep.manifest import (
    Manifest,
    manifest_path,
    provenance_path,
    read_manifest,
    write_manifest,
)

logger = logging.getLogger(__name__)

# keys of a manifest's "tokenizer" entry that identify the tokenizer (the first present in both
# wins)
_TOKENIZER_FINGERPRINT_KEYS = ("identity", "fingerprint", "sha256")
# compared when no fingerprint is recorded: every one of these present in both must agree
_TOKENIZER_FIELDS = ("name", "spec", "vocab_size", "eod_id")
# provenance rows copied per step, so a merge of large datasets needs little memory
_PROVENANCE_CHUNK_ROWS = 1 << 20


@dataclass(frozen=True)
class MergeSource:
    prefix: str
    num_documents: int
    num_sequences: int
    num_tokens: int
    has_manifest: bool = False
    # why this source's provenance cannot be merged ("no .provenance.npy", ...); None if it can
    provenance_problem: str | None = None


@dataclass(frozen=True)
class MergeSummary:
    output_prefix: str
    dtype: np.dtype
    sources: tuple[MergeSource, ...]
    num_documents: int
    num_sequences: int
    num_tokens: int
    # the sources' common manifest "tokenizer" entry, if any had one
    tokenizer: dict[str, Any] | None
    manifest: Manifest | None = None  # what was written to `{output_prefix}.json`
    provenance_written: bool = False  # `{output_prefix}.provenance.npy` written

    @property
    def sources_without_provenance(self) -> tuple[MergeSource, ...]:
        return tuple(s for s in self.sources if s.provenance_problem is not None)


def _tokenizer_conflict(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """A description of how two manifest tokenizer entries differ, or None if they agree."""
    for key in _TOKENIZER_FINGERPRINT_KEYS:
        if key in a and key in b:
            return None if a[key] == b[key] else f"{key} {a[key]!r} vs {b[key]!r}"
    for key in _TOKENIZER_FIELDS:
        if key in a and key in b and a[key] != b[key]:
            return f"{key} {a[key]!r} vs {b[key]!r}"
    return None


def _open_provenance(
    prefix: str, manifest: Manifest | None, num_documents: int
) -> tuple[np.ndarray | None, str | None]:
    """A source's provenance (memory-mapped) if it can be merged, else None and the reason."""
    path = provenance_path(prefix)
    if manifest is None:
        return None, "no build manifest (.json)"
    inputs = manifest.inputs
    if inputs is None:
        return None, "its manifest lists no inputs"
    if not path.exists():
        return None, f"no {path.name}"
    try:
        prov = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        return None, f"{path.name} cannot be read ({e})"
    if prov.dtype.kind not in "iu" or prov.shape != (num_documents, 2):
        return None, (
            f"{path.name} holds a {prov.dtype.name} array of shape {prov.shape}, expected "
            f"({num_documents}, 2) integers: it does not belong to this .bin/.idx"
        )
    for start in range(0, num_documents, _PROVENANCE_CHUNK_ROWS):
        files = prov[start : start + _PROVENANCE_CHUNK_ROWS, 0]
        if files.size and (files.min() < 0 or files.max() >= len(inputs)):
            return None, (
                f"{path.name} names input file {int(files.max())} but the manifest lists "
                f"{len(inputs)} inputs"
            )
    return prov, None


def _write_provenance(out: np.ndarray, parts: Sequence[tuple[np.ndarray, int]]) -> None:
    """Concatenate provenance arrays into `out`, adding each part's file offset."""
    row = 0
    for prov, file_offset in parts:
        for start in range(0, len(prov), _PROVENANCE_CHUNK_ROWS):
            chunk = np.asarray(prov[start : start + _PROVENANCE_CHUNK_ROWS], dtype=np.int64)
            out[row : row + len(chunk), 0] = chunk[:, 0] + file_offset
            out[row : row + len(chunk), 1] = chunk[:, 1]
            row += len(chunk)
    assert row == len(out)


def _sum_counts(dicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sum nested count dicts key by key: numbers add, dicts recurse, lists concatenate."""
    out: dict[str, Any] = {}
    for d in dicts:
        for key, value in d.items():
            if isinstance(value, bool) or not isinstance(value, int | float | dict | list):
                continue
            if isinstance(value, dict):
                out[key] = _sum_counts([out.get(key, {}), value])
            elif isinstance(value, list):
                out[key] = [*out.get(key, []), *value]
            else:
                out[key] = out.get(key, 0) + value
    return dict(sorted(out.items()))


def _agreed(manifests: Sequence[Manifest | None], name: str) -> Any:
    """An entry every source's manifest has with the same value, else None."""
    values = [getattr(m, name) if m is not None else None for m in manifests]
    return (
        values[0]
        if values and values[0] is not None and values.count(values[0]) == len(values)
        else None
    )


def _merged_manifest(
    output_prefix: str,
    dtype: np.dtype,
    sources: Sequence[MergeSource],
    manifests: Sequence[Manifest | None],
    tokenizer: dict[str, Any] | None,
    provenance_name: str | None,
) -> Manifest:
    present = [m for m in manifests if m is not None]
    max_ids = [m.max_token_id for m in manifests if m is not None]
    every_max_id = present and len(present) == len(manifests) and None not in max_ids
    return Manifest(
        kind="merge",
        prefix=os.path.basename(output_prefix),
        dtype=dtype.name,
        documents=sum(s.num_documents for s in sources),
        sequences=sum(s.num_sequences for s in sources),
        tokens=sum(s.num_tokens for s in sources),
        max_token_id=max(max_ids) if every_max_id else None,
        # carried over when every source agrees
        level=_agreed(manifests, "level"),
        append_eod=_agreed(manifests, "append_eod"),
        json_key=_agreed(manifests, "json_key"),
        tokenizer=tokenizer,
        # sums over the sources that have manifests (see "sources" for which do)
        skipped_documents=_sum_counts([m.skipped_documents for m in present]),
        read=(
            _sum_counts([m.read for m in present])
            if present and all(m.read is not None for m in present)
            else None
        ),
        inputs=[i for m in present for i in (m.inputs or [])],
        merged_from=[s.prefix for s in sources],
        sources=[
            {
                "prefix": s.prefix,
                "documents": s.num_documents,
                "sequences": s.num_sequences,
                "tokens": s.num_tokens,
                "has_manifest": m is not None,
                "inputs": len(m.inputs) if m is not None and m.inputs is not None else 0,
                "provenance": s.provenance_problem is None,
            }
            for s, m in zip(sources, manifests, strict=True)
        ],
        provenance=provenance_name,
    )


def _check_output(prefixes: Sequence[str], output_prefix: str, overwrite: bool) -> list[Path]:
    """The output's sidecar paths, once the output is known to be writable."""
    if not prefixes:
        raise UsageError("nothing to merge: give at least one input dataset")
    out_abs = os.path.abspath(output_prefix)
    if any(os.path.abspath(p) == out_abs for p in prefixes):
        raise UsageError(f"output prefix {output_prefix} is also an input; choose another output")
    sidecars = [manifest_path(output_prefix), provenance_path(output_prefix)]
    outputs = [output_prefix + ".bin", output_prefix + ".idx", *map(str, sidecars)]
    existing = [p for p in outputs if os.path.exists(p)]
    if existing and not overwrite:
        raise ConfigError(
            f"{ConfigError.quote(' and '.join(existing))} already exist; pass {{overwrite}} to "
            "replace them",
            "overwrite",
        )
    return sidecars


def _common_tokenizer(
    prefixes: Sequence[str], manifests: Sequence[Manifest | None]
) -> dict[str, Any] | None:
    """The tokenizer entry the sources' manifests share (None if none has one); DataprepError
    when two differ."""
    tokenizer: dict[str, Any] | None = None
    tokenizer_from = None
    for p, manifest in zip(prefixes, manifests, strict=True):
        entry = manifest.tokenizer if manifest is not None else None
        if entry is None:
            continue
        if tokenizer is None:
            tokenizer, tokenizer_from = dict(entry), p
        elif (conflict := _tokenizer_conflict(tokenizer, entry)) is not None:
            raise DataprepError(
                f"cannot merge {tokenizer_from} with {p}: their build manifests name different "
                f"tokenizers ({conflict}); token ids from different tokenizers cannot be mixed"
            )
    return tokenizer


def _sources(
    readers: Sequence[IndexedDatasetReader], manifests: Sequence[Manifest | None]
) -> tuple[list[MergeSource], list[tuple[np.ndarray, int]]]:
    """Each source's counts and provenance problem, and the provenance arrays that can be merged
    with the file index offset of each (its inputs' place in the merged input list)."""
    sources = []
    provenance_parts: list[tuple[np.ndarray, int]] = []
    file_offset = 0
    for r, m in zip(readers, manifests, strict=True):
        prov, problem = _open_provenance(r.path_prefix, m, r.num_documents)
        if prov is not None:
            provenance_parts.append((prov, file_offset))
        if m is not None and m.inputs is not None:
            file_offset += len(m.inputs)
        sources.append(
            MergeSource(
                r.path_prefix,
                r.num_documents,
                len(r),
                r.num_tokens,
                has_manifest=m is not None,
                provenance_problem=problem,
            )
        )
    return sources, provenance_parts


def merge_datasets(
    prefixes: Sequence[str | os.PathLike],
    output_prefix: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> MergeSummary:
    """Concatenate datasets in the given order into `output_prefix.bin/.idx` plus a merged
    manifest `.json` and, if every source has provenance, a merged `.provenance.npy`."""
    prefixes = [os.fspath(p) for p in prefixes]
    output_prefix = os.fspath(output_prefix)
    sidecars = _check_output(prefixes, output_prefix, overwrite)
    readers = [IndexedDatasetReader(p) for p in prefixes]
    first = readers[0]
    for r in readers[1:]:
        if r.dtype != first.dtype:
            raise DataprepError(
                f"cannot merge {first.path_prefix} (dtype {first.dtype.name}) with {r.path_prefix} "
                f"(dtype {r.dtype.name}): all inputs must share a token dtype; rebuild one of them"
            )
    manifests = [read_manifest(p) for p in prefixes]
    tokenizer = _common_tokenizer(prefixes, manifests)
    sources, provenance_parts = _sources(readers, manifests)
    lacking = [s for s in sources if s.provenance_problem is not None]
    for s in lacking:
        logger.warning(
            "%s has no usable provenance (%s): %s gets none",
            s.prefix,
            s.provenance_problem,
            provenance_path(output_prefix).name,
        )
    total_documents = sum(s.num_documents for s in sources)
    dtype = first.dtype
    del readers, first  # release the memory maps before copying

    with contextlib.ExitStack() as provenance:  # renamed into place after the .bin/.idx
        out = None
        if not lacking:
            shape = (total_documents, 2)
            out = provenance.enter_context(
                npy_memmap_atomic(provenance_path(output_prefix), dtype=np.int64, shape=shape)
            )
        with IndexedDatasetWriter(output_prefix, dtype=dtype) as writer:
            for p in prefixes:
                logger.info("appending %s", p)
                writer.add_index(p)
            if out is not None:
                _write_provenance(out, provenance_parts)
            # the old sidecars must not outlive the .bin/.idx they describe (renamed on exit)
            for path in sidecars:
                path.unlink(missing_ok=True)
        del provenance_parts, out  # release the memory maps
    manifest = _merged_manifest(
        output_prefix,
        writer.dtype,
        sources,
        manifests,
        tokenizer,
        None if lacking else provenance_path(output_prefix).name,
    )
    write_manifest(output_prefix, manifest)
    summary = MergeSummary(
        output_prefix=output_prefix,
        dtype=writer.dtype,
        sources=tuple(sources),
        num_documents=total_documents,
        num_sequences=sum(s.num_sequences for s in sources),
        num_tokens=sum(s.num_tokens for s in sources),
        tokenizer=tokenizer,
        manifest=manifest,
        provenance_written=not lacking,
    )
    logger.info(
        "merged %d datasets into %s: %d documents, %d tokens",
        len(sources),
        output_prefix,
        summary.num_documents,
        summary.num_tokens,
    )
    return summary
