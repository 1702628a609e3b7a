"""Input readers: find the input files, tell their format, and stream their records as Documents.

Formats: "pile" (`*.jsonl.zst`, metadata from `meta`), "mc4" (`c4-<lang>.tfrecord-*.json.gz`,
language from the file name), "jsonl" (any JSON Lines, plain/zstd/gzip) and "parquet". Reading is
streaming and constant-memory; bad records and bad files raise ReadError with the file, line or
byte offset and what was found, or are counted in `ReadStats` when told to skip them.

A JSON Lines file can also be read in two steps, so that the parsing runs elsewhere (a worker
process): `iter_line_blocks` cuts the decompressed file into numbered blocks of whole lines and
`json_lines_parser(...).documents(...)` turns a block into Documents, with bad records handled by
`RecordErrors` (here) or `CollectedRecordErrors` (in a worker); `finish_file` ends the file.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dataprep.documents import Document
from dataprep.errors import ReadError, UsageError
from dataprep.readers import compression, sniff
from dataprep.readers.base import (
    FILE_ERROR_KINDS,
    LANGUAGE,
    RECORD_ERROR_KINDS,
    CollectedRecordErrors,
    ReadStats,
    RecordErrors,
)
from dataprep.readers.jsonl import (
    BLOCK_BYTES,
    JsonLinesParser,
    LineRange,
    MetadataOf,
    finish_file,
    first_record,
    iter_json_lines,
    line_blocks,
)
from dataprep.readers.mc4 import mc4_language, mc4_metadata_of
from dataprep.readers.pile import is_pile_record, pile_metadata

__all__ = [
    "FILE_ERROR_KINDS",
    "FORMATS",
    "INPUT_SUFFIXES",
    "RECORD_ERROR_KINDS",
    "CollectedRecordErrors",
    "Document",
    "JsonLinesParser",
    "LineBlock",
    "ReadStats",
    "RecordErrors",
    "detect_format",
    "expand_inputs",
    "finish_file",
    "iter_documents",
    "iter_line_blocks",
    "json_lines_parser",
    "normalize_filters",
    "resolve_format",
]

log = logging.getLogger(__name__)

FORMATS = ("pile", "mc4", "jsonl", "parquet")
# file names taken from a directory; a file named explicitly is read whatever its name
INPUT_SUFFIXES = tuple(
    base + compressed
    for base in (".jsonl", ".json", ".ndjson")
    for compressed in ("", ".zst", ".zstd", ".gz")
) + (".parquet",)
_GLOB_CHARS = frozenset("*?[")


def _files_under(directory: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [
            Path(root, f)
            for f in files
            if not f.startswith(".") and f.lower().endswith(INPUT_SUFFIXES)
        ]
    if not found:
        raise UsageError(
            f"directory {directory} has no input files (looked for names ending in "
            f"{', '.join(INPUT_SUFFIXES)}, hidden files excepted); name the files explicitly"
        )
    return found


def _expand_one(item: str, *, where: str) -> list[Path]:
    if _GLOB_CHARS & set(item):
        matches = sorted(glob.glob(item, recursive=True))
        if not matches:
            raise UsageError(
                f"{where}{item!r} matches no file; check the pattern and the directory"
            )
        files = []
        for match in matches:
            path = Path(match)
            files += _files_under(path) if path.is_dir() else [path]
        return files
    path = Path(item)
    if path.is_dir():
        return _files_under(path)
    if path.is_file():
        return [path]
    if path.exists():
        raise UsageError(f"{where}{item!r} is not a regular file or directory")
    raise UsageError(f"{where}input {item!r} does not exist")


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The input files named by files, directories, globs and "@list.txt" arguments.

    A directory contributes its files with known suffixes (`INPUT_SUFFIXES`), recursively, skipping
    hidden ones. A glob may use "**". "@list.txt" names a text file with one input (file, directory
    or glob) per line; blank lines and "#" comments are ignored and relative entries are relative to
    the list's own directory. The result is de-duplicated (by real path: two symlinks to one file
    give it once, with a warning naming both) and sorted by path; anything that matches nothing is
    a UsageError naming it.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise UsageError("no inputs given; pass files, directories, globs or @list.txt")
    files: list[Path] = []
    for given in inputs:
        item = os.fspath(given)
        if not item.startswith("@"):
            files += _expand_one(item, where="")
            continue
        list_path = Path(item[1:])
        try:
            entries = list_path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read the input list {list_path}: {e}") from e
        count = 0
        for number, entry in enumerate(entries, start=1):
            entry = entry.strip()
            if not entry or entry.startswith("#"):
                continue
            count += 1
            entry = os.path.normpath(os.path.join(list_path.parent, os.path.expanduser(entry)))
            files += _expand_one(entry, where=f"{list_path}:{number}: ")
        if count == 0:
            raise UsageError(f"the input list {list_path} names no inputs")
    unique: dict[str, Path] = {}
    for path in sorted(files, key=os.fspath):
        real = os.path.realpath(path)
        first = unique.setdefault(real, path)
        if first is not path:
            # two names (symlinks, overlapping globs, a file named twice) for one file: reading
            # it twice would only duplicate its documents
            if os.fspath(first) == os.fspath(path):
                log.warning("input %s is given more than once: it is read once", real)
            else:
                log.warning(
                    "inputs %s and %s are the same file (%s): it is read once",
                    os.fspath(first),
                    os.fspath(path),
                    real,
                )
    return sorted(unique.values(), key=os.fspath)


def detect_format(path: str | os.PathLike) -> str:
    """One of FORMATS, from the magic bytes, the name and (pile vs jsonl) the first record.

    "parquet" for PAR1 files or `*.parquet`; "mc4" for `c4-<lang>*.json(.gz)`; "pile" when the first
    record has `meta.pile_set_name`; else "jsonl". Only reads the file's start: a broken file is
    reported by `iter_documents`, not here.
    """
    name = Path(path).name.lower()
    head = sniff.read_head(path, 4)
    if head.startswith(sniff.PARQUET_MAGIC) or name.endswith(".parquet"):
        return "parquet"
    if mc4_language(path) is not None and ".json" in name:
        return "mc4"
    if is_pile_record(first_record(path)):
        return "pile"
    return "jsonl"


def _check_options(fmt, json_keys, on_error, on_bad_file, start_line) -> None:
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"unknown input format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if (
        isinstance(json_keys, str)
        or not json_keys
        or not all(isinstance(k, str) for k in json_keys)
    ):
        raise UsageError(f"json_keys must be a non-empty list of key names, got {json_keys!r}")
    if on_error not in ("raise", "skip"):
        raise UsageError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if on_bad_file not in ("raise", "skip"):
        raise UsageError(f"on_bad_file must be 'raise' or 'skip', got {on_bad_file!r}")
    if not isinstance(start_line, int) or start_line < 0:
        raise UsageError(f"start_line must be an integer >= 0, got {start_line!r}")


def normalize_filters(
    filters: Mapping[str, Collection[str] | str] | None,
) -> dict[str, frozenset[str]] | None:
    """key -> frozenset of allowed string values; a bare string is one value, not its characters."""
    if not filters:
        return None
    return {
        key: frozenset([allowed] if isinstance(allowed, str) else map(str, allowed))
        for key, allowed in filters.items()
    }


def resolve_format(
    path: str | os.PathLike,
    fmt: str | None,
    languages: Collection[str] | None,
    stats: ReadStats,
) -> tuple[str, str | None] | None:
    """(format, mC4 language or None) of one input, or None when `languages` rules the file out
    (then it is logged and listed in `stats.files_skipped["language"]`)."""
    language = mc4_language(path)
    if languages is not None:
        wanted = {language.casefold() for language in languages}
        if language is None or language.casefold() not in wanted:
            found = f"its language is {language!r}" if language else "its name gives no language"
            log.info("skipping %s: %s, not one of %s", os.fspath(path), found, sorted(languages))
            stats.skip_file(LANGUAGE, path)
            return None
    return fmt or detect_format(path), language


def _metadata_of(fmt: str, language: str | None) -> MetadataOf | None:
    """A JSON Lines format's `metadata_of` (None: the plain one, every other field)."""
    if fmt == "pile":
        return pile_metadata
    if fmt == "mc4":
        return mc4_metadata_of(language)
    return None


