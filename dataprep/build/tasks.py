"""The typed protocol between the build's modules: what a task carries to a worker (`TaskOptions`,
`BlockTask`, `TextTask`), what comes back (`Encoded`, one `EncodedKey` per JSON key), and what a
Ray task leaves for the driver (`PartResult`, saved as the partial's `part.json`).

Every type pickles cheaply: plain fields, NumPy arrays and small dataclasses; the only per-task
payload is the block's bytes (or the texts) one way and the token arrays the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dataprep.build.config import KeyStats
from dataprep.errors import DataprepError
from dataprep.readers import CollectedRecordErrors, JsonLinesParser, ReadStats


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """What every task of one build shares."""

    split_sentences: bool  # one sequence per sentence
    keep_newlines: bool  # with split_sentences: keep the newline that ends a sentence
    append_eod: bool  # append the tokenizer's end-of-document id to each document
    dtype: str  # NumPy dtype string of the output tokens ("<u2"): ids that fit are cast to it
    dedup: str | None = None  # None, "exact" or "minhash": also compute documents' dedup keys
    on_error: str = "raise"  # bad records in a block: "raise" a ReadError or "skip" (collect)


@dataclass(frozen=True, slots=True)
class BlockTask:
    """A block of whole JSON Lines (`readers.iter_line_blocks`) to parse and tokenize."""

    options: TaskOptions
    parser: JsonLinesParser
    first_line: int  # number of the block's first line in its file
    data: bytes


@dataclass(frozen=True, slots=True)
class TextTask:
    """Texts already read in the main process (Parquet), per JSON key, to tokenize."""

    options: TaskOptions
    texts: Mapping[str, list[str]]  # key -> non-empty texts
    lines: Mapping[str, np.ndarray]  # key -> int64 input line of each text
    empty_text: Mapping[str, int]  # key -> records whose text was empty (not tokenized)


Task = BlockTask | TextTask


@dataclass(frozen=True, slots=True)
class EncodedKey:
    """The tokenized documents of one task for one JSON key (only those written)."""

    tokens: np.ndarray  # flat ids of every written document, in order
    doc_lengths: np.ndarray  # int64, tokens per document
    seq_lengths: np.ndarray  # int64, tokens per sequence (one per document unless split)
    seqs_per_doc: np.ndarray  # int64, sequences per document
    lines: np.ndarray  # int64, input line of each document
    max_id: int  # largest id in `tokens`, -1 when empty
    text_bytes: int  # UTF-8 bytes of the texts tokenized (written or not), for MB/s
    empty: int = 0  # documents that tokenized to nothing and are not written
    dedup: Mapping[str, np.ndarray] | None = None  # the documents' keys (dataprep.dedup)

    @property
    def documents(self) -> int:
        return int(self.lines.size)

    def select(self, mask: np.ndarray) -> EncodedKey:
        """Only the documents where `mask` is set (the de-duplicator's verdict)."""
        tokens = self.tokens[np.repeat(mask, self.doc_lengths)]
        return dataclasses.replace(
            self,
            tokens=tokens,
            doc_lengths=self.doc_lengths[mask],
            seq_lengths=self.seq_lengths[np.repeat(mask, self.seqs_per_doc)],
            seqs_per_doc=self.seqs_per_doc[mask],
            lines=self.lines[mask],
            max_id=int(tokens.max()) if tokens.size else -1,
            dedup=None,
        )


@dataclass(frozen=True, slots=True)
class Encoded:
    """A task's result: per key the encoded documents; a block task also brings the block's read
    counters and bad records, for the main process to add to its file's."""

    keys: Mapping[str, EncodedKey]
    empty_text: Mapping[str, int]  # key -> records whose text was empty
    read: ReadStats | None = None  # BlockTask only
    bad: CollectedRecordErrors | None = None  # BlockTask only


@dataclass(frozen=True, slots=True)
class PartResult:
    """What a Ray task wrote into `{work}/parts/<part>/` (saved there as `part.json`)."""

    spec: Mapping[str, Any]  # `Part.spec()` of the part
    file_stat: tuple[int, int]  # (size, mtime_ns) of the input when it was read
    stats: Mapping[str, KeyStats]  # key -> counts of the partial dataset
    read: ReadStats
    documents: int  # documents written (the largest count over the keys)
    text_bytes: int
    sha256: str | None  # the input's, when the part is the whole file
    warnings: tuple[str, ...] = ()  # the first warnings the task logged, for the driver to log

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": dict(self.spec),
            "file_stat": list(self.file_stat),
            "stats": {key: dataclasses.asdict(s) for key, s in self.stats.items()},
            "read": self.read.to_dict(),
            "documents": self.documents,
            "text_bytes": self.text_bytes,
            "sha256": self.sha256,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PartResult:
        """The inverse of `to_json`."""
        loaded = cls(**data)  # JSON types first, then the nested ones
        return dataclasses.replace(
            loaded,
            file_stat=tuple(loaded.file_stat),
            stats={key: KeyStats(**s) for key, s in loaded.stats.items()},
            read=ReadStats.from_dict(loaded.read),
            warnings=tuple(loaded.warnings),
        )


@dataclass(frozen=True, slots=True)
class PartFailed:
    """A Ray task's bad input: the error a local build raises, raised again by the driver."""

    error: DataprepError
