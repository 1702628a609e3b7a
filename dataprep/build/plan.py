"""The build plan: the input files, described (name, path, size, mtime) for the manifest and for
checking on --resume that finished inputs did not change, and the parts of work an executor runs:
one per input file, or, for a large plain (uncompressed) JSON Lines file, one per byte range of
whole lines (`readers.jsonl.LineRange`). Compressed files and Parquet are one part each: a zstd or
gzip stream cannot be entered in the middle."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Part:
    """One unit of work: input file `file_index`, whole or the lines starting in [start, end)."""

    file_index: int
    path: str
    size: int  # input bytes this part covers (for progress)
    start: int = 0
    end: int | None = None  # None: to the end of the file
    last: bool = True  # the file's last part: it finishes the file (counts, empty-file warning)

    @property
    def name(self) -> str:
        return f"{self.file_index:06d}-{self.start:015d}"

    @property
    def whole_file(self) -> bool:
        return self.start == 0 and self.end is None

    def spec(self) -> dict[str, Any]:
        return {
            "file_index": self.file_index,
            "path": self.path,
            "start": self.start,
            "end": self.end,
        }


@dataclass
class PartDone:
    """What an executor reports once a part's documents are in the sink."""

    part: Part
    read: Any  # ReadStats of the part
    documents: int  # documents written (the largest count over the keys)
    sha256: str | None = None  # the file's, when the executor computed it
    warnings: list[str] = field(default_factory=list)


def plan_parts(
    files: Sequence[Path], sizes: Sequence[int], first: int, *, split_bytes: int = 0, config=None
) -> list[Part]:
    """The parts of files[first:]; with `split_bytes` > 0, plain JSON Lines files larger than that
    are cut into ceil(size / split_bytes) byte ranges."""
    parts = []
    for i in range(first, len(files)):
        path, size = files[i], sizes[i]
        count = -(-size // split_bytes) if split_bytes > 0 and size > split_bytes else 1
        if count > 1 and not _splittable(path, config):
            count = 1
        bounds = [size * k // count for k in range(count)] + [None]
        for k in range(count):
            end = bounds[k + 1]
            parts.append(
                Part(
                    i,
                    os.fspath(path),
                    size=(end if end is not None else size) - bounds[k],
                    start=bounds[k],
                    end=end,
                    last=k == count - 1,
                )
            )
    return parts


def _splittable(path: Path, config) -> bool:
    """A plain JSON Lines file that the build reads (not ruled out by --languages)."""
    from dataprep.readers import ReadStats, compression, resolve_format

    head = compression.read_head(path)
    try:
        if compression.compression_of(path, head) != "none":
            return False
    except Exception:  # a bad file: one part, whose read reports it
        return False
    languages = config.languages if config is not None else None
    fmt = config.fmt if config is not None else None
    resolved = resolve_format(path, fmt, languages, ReadStats())
    return resolved is not None and resolved[0] != "parquet"


def describe_inputs(files: Sequence[Path]) -> list[dict[str, Any]]:
    out = []
    for p in files:
        st = p.stat()
        out.append(
            {
                "name": p.name,
                "path": str(p.resolve()),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
            }
        )
    return out


def existing_outputs(prefixes: Sequence[str]) -> list[str]:
    found = []
    for prefix in prefixes:
        for suffix in (".bin", ".idx"):
            if os.path.exists(prefix + suffix):
                found.append(prefix + suffix)
    return found
