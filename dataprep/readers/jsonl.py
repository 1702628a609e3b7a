"""JSON Lines records -> Documents: one JSON object per line, plain, zstd or gzip.

Each line is read as bytes and must be strict UTF-8 and one JSON object holding every requested key
with a string value (as Megatron-LM's `tools/preprocess_data.py --json-keys` reads them). Anything
else is a bad record of a named kind (`base.RECORD_ERROR_KINDS`): raised as ReadError with file and
line, or counted with on_error="skip". orjson (a required dependency, about 2x faster than `json`)
parses first; when it rejects a line, the stdlib parser decides, so the accepted records and the
error kinds are exactly the stdlib's (the parsing and checks of one record are `records.py`).
"""

from __future__ import annotations

import codecs
import io
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataprep.documents import Document
from dataprep.errors import ReadError
from dataprep.readers import compression
from dataprep.readers.base import (
    BLANK_LINE,
    FILTERED,
    CollectedRecordErrors,
    ReadStats,
    RecordErrors,
    log,
)
from dataprep.readers.records import BadRecord, check_object, matches, parse_line, record_fields

MetadataOf = Callable[[dict], dict[str, Any]]


def other_fields(record: dict, json_keys: Sequence[str]) -> dict[str, Any]:
    """Metadata of a plain JSON Lines record: every top-level field that is not a requested key."""
    return {k: v for k, v in record.items() if k not in json_keys}


@dataclass(frozen=True, slots=True)
class OtherFields:
    """The `metadata_of` of plain JSON Lines (`other_fields`), picklable for worker processes."""

    json_keys: tuple[str, ...]

    def __call__(self, record: dict) -> dict[str, Any]:
        return other_fields(record, self.json_keys)


BLOCK_BYTES = 1 << 19  # decompressed bytes per block of whole lines (a longer line is one block)


def line_blocks(
    reader: io.BufferedIOBase, block_bytes: int = BLOCK_BYTES, *, first_line: int = 1
) -> Iterator[tuple[int, bytes]]:
    """(number of the first line, bytes) blocks of whole `\n`-terminated lines, in file order.

    Only the file's last line may lack its newline. A line longer than `block_bytes` is a block of
    its own (memory then grows with that line, as it must to parse it). Lines are counted here, so
    a block can be parsed anywhere, e.g. in a worker process, and still name its lines.
    `first_line` is the number of the reader's first line (a byte range of a file starts later).
    """
    line = first_line
    pieces: list[bytes] = []
    size = 0
    newline = False  # some piece holds a newline, so a block can be cut
    try:
        while True:
            data = reader.read1(block_bytes)
            if not data:
                break
            pieces.append(data)
            size += len(data)
            newline = newline or b"\n" in data
            if size < block_bytes or not newline:  # a long line is joined once, when it ends
                continue
            data = b"".join(pieces)
            cut = data.rfind(b"\n") + 1
            block, rest = data[:cut], data[cut:]
            pieces, size, newline = ([rest], len(rest), False) if rest else ([], 0, False)
            yield line, block
            line += block.count(b"\n")
    except ReadError:
        # the stream broke (truncated, corrupt): the whole lines before the break still count
        data = b"".join(pieces)
        cut = data.rfind(b"\n") + 1
        if cut:
            yield line, data[:cut]
        raise
    if pieces:
        yield line, b"".join(pieces)


@dataclass(frozen=True)
class JsonLinesParser:
    """Turns blocks of JSON Lines of one file into Documents; picklable (with a picklable
    `metadata_of`: a module-level function or a dataclass), so workers can run it.

    `metadata_of(record)` gives a Document's metadata; None: every field that is not a requested
    key (`OtherFields`). The formats' own are in `pile.py` and `mc4.py`.
    """

    path: str
    json_keys: tuple[str, ...] = ("text",)
    metadata_of: MetadataOf | None = None
    filters: Mapping[str, Collection[str]] | None = None

    def documents(
        self,
        first_line: int,
        block: bytes,
        *,
        stats: ReadStats,
        bad: RecordErrors | CollectedRecordErrors,
        start_line: int = 0,
    ) -> Iterator[Document]:
        """The Documents of one block (from `line_blocks`); bad records go to `bad`, skips and
        bytes to `stats`."""
        json_keys, filters = self.json_keys, self.filters
        metadata_of = self.metadata_of or OtherFields(json_keys)
        name = Path(self.path).name
        source = self.path
        lines = block.split(b"\n")
        ends_with_newline = not lines[-1]
        if ends_with_newline:
            lines.pop()
        last = len(lines) - 1
        line = first_line - 1
        for i, raw in enumerate(lines):
            line += 1
            if line <= start_line:
                continue
            newline = i < last or ends_with_newline
            stats.bytes += len(raw) + newline
            if line == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[3:]
            try:
                record = check_object(parse_line(raw, line), json_keys, raw)
                metadata = metadata_of(record)
                if filters and not matches(filters, metadata, record):
                    stats.skip(FILTERED)
                    continue
                fields = record_fields(record, json_keys)
            except BadRecord as e:
                if not raw.strip():
                    stats.skip(BLANK_LINE)
                elif not newline and e.kind in ("not_json", "invalid_utf8"):
                    reason = (
                        "the last line has no newline and is not a valid record, so the file was "
                        f"probably cut short ({e.reason})"
                    )
                    bad("truncated_last_line", reason, line)
                else:
                    bad(e.kind, e.reason, line)
                continue
            stats.documents += 1
            yield Document(
                text=fields[json_keys[0]],
                id=f"{name}:{line}",
                metadata=metadata,
                fields=fields,
                source=source,
                line=line,
            )