def json_lines_parser(
    path: str | os.PathLike,
    fmt: str,
    *,
    json_keys: Sequence[str] = ("text",),
    language: str | None = None,
    filters: Mapping[str, Collection[str]] | None = None,
) -> JsonLinesParser:
    """The picklable parser of the blocks of one JSON Lines file of format `fmt` ("pile", "mc4"
    with the file's `language`, or "jsonl"), keeping the records that match `filters`."""
    metadata_of = _metadata_of(fmt, language)
    return JsonLinesParser(os.fspath(path), tuple(json_keys), metadata_of, filters)


@dataclass(frozen=True, slots=True)
class LineBlock:
    """Whole lines of a JSON Lines file, decompressed, as `iter_line_blocks` yields them."""

    first_line: int  # number of the block's first line in the file (from 1)
    data: bytes  # `\n`-terminated lines; only the file's last line may lack its newline
    offset: int  # file bytes (compressed, for zstd/gzip) read once this block was cut


def iter_line_blocks(
    path: str | os.PathLike,
    *,
    block_bytes: int = BLOCK_BYTES,
    start: int = 0,
    end: int | None = None,
) -> Iterator[LineBlock]:
    """Blocks of about `block_bytes` of whole lines of a JSON Lines file (zstd, gzip or plain), in
    file order. With `start`/`end` (a plain file only), the lines that start in the byte range
    [start, end), numbered as in the whole file; every line of a file belongs to exactly one range
    of a cut. A broken compressed stream yields the whole lines before the break, then raises
    ReadError."""
    if start == 0 and end is None:
        reader, first = compression.open_decompressed(path), 1
    else:
        reader = LineRange(path, start, end)
        first = reader.first_line
    with reader:
        for first_line, data in line_blocks(reader, block_bytes, first_line=first):
            yield LineBlock(first_line, data, compression.compressed_offset(reader))


