"""The sink: writes tokenized chunks in input order to the dataset writers, keeping counts and
provenance; and the progress display (tqdm on a terminal, periodic log lines otherwise)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class Progress:
    """tqdm on a terminal, periodic log lines otherwise."""

    def __init__(self, enabled: bool, log_interval: int, total_files: int) -> None:
        self.start = time.perf_counter()
        self.docs = self.tokens = self.bytes = 0
        self.log_interval = log_interval
        self._next_log = log_interval
        self.total_files = total_files
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                unit="B",
                unit_scale=True,
                unit_divisor=1000,
                dynamic_ncols=True,
                desc="build-index",
                file=sys.stderr,
            )

    def update(self, file_index: int, docs: int, tokens: int, nbytes: int) -> None:
        self.docs += docs
        self.tokens += tokens
        self.bytes += nbytes
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        if self.bar is not None:
            self.bar.set_description_str(f"file {file_index + 1}/{self.total_files}", refresh=False)
            self.bar.set_postfix_str(
                f"{self.docs / elapsed:,.0f} docs/s, {self.tokens / elapsed:,.0f} tok/s",
                refresh=False,
            )
            self.bar.update(nbytes)
        elif self.log_interval and self.docs >= self._next_log:
            self._next_log = (self.docs // self.log_interval + 1) * self.log_interval
            log.info(
                "processed %d documents (%.0f docs/s, %.2f MB/s, %.0f tokens/s), file %d/%d",
                self.docs,
                self.docs / elapsed,
                self.bytes / elapsed / 1e6,
                self.tokens / elapsed,
                file_index + 1,
                self.total_files,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Sink:
    """Writes tokenized chunks, in submission order, to the writers; keeps counts and provenance."""

    def __init__(self, writers, stats, provenance, progress, *, split_sentences: bool) -> None:
        self.writers = writers
        self.stats = stats
        self.provenance = provenance
        self.progress = progress
        self.split_sentences = split_sentences
        self.text_bytes = 0

    def write(self, file_index: int, result: dict[str, Any], lines: dict[str, list[int]]) -> int:
        """Write one chunk's documents for every key; returns how many documents it held."""
        ndocs = ntok = nbytes = 0
        for key, r in result.items():
            s = self.stats[key]
            keep = np.ones(len(lines[key]), dtype=bool)
            if r["empty"]:
                keep[r["empty"]] = False
                s.skip("empty_after_tokenization", len(r["empty"]))
            s.max_token_id = max(s.max_token_id, r["max_id"])
            self._add(self.writers[key], r)
            kept = np.asarray(lines[key], dtype=np.int64)[keep]
            rows = np.stack([np.full(kept.size, file_index, np.int64), kept], axis=1)
            self.provenance[key].append(rows)
            s.documents += int(kept.size)
            s.sequences += int(r["seq_lengths"].size)
            s.tokens += int(r["tokens"].size)
            ndocs = max(ndocs, int(kept.size))
            ntok += int(r["tokens"].size)
            nbytes += r["text_bytes"]
        self.text_bytes += nbytes
        self.progress.update(file_index, ndocs, ntok, nbytes)
        return ndocs

    def take(self, file_index: int, done: tuple[dict[str, Any], Any], file_stats, bad) -> int:
        """Write a `run_task` result (with the lines kept by the caller for text tasks); a block
        parsed by a worker also brings its read counters and bad records, added to the file's."""
        result, lines = done
        if result["read"] is not None:
            file_stats.merge(result["read"])
            result["bad"].replay(bad)
            for key, n in result["empty_text"].items():
                if n:
                    self.stats[key].skip("empty_text", n)
            lines = result["lines"]
        return self.write(file_index, result["keys"], lines)

    def _add(self, writer, r: dict[str, Any]) -> None:
        if not self.split_sentences:
            writer.add_documents(r["tokens"], r["doc_lengths"])
            return
        seq_pos = tok_pos = 0
        for nseq in r["seqs_per_doc"]:
            lengths = r["seq_lengths"][seq_pos : seq_pos + nseq]
            n = int(lengths.sum())
            writer.add_document(r["tokens"][tok_pos : tok_pos + n], sequence_lengths=lengths)
            seq_pos += nseq
            tok_pos += n
