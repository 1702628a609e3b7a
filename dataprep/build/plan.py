"""The build plan (`make_plan`): the input files, described (name, path, size, mtime) for the
manifest and for checking on resume that finished inputs did not change, the tokenizer and the
output dtype; and the parts of work an executor runs (`plan_parts`):
one per input file, or, for a large plain (uncompressed) JSON Lines file, one per byte range of
whole lines (`readers.iter_line_blocks`). Compressed files and Parquet are one part each: a zstd or
gzip stream cannot be entered in the middle."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.build.config import BuildConfig, literal
from dataprep.errors import ConfigError


@dataclass(frozen=True, eq=False)
class BuildPlan:
    """What a build reads and writes, decided before anything is written."""

    files: list[Path]  # the input files, in order
    inputs: list[InputFile]  # `describe_inputs(files)`
    tokenizer: Any  # the loaded Tokenizer
    dtype: np.dtype  # token dtype of the outputs (the narrowest that holds the vocabulary)
    prefixes: dict[str, str]  # JSON key -> output dataset prefix
    fingerprint: str  # `BuildConfig.fingerprint`: what a resumed build must share
    filters: dict[str, frozenset[str]] | None  # normalized `BuildConfig.filters`

    @property
    def sizes(self) -> list[int]:
        return [i.size for i in self.inputs]


def make_plan(config: BuildConfig) -> BuildPlan:
    """Expand the inputs, load the tokenizer and check that it fits the configuration."""
    from dataprep.indexed.format import optimal_dtype
    from dataprep.readers import expand_inputs, normalize_filters
    from dataprep.tokenizers import load_tokenizer

    files = expand_inputs(list(config.inputs))
    tokenizer = load_tokenizer(config.tokenizer)
    if config.append_eod and tokenizer.eod_id is None:
        raise ConfigError(
            f"{{append_eod}}: tokenizer {literal(repr(tokenizer.spec))} has no end-of-document "
            "token",
            "append_eod",
        )
    inputs = describe_inputs(files)
    return BuildPlan(
        files=files,
        inputs=inputs,
        tokenizer=tokenizer,
        dtype=np.dtype(optimal_dtype(tokenizer.vocab_size)),
        prefixes=config.output_prefixes(),
        fingerprint=config.fingerprint([i.path for i in inputs], tokenizer.identity),
        filters=normalize_filters(dict(config.filters)),
    )


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
    files: Sequence[Path],
    sizes: Sequence[int],
    first: int,
    *,
    split_bytes: int = 0,
    config: BuildConfig | None = None,
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


def _splittable(path: Path, config: BuildConfig | None) -> bool:
    """A plain JSON Lines file that the build reads (not ruled out by --languages)."""
    from dataprep.readers import ReadStats, resolve_format, sniff

    head = sniff.read_head(path)
    try:
        if sniff.compression_of(path, head) != "none":
            return False
    except Exception:  # a bad file: one part, whose read reports it
        return False
    languages = config.languages if config is not None else None
    fmt = config.fmt if config is not None else None
    resolved = resolve_format(path, fmt, languages, ReadStats())
    return resolved is not None and resolved[0] != "parquet"


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file as the manifest and the resume state describe it."""

    name: str
    path: str  # absolute
    size: int  # bytes
    mtime_ns: int  # compared on resume, not written to the manifest
    documents: int | None = None  # records read, once the file is finished
    sha256: str | None = None  # once the file is finished

    @classmethod
    def of(cls, path: Path) -> InputFile:
        st = path.stat()
        return cls(path.name, str(path.resolve()), st.st_size, st.st_mtime_ns)

    def to_json(self, *, mtime: bool = True) -> dict[str, Any]:
        """The JSON entry (the manifest's has no mtime, and an unfinished file no counts)."""
        data: dict[str, Any] = {"name": self.name, "path": self.path, "size": self.size}
        if mtime:
            data.update(mtime_ns=self.mtime_ns)
        if self.documents is not None:
            data.update(documents=self.documents, sha256=self.sha256)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputFile:
        return cls(**data)


def describe_inputs(files: Sequence[Path]) -> list[InputFile]:
    return [InputFile.of(p) for p in files]


def existing_outputs(prefixes: Sequence[str]) -> list[str]:
    found = []
    for prefix in prefixes:
        for suffix in (".bin", ".idx"):
            if os.path.exists(prefix + suffix):
                found.append(prefix + suffix)
    return found
