"""What the readers share: read statistics, the kinds of bad input, and bad-record handling.

Every record a reader does not yield is counted under a reason (`ReadStats.skipped`), and every file
it does not read to the end is listed under one (`ReadStats.files_skipped`), so nothing disappears
uncounted; the builder copies `ReadStats.to_dict()` into the build manifest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from dataprep.errors import ReadError

log = logging.getLogger(__name__)

# Kinds of a bad record (ReadError.kind, and keys of ReadStats.skipped with on_error="skip").
RECORD_ERROR_KINDS = frozenset(
    {
        "not_json",
        "not_object",
        "missing_key",
        "null_text",
        "non_string_text",
        "invalid_utf8",
        "lone_surrogate",
        "truncated_last_line",
    }
)
# Kinds of a bad file (keys of ReadStats.files_skipped with on_bad_file="skip").
FILE_ERROR_KINDS = frozenset(
    {
        "unreadable",  # cannot be opened
        "truncated",  # compressed stream or Parquet file cut short
        "trailing_garbage",  # bytes after the last complete zstd frame / gzip member
        "corrupt",  # the decompressor or Parquet reader rejected the data
        "not_zstd",  # named .zst, is something else
        "not_gzip",  # named .gz, is something else
        "not_parquet",  # named .parquet, is something else
        "html",  # an HTML page saved instead of the data
        "lfs_pointer",  # a git-LFS pointer instead of the data
        "unsupported_compression",  # zip, bzip2, xz, lz4
        "wrong_format",  # e.g. a Parquet file read as JSON Lines
    }
)
# Reasons a record is skipped that are not errors (never raised).
FILTERED = "filtered"  # did not match `filters`
BLANK_LINE = "blank_line"  # an empty or whitespace-only line in JSON Lines
LANGUAGE = "language"  # files_skipped key: file language not among `languages`

MAX_LOGGED_PER_FILE = 5  # skipped bad records logged one by one per file; the rest only counted


@dataclass
class ReadStats:
    """Counters of one or more `iter_documents` calls; `merge` adds those of another process."""

    documents: int = 0  # documents yielded
    bytes: int = 0  # uncompressed bytes of every record read (yielded, filtered or skipped)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> records not yielded
    files_skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> file paths
    empty_files: list[str] = field(default_factory=list)  # files with no content at all
    files: int = 0  # files read to the end

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    def skip_file(self, reason: str, path: str | os.PathLike) -> None:
        self.files_skipped.setdefault(reason, []).append(os.fspath(path))

    def merge(self, other: ReadStats) -> ReadStats:
        """Add `other`'s counts to these; returns self."""
        self.documents += other.documents
        self.bytes += other.bytes
        self.files += other.files
        for reason, count in other.skipped.items():
            self.skip(reason, count)
        for reason, paths in other.files_skipped.items():
            self.files_skipped.setdefault(reason, []).extend(paths)
        self.empty_files.extend(other.empty_files)
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReadStats:
        """The inverse of `to_dict` (e.g. to resume a build from its saved state)."""
        return cls(
            documents=int(data.get("documents", 0)),
            bytes=int(data.get("bytes", 0)),
            skipped=dict(data.get("skipped", {})),
            files_skipped={k: list(v) for k, v in data.get("files_skipped", {}).items()},
            empty_files=list(data.get("empty_files", [])),
            files=int(data.get("files", 0)),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy with sorted keys."""
        data = asdict(self)
        data["skipped"] = dict(sorted(self.skipped.items()))
        data["files_skipped"] = {k: list(v) for k, v in sorted(self.files_skipped.items())}
        return data


class RecordErrors:
    """Applies `on_error` to bad records of one file: raise ReadError, or count and log a few."""

    def __init__(self, path: str | os.PathLike, on_error: str, stats: ReadStats) -> None:
        self.path = path
        self.raise_errors = on_error == "raise"
        self.stats = stats
        self.count = 0

    def __call__(self, kind: str, reason: str, line: int) -> None:
        if self.raise_errors:
            raise ReadError(self.path, reason, line=line, kind=kind)
        self.stats.skip(kind)
        self.count += 1
        if self.count <= MAX_LOGGED_PER_FILE:
            log.warning("skipped %s", ReadError(self.path, reason, line=line, kind=kind))

    def summarize(self) -> None:
        if self.count > MAX_LOGGED_PER_FILE:
            log.warning("skipped %d bad records in %s in all", self.count, os.fspath(self.path))


class CollectedRecordErrors:
    """RecordErrors for a worker process: raises like RecordErrors, or keeps the first few bad
    records and counts the rest, for the main process to `replay` into the file's RecordErrors
    (which logs and counts them as if it had read them itself). Picklable."""

    def __init__(self, path: str | os.PathLike, on_error: str) -> None:
        self.path = os.fspath(path)
        self.raise_errors = on_error == "raise"
        self.events: list[tuple[str, str, int]] = []
        self.unlogged: dict[str, int] = {}

    def __call__(self, kind: str, reason: str, line: int) -> None:
        if self.raise_errors:
            raise ReadError(self.path, reason, line=line, kind=kind)
        if len(self.events) < MAX_LOGGED_PER_FILE:
            self.events.append((kind, reason, line))
        else:
            self.unlogged[kind] = self.unlogged.get(kind, 0) + 1

    def replay(self, into: RecordErrors) -> None:
        for kind, reason, line in self.events:
            into(kind, reason, line)
        for kind, count in self.unlogged.items():
            into.count += count
            into.stats.skip(kind, count)


def excerpt(text: str, position: int = 0, width: int = 60) -> str:
    """`repr` of a slice of `text` around `position`, with "…" where it was cut."""
    start = max(0, position - width // 2) if position > width else 0
    piece = text[start : start + width]
    return ("…" if start else "") + repr(piece) + ("…" if start + width < len(text) else "")


def type_name(value: object) -> str:
    """JSON's name for a Python value parsed from JSON."""
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