def iter_json_lines(
    path: str | os.PathLike,
    *,
    json_keys: Sequence[str] = ("text",),
    metadata_of: MetadataOf | None = None,
    filters: Mapping[str, Collection[str]] | None = None,
    on_error: str = "raise",
    stats: ReadStats | None = None,
    start_line: int = 0,
) -> Iterator[Document]:
    """Documents of a JSON Lines file (zstd, gzip or plain), in line order.

    `metadata_of(record)` gives a Document's metadata (default: the fields that are not
    `json_keys`). Records not matching `filters` are counted as skipped["filtered"]; blank lines as
    skipped["blank_line"]; with `start_line` the first `start_line` lines are passed over uncounted.
    """
    stats = stats if stats is not None else ReadStats()
    parser = JsonLinesParser(os.fspath(path), tuple(json_keys), metadata_of, filters)
    bad = RecordErrors(path, on_error, stats)
    empty = True
    with compression.open_decompressed(path) as reader:
        for first_line, block in line_blocks(reader):
            empty = False
            yield from parser.documents(
                first_line,
                block,
                stats=stats,
                bad=bad,
                start_line=start_line,
            )
    finish_file(path, stats, bad, empty=empty)


def finish_file(
    path: str | os.PathLike, stats: ReadStats, bad: RecordErrors, *, empty: bool
) -> None:
    """End-of-file bookkeeping: the skipped-records summary, the empty-file warning, the count."""
    bad.summarize()
    if empty:
        log.warning("%s is empty: no records", os.fspath(path))
        stats.empty_files.append(os.fspath(path))
    stats.files += 1


class LineRange(io.RawIOBase):
    """The lines of a plain (uncompressed) file that start in the byte range [start, end): the
    unit of work when one large file is cut into several tasks. `first_line` is the number of the
    range's first line (newlines before it are counted, so provenance and errors name the same
    lines as a whole-file read). Every byte of the file belongs to exactly one range of a cut."""

    def __init__(self, path: str | os.PathLike, start: int, end: int | None) -> None:
        super().__init__()
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.first_line, self._pos = self._line_start(start)
        self._end = self._line_start(end)[1] if end is not None else None
        self._f.seek(self._pos)

    def _line_start(self, offset: int) -> tuple[int, int]:
        """(line number, byte offset) of the first line starting at or after `offset`."""
        if offset <= 0:
            return 1, 0
        f = self._f
        f.seek(offset - 1)
        skipped = 0
        while True:
            piece = f.read(1 << 16)
            cut = piece.find(b"\n")
            if cut >= 0 or not piece:
                start = offset - 1 + skipped + (cut + 1 if cut >= 0 else len(piece))
                break
            skipped += len(piece)
        f.seek(0)
        newlines, done = 0, 0
        while done < start:
            piece = f.read(min(1 << 20, start - done))
            if not piece:
                break
            newlines += piece.count(b"\n")
            done += len(piece)
        return newlines + 1, start

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def read1(self, size: int = -1) -> bytes:
        left = (1 << 62) if self._end is None else self._end - self._pos
        data = self._f.read(max(0, min(size if size >= 0 else left, left)))
        self._pos += len(data)
        return data

    def read(self, size: int = -1) -> bytes:
        return self.read1(size)

    def close(self) -> None:
        self._f.close()
        super().close()


def first_record(path: str | os.PathLike, *, max_bytes: int = 1 << 24) -> Any:
    """The parsed first non-blank line of a file, or None if there is none or it is not JSON."""
    try:
        with compression.open_decompressed(path) as reader:
            for _ in range(100):
                raw = reader.readline(max_bytes)
                if not raw:
                    return None
                if raw.strip():
                    return parse_line(raw.removeprefix(codecs.BOM_UTF8), 1)
    except (ReadError, BadRecord, OSError):
        return None
    return None
