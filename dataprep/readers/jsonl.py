"""JSON Lines records -> Documents: one JSON object per line, plain, zstd or gzip.

Each line is read as bytes and must be strict UTF-8 and one JSON object holding every requested key
with a string value (as Megatron-LM's `tools/preprocess_data.py --json-keys` reads them). Anything
else is a bad record of a named kind (`base.RECORD_ERROR_KINDS`): raised as ReadError with file and
line, or counted with on_error="skip". orjson (a required dependency, about 2x faster than `json`)
parses first; when it rejects a line, the stdlib parser decides, so the accepted records and the
error kinds are exactly the stdlib's.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dataprep.documents import Document
from dataprep.errors import ReadError
from dataprep.readers import compression
from dataprep.readers.base import (
    BLANK_LINE,
    FILTERED,
    CollectedRecordErrors,
    ReadStats,
    RecordErrors,
    excerpt,
    log,
    type_name,
)

_MISSING = object()
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # \ud800-\udfff: half of a UTF-16 pair
MetadataOf = Callable[[dict], dict[str, Any]]


class BadRecord(Exception):
    """A record that cannot become a Document; `kind` is one of base.RECORD_ERROR_KINDS."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def other_fields(record: dict, json_keys: Sequence[str]) -> dict[str, Any]:
    """Metadata of a plain JSON Lines record: every top-level field that is not a requested key."""
    return {k: v for k, v in record.items() if k not in json_keys}


@dataclass(frozen=True, slots=True)
class OtherFields:
    """The `metadata_of` of plain JSON Lines (`other_fields`), picklable for worker processes."""

    json_keys: tuple[str, ...]

    def __call__(self, record: dict) -> dict[str, Any]:
        return other_fields(record, self.json_keys)


def _first_line_hint(text: str) -> str:
    start = text.lstrip("\ufeff \t").lower()
    if start.startswith(("<!doctype html", "<html")):
        return " (the content is an HTML page, not JSON Lines: download the file again)"
    if start.startswith("version https://git-lfs"):
        return " (the content is a git-LFS pointer: run `git lfs pull`)"
    if start.startswith("["):
        return (
            " (the file looks like one JSON array, not JSON Lines: convert it with `jq -c '.[]'`)"
        )
    return ""


def parse_line(raw: bytes, line: int) -> Any:
    """The JSON value of one line (bytes, with or without its newline), or BadRecord."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:  # also what the stdlib accepts (NaN): let it decide
        return parse_line_stdlib(raw, line)
    if _may_be_a_wide_integer(value):  # orjson reads integers past 64 bits as floats
        return parse_line_stdlib(raw, line)
    return value


def _may_be_a_wide_integer(value: Any) -> bool:
    """True if a float in `value` is at least 2**63 in size: orjson's reading of an integer too
    wide for 64 bits (or a literal such as 1e20, which the stdlib then reads the same)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is dict:
            stack.extend(v.values())
        elif type(v) is list:
            stack.extend(v)
        elif type(v) is float and abs(v) >= 9.2e18:
            return True
    return False


def parse_line_stdlib(raw: bytes, line: int) -> Any:
    """`parse_line` by the stdlib parser alone: the reference for what is accepted."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[max(0, e.start - 10) : e.start + 10]
        raise BadRecord(
            "invalid_utf8",
            f"invalid UTF-8 at byte {e.start + 1} of the line ({e.reason}): {bad!r}; "
            "re-encode the file as UTF-8",
        ) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        found = excerpt(text.rstrip("\r\n"), e.pos)
        hint = _first_line_hint(text) if line == 1 else ""
        raise BadRecord(
            "not_json",
            f"not JSON: {e.msg.removesuffix(' at')} at column {e.colno}: {found}{hint}",
        ) from None
    except RecursionError:
        raise BadRecord("not_json", "not JSON: nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text):
        # the JSON escape of a lone surrogate ("\ud800") parses to a str that is not valid UTF-8
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            code = ord(e.object[e.start])
            found = excerpt(text.rstrip("\r\n"), text.find(f"{code:04x}"))
            raise BadRecord(
                "lone_surrogate",
                f"the JSON escape \\u{code:04x} is a lone UTF-16 surrogate (half of a character), "
                f"which is not valid text: {found}",
            ) from None
    return value


def check_object(record: Any, json_keys: Sequence[str], raw: bytes) -> dict:
    """The record if it is a JSON object, else BadRecord("not_object")."""
    if type(record) is not dict:
        found = excerpt(raw.decode("utf-8", "replace").rstrip("\r\n"))
        like = f'{{"{json_keys[0]}": ...}}'
        raise BadRecord(
            "not_object", f"a JSON {type_name(record)}, expected an object like {like}: {found}"
        )
    return record


def record_fields(record: dict, json_keys: Sequence[str]) -> dict[str, str]:
    """key -> text for every requested key of a JSON object, or BadRecord."""
    fields = {}
    for key in json_keys:
        value = record.get(key, _MISSING)
        if type(value) is str:
            fields[key] = value
        elif value is _MISSING:
            keys = ", ".join(repr(k) for k in list(record)[:10]) or "none"
            raise BadRecord(
                "missing_key",
                f"missing key {key!r} (keys found: {keys})",
            )
        elif value is None:
            raise BadRecord("null_text", f"{key!r} is null, expected a string")
        else:
            found = json.dumps(value, ensure_ascii=False)
            found = found if len(found) <= 40 else found[:40] + "…"
            raise BadRecord(
                "non_string_text",
                f"{key!r} is a JSON {type_name(value)} ({found}), expected a string",
            )
    return fields


def filter_value(key: str, metadata: Mapping[str, Any], record: Mapping[str, Any]) -> Any:
    """The value `filters[key]` matches: from the metadata, a top-level field, or meta[key]."""
    value = metadata.get(key, _MISSING)
    if value is _MISSING:
        value = record.get(key, _MISSING)
    if value is _MISSING:
        meta = record.get("meta")
        value = meta.get(key, _MISSING) if isinstance(meta, dict) else _MISSING
    return value


def matches(filters: Mapping[str, Collection[str]], metadata: Mapping, record: Mapping) -> bool:
    for key, allowed in filters.items():
        value = filter_value(key, metadata, record)
        if value is _MISSING:
            return False
        if isinstance(value, str):
            if value not in allowed:
                return False
        elif str(value) not in allowed:  # e.g. a number compared with the strings given
            return False
    return True


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
