"""Reading one input file into the sink: JSON Lines are decompressed and cut into blocks of whole
lines here and parsed by the executor's task function; Parquet is read here and only tokenized
there. Bad records and bad files are raised or counted exactly as a sequential read would."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from dataprep.build.config import BuildConfig
from dataprep.build.encode import group_by_key, run_task
from dataprep.build.plan import Part
from dataprep.build.sink import Sink
from dataprep.build.tasks import BlockTask, Encoded, Task, TaskOptions, TextTask
from dataprep.errors import ReadError

log = logging.getLogger(__name__)


class Runner(Protocol):
    """Runs tasks and hands their results back in submission order."""

    def submit(self, task: Task) -> Iterator[Encoded]:
        """Start `task`; yields the results that had to be collected first."""

    def drain(self) -> Iterator[Encoded]:
        """The results of every task still running."""


class InlineRunner:
    """Runs each task at once, in this process."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def submit(self, task: Task) -> Iterator[Encoded]:
        yield run_task(task, self.tokenizer)

    def drain(self) -> Iterator[Encoded]:
        return iter(())


def process_file(
    part: Part,
    *,
    input_offset: int = 0,
    config: BuildConfig,
    options: TaskOptions,
    filters,
    runner: Runner,
    sink: Sink,
):
    """Read, tokenize (through `runner`) and write one part of an input file (all of it, or a
    byte range of a plain file); returns its ReadStats and the number of documents written from
    it. `input_offset` is the input bytes of the parts before this one (for progress)."""
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
    on_bad_file = "skip" if config.skip_bad_files else "raise"
    file_stats = ReadStats()
    bad = RecordErrors(path, options.on_error, file_stats)
    file_docs = 0

    def take(results: Iterator[Encoded]) -> None:
        nonlocal file_docs
        for encoded in results:
            if encoded.read is not None:  # a block parsed by the task: its counts are the file's
                file_stats.merge(encoded.read)
                encoded.bad.replay(bad)
            file_docs += sink.write(file_index, encoded)

    resolved = resolve_format(path, config.fmt, config.languages, file_stats)
    if resolved is not None and resolved[0] == "parquet":
        docs = iter_documents(
            path,
            fmt="parquet",
            json_keys=config.json_keys,
            filters=filters,
            on_error=options.on_error,
            on_bad_file=on_bad_file,
            stats=file_stats,
        )
        for chunk in iter_chunks(docs, config.json_keys, config.chunk_bytes):
            texts, lines, empty = group_by_key(chunk, config.json_keys)
            lines = {key: np.asarray(v, np.int64) for key, v in lines.items()}
            take(runner.submit(TextTask(options, texts, lines, empty)))
        take(runner.drain())
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
                take(runner.submit(BlockTask(options, parser, block.first_line, block.data)))
        except ReadError as e:
            if e.kind not in FILE_ERROR_KINDS:
                raise
            # the blocks before the break come first (a bad record in them is the
            # first error of the file)
            take(runner.drain())
            if on_bad_file == "raise":
                raise
            log.warning("skipped the rest of a bad file: %s", e)
            file_stats.skip_file(e.kind, path)
        else:
            take(runner.drain())
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


def task_options(config: BuildConfig, dtype: np.dtype) -> TaskOptions:
    """The options every task of a build with `config` shares."""
    return TaskOptions(
        split_sentences=config.split_sentences,
        keep_newlines=config.keep_newlines,
        append_eod=config.append_eod,
        dtype=np.dtype(dtype).str,
        dedup=config.dedup,
        on_error="skip" if config.skip_bad_records else "raise",
    )