def iter_documents(
    path: str | os.PathLike,
    *,
    fmt: str | None = None,
    json_keys: Sequence[str] = ("text",),
    filters: Mapping[str, Collection[str]] | None = None,
    languages: Collection[str] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    on_bad_file: Literal["raise", "skip"] = "raise",
    stats: ReadStats | None = None,
    start_line: int = 0,
) -> Iterator[Document]:
    """Stream the Documents of one input file, in file order, in constant memory.

    Args:
        fmt: one of FORMATS; None detects it (`detect_format`).
        json_keys: keys whose string values become `Document.fields`; the first is `Document.text`.
            Every key must be present in every record.
        filters: key -> allowed values, matched against the metadata (Pile: `meta[key]`; mC4: url,
            timestamp, language) or a top-level field; records that do not match are counted as
            `stats.skipped["filtered"]`.
        languages: keep only files whose name gives one of these languages (mC4 `c4-<lang>...`);
            any other file (or one whose name gives no language) is skipped whole, logged and listed
            in `stats.files_skipped["language"]`.
        on_error: "raise" a ReadError at the first bad record (kinds in RECORD_ERROR_KINDS:
            not_json, not_object, missing_key, null_text, non_string_text, invalid_utf8,
            lone_surrogate, truncated_last_line), or "skip" it and count it in
            `stats.skipped[kind]`.
        on_bad_file: "raise" a ReadError for a bad file (kinds in FILE_ERROR_KINDS: truncated,
            corrupt, trailing_garbage, html, lfs_pointer, not_zstd, ...), or "skip" it and list it
            in `stats.files_skipped[kind]`. Files are streamed, not validated first: a problem
            found late (a truncated or corrupt compressed stream is noticed where it breaks) leaves
            the documents already yielded from that file yielded; the warning logged says how many.
            An empty file is not an error: it is logged and listed in `stats.empty_files`.
        stats: counters to add to (a new ReadStats if None). `stats.bytes` counts the uncompressed
            bytes of every record read, yielded or not.
        start_line: pass over the first `start_line` records uncounted (to resume a run).

    Empty text is yielded unchanged; deciding what to do with it is the caller's business.
    """
    _check_options(fmt, json_keys, on_error, on_bad_file, start_line)
    stats = stats if stats is not None else ReadStats()
    json_keys = tuple(json_keys)
    if isinstance(languages, str):
        languages = [languages]
    filters = normalize_filters(filters)
    yielded = 0
    try:
        resolved = resolve_format(path, fmt, languages, stats)
        if resolved is None:
            return
        fmt, language = resolved
        options = dict(
            json_keys=json_keys,
            filters=filters,
            on_error=on_error,
            stats=stats,
            start_line=start_line,
        )
        if fmt == "parquet":
            from dataprep.readers.parquet import iter_parquet

            extra = {"language": language} if language is not None else None
            documents = iter_parquet(path, extra_metadata=extra, **options)
        else:
            metadata_of = _metadata_of(fmt, language)
            documents = iter_json_lines(path, metadata_of=metadata_of, **options)
        for document in documents:
            yielded += 1
            yield document
    except ReadError as e:
        if on_bad_file == "raise" or e.kind not in FILE_ERROR_KINDS:
            raise
        already = f"; {yielded} documents from it were already yielded" if yielded else ""
        log.warning("skipped the rest of a bad file: %s%s", e, already)
        stats.skip_file(e.kind, path)
