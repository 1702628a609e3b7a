"""The build manifest: a JSON sidecar `{prefix}.json` next to every `{prefix}.bin/.idx` we write.

It records what a dataset is made of (inputs with sizes and sha256, tokenizer identity, counts,
skips by reason, the largest token id) so later stages can find the tokenizer without being told,
and a person can see where the data came from. Per-document provenance lives beside it in
`{prefix}.provenance.npy`; with --dedup, the manifest's "dedup" entry counts removed documents by
kind ("exact", "near") and `{prefix}.duplicates.npy` lists every removed one with the
provenance of both copies.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError

MANIFEST_SUFFIX = ".json"
PROVENANCE_SUFFIX = ".provenance.npy"
# --dedup: int64 rows (duplicate's input index, line, original's input index, line, kind 0 exact /
# 1 near), in input order of the duplicates
DUPLICATES_SUFFIX = ".duplicates.npy"


def manifest_path(prefix: str | os.PathLike) -> Path:
    return Path(os.fspath(prefix) + MANIFEST_SUFFIX)


def provenance_path(prefix: str | os.PathLike) -> Path:
    return Path(os.fspath(prefix) + PROVENANCE_SUFFIX)


def duplicates_path(prefix: str | os.PathLike) -> Path:
    return Path(os.fspath(prefix) + DUPLICATES_SUFFIX)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _version() -> str:
    from dataprep import __version__

    return __version__


@dataclass(frozen=True)
class Manifest:
    """The content of `{prefix}.json`, written by `build-index` (kind "build") and `merge` (kind
    "merge"). Optional entries that are None are left out of the file, except `provenance`
    (null: no provenance file) and, in a build's manifest, `languages` (null: every language)."""

    prefix: str = ""  # the dataset's file name without .bin/.idx
    dtype: str = ""  # token dtype name, e.g. "uint16"
    documents: int = 0
    sequences: int = 0
    tokens: int = 0
    skipped_documents: Mapping[str, int] = field(default_factory=dict)  # reason -> documents
    inputs: list[dict[str, Any]] | None = None  # input files: name, path, size, sha256, documents
    provenance: str | None = None  # name of `{prefix}.provenance.npy`; None: none written
    kind: str = "build"  # "build" or "merge"
    json_key: str | None = None  # the record key tokenized
    level: str | None = None  # "document" or "sentence"
    append_eod: bool | None = None
    max_token_id: int | None = None
    read: Mapping[str, Any] | None = None  # ReadStats.to_dict() of the inputs
    tokenizer: Mapping[str, Any] | None = None  # Tokenizer.describe(): spec, identity, ...
    filters: Mapping[str, list[str]] | None = None  # build: --filter values by metadata key
    languages: list[str] | None = None  # build: mC4 languages kept; None: all
    dedup: Mapping[str, Any] | None = None  # build with dedup: Deduplicator.describe()
    merged_from: list[str] | None = None  # merge: the source prefixes, in order
    sources: list[dict[str, Any]] | None = None  # merge: per source counts and what it had
    dataprep_version: str = field(default_factory=_version)
    created: str = field(default_factory=_now)  # UTC, ISO 8601

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"dataprep_version": self.dataprep_version, "created": self.created}
        if self.kind != "build":  # build manifests have no "kind" entry
            data["kind"] = self.kind
        data["prefix"] = self.prefix
        optional = {
            "json_key": self.json_key,
            "level": self.level,
            "dtype": self.dtype,
            "append_eod": self.append_eod,
            "documents": self.documents,
            "sequences": self.sequences,
            "tokens": self.tokens,
            "max_token_id": self.max_token_id,
            "skipped_documents": dict(sorted(self.skipped_documents.items())),
            "read": self.read,
            "inputs": self.inputs,
            "tokenizer": self.tokenizer,
            "filters": self.filters,
        }
        data.update((k, v) for k, v in optional.items() if v is not None)
        if self.kind == "build":
            data["languages"] = self.languages
        for key, value in (("merged_from", self.merged_from), ("sources", self.sources)):
            if value is not None:
                data[key] = value
        data["provenance"] = self.provenance
        if self.dedup is not None:
            data["dedup"] = self.dedup
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """A manifest from a parsed `{prefix}.json`; entries of the wrong type (a manifest
        written by hand or by another tool) count as absent."""

        def get(key: str, *types: type) -> Any:
            value = data.get(key)
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                return None
            return value

        counts = {k: get(k, int) or 0 for k in ("documents", "sequences", "tokens")}
        return cls(
            prefix=get("prefix", str) or "",
            dtype=get("dtype", str) or "",
            skipped_documents=get("skipped_documents", dict) or {},
            inputs=get("inputs", list),
            provenance=get("provenance", str),
            kind=get("kind", str) or "build",
            json_key=get("json_key", str),
            level=get("level", str),
            append_eod=get("append_eod", bool),
            max_token_id=get("max_token_id", int),
            read=get("read", dict),
            tokenizer=get("tokenizer", dict),
            filters=get("filters", dict),
            languages=get("languages", list),
            dedup=get("dedup", dict),
            merged_from=get("merged_from", list),
            sources=get("sources", list),
            dataprep_version=get("dataprep_version", str) or "",
            created=get("created", str) or "",
            **counts,
        )


def write_manifest(prefix: str | os.PathLike, manifest: Manifest) -> None:
    """Write `{prefix}.json` atomically."""
    from dataprep.fileio import write_json_atomic

    write_json_atomic(manifest_path(prefix), manifest.to_dict())


def read_manifest(prefix: str | os.PathLike) -> Manifest | None:
    """The manifest of a dataset prefix as a `Manifest`, or None when it has none (or the file
    holds no JSON object)."""
    data = load_manifest(prefix)
    return Manifest.from_dict(data) if isinstance(data, dict) else None


def load_manifest(prefix: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a dataset prefix, or None when it has none (e.g. made by Megatron)."""
    path = manifest_path(prefix)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataprepError(f"{path}: cannot read the build manifest: {e}") from e
