"""Reading one input file into the sink: JSON Lines are decompressed and cut into blocks of whole
lines here and parsed by the executor's task function; Parquet is read here and only tokenized
there. Bad records and bad files are raised or counted exactly as a sequential read would."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from dataprep.build.plan import Part
from dataprep.errors import ReadError

log = logging.getLogger(__name__)

Execute = Callable[[dict[str, Any], Any], Iterator[tuple[dict[str, Any], Any]]]
Drain = Callable[[], Iterator[tuple[dict[str, Any], Any]]]


def process_file(
    part: Part,
    *,
    input_offset: int = 0,
    config,
    common: dict[str, Any],
    filters,
    execute: Execute,
    drain: Drain,
    sink,
):
    """Read, tokenize (through `execute`/`drain`) and write one part of an input file (all of it,
    or a byte range of a plain file); returns its ReadStats and the number of documents written
    from it. `input_offset` is the input bytes of the parts before this one (for progress)."""
    from dataprep.build.encode import group_by_key
    from dataprep.readers import (
        FILE_ERROR_KINDS,
        ReadStats,
        RecordErrors,
        finish_file,
        iter_documents,
        iter_line_blocks,
        json_lines_parser,
        resolve_format,
    )

    file_index, path = part.file_index, Path(part.path)
    on_error = "skip" if config.skip_bad_records else "raise"
    on_bad_file = "skip" if config.skip_bad_files else "raise"
    file_stats = ReadStats()
    bad = RecordErrors(path, on_error, file_stats)
    file_docs = 0

    take = functools.partial(sink.take, file_index, file_stats=file_stats, bad=bad)

    resolved = resolve_format(path, config.fmt, config.languages, file_stats)
    if resolved is not None and resolved[0] == "parquet":
        docs = iter_documents(
            path,
            fmt="parquet",
            json_keys=config.json_keys,
            filters=filters,
            on_error=on_error,
            on_bad_file=on_bad_file,
            stats=file_stats,
        )
        for chunk in iter_chunks(docs, config.json_keys, config.chunk_bytes):
            texts, lines, empty = group_by_key(chunk, config.json_keys)
            for key, n in empty.items():
                if n:
                    sink.stats[key].skip("empty_text", n)
            if not any(texts.values()):
                continue
            for done in execute({**common, "texts": texts}, lines):
                file_docs += take(done)
        for done in drain():
            file_docs += take(done)
    elif resolved is not None:
        fmt, language = resolved
        parser = json_lines_parser(
            path, fmt, json_keys=config.json_keys, language=language, filters=filters
        )
        blocks = 0
        try:
            for block in iter_line_blocks(
                path, block_bytes=config.chunk_bytes, start=part.start, end=part.end
            ):
                blocks += 1
                sink.progress.input_position(input_offset + block.offset - part.start)
                task = {
                    **common,
                    "parser": parser,
                    "first_line": block.first_line,
                    "block": block.data,
                    "on_error": on_error,
                }
                for done in execute(task, None):
                    file_docs += take(done)
        except ReadError as e:
            if e.kind not in FILE_ERROR_KINDS:
                raise
            # the blocks before the break come first (a bad record in them is the
            # first error of the file)
            for done in drain():
                file_docs += take(done)
            if on_bad_file == "raise":
                raise
            log.warning("skipped the rest of a bad file: %s", e)
            file_stats.skip_file(e.kind, path)
        else:
            for done in drain():
                file_docs += take(done)
            if part.last:
                finish_file(path, file_stats, bad, empty=blocks == 0 and part.start == 0)
            else:
                bad.summarize()
    return file_stats, file_docs


def iter_chunks(docs: Iterator, keys: Sequence[str], chunk_bytes: int) -> Iterator[list]:
    """Documents in groups of about `chunk_bytes` of text (over all keys), for tokenizer tasks."""
    chunk: list = []
    size = 0
    for doc in docs:
        chunk.append(doc)
        size += sum(len(doc.fields[key]) for key in keys)
        if size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
