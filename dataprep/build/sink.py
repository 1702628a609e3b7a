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
    """One bar for the whole build: percentage and ETA by input bytes (compressed sizes, over all
    files), text MB/s, documents and tokens per second. tqdm on a terminal, periodic log lines
    otherwise. `done_bytes` and `done_files` are what an earlier run (--resume) finished."""

    def __init__(
        self,
        enabled: bool,
        log_interval: int,
        total_files: int,
        *,
        total_bytes: int = 0,
        done_bytes: int = 0,
        done_files: int = 0,
    ) -> None:
        self.start = time.perf_counter()
        self.docs = self.tokens = self.bytes = 0
        self.log_interval = log_interval
        self._next_log = log_interval
        self.total_files = total_files
        self.files_done = done_files
        self.total_bytes = total_bytes
        self.start_bytes = self.input_bytes = done_bytes
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_bytes or None,
                initial=done_bytes,
                unit="B",
                unit_scale=True,
                unit_divisor=1000,
                dynamic_ncols=True,
                desc="build-index",
                file=sys.stderr,
            )

    def input_position(self, input_bytes: int) -> None:
        """Input bytes (compressed) consumed so far, over all files, earlier runs included."""
        delta = input_bytes - self.input_bytes
        if delta <= 0:
            return
        self.input_bytes = input_bytes
        if self.bar is not None:
            self.bar.update(delta)

    def file_done(self, input_bytes: int) -> None:
        self.files_done += 1
        self.input_position(input_bytes)
        self._show()

    def _eta(self, elapsed: float) -> str:
        done = self.input_bytes - self.start_bytes
        left = self.total_bytes - self.input_bytes
        if done <= 0 or left < 0:
            return "?"
        seconds = int(left * elapsed / done)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def update(self, file_index: int, docs: int, tokens: int, nbytes: int) -> None:
        self.docs += docs
        self.tokens += tokens
        self.bytes += nbytes
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        if self.bar is not None:
            self._show()
        elif self.log_interval and self.docs >= self._next_log:
            self._next_log = (self.docs // self.log_interval + 1) * self.log_interval
            percent = 100 * self.input_bytes / self.total_bytes if self.total_bytes else 100.0
            log.info(
                "processed %d documents (%.0f docs/s, %.2f MB/s of text, %.0f tokens/s), "
                "%d/%d files done, %.0f%% of the input bytes, ETA %s",
                self.docs,
                self.docs / elapsed,
                self.bytes / elapsed / 1e6,
                self.tokens / elapsed,
                self.files_done,
                self.total_files,
                percent,
                self._eta(elapsed),
            )

    def _show(self) -> None:
        if self.bar is None:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_description_str(f"{self.files_done}/{self.total_files} files", refresh=False)
        self.bar.set_postfix_str(
            f"{self.bytes / elapsed / 1e6:,.1f} MB/s text, {self.tokens:,} tokens "
            f"({self.tokens / elapsed:,.0f}/s)",
            refresh=False,
        )
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Sink:
    """Writes tokenized chunks, in submission order, to the writers; keeps counts and provenance."""

    def __init__(
        self,
        writers,
        stats,
        provenance,
        progress,
        *,
        split_sentences: bool,
        dedup: dict | None = None,
        keep_keys: bool = False,
    ) -> None:
        # dedup: key -> dataprep.dedup.Deduplicator, deciding here in input order; keep_keys: a
        # Ray task's sink, which writes everything and keeps the keys for the driver to decide
        self.dedup = dedup
        self.kept_keys: dict[str, list] | None = {k: [] for k in writers} if keep_keys else None
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
            kept = np.asarray(lines[key], dtype=np.int64)[keep]
            if self.dedup is not None:
                mask = self.dedup[key].decide(file_index, kept, r["dedup"])
                if not mask.all():
                    removed = self.dedup[key].pairs[-int((~mask).sum()) :]
                    for pair in removed:
                        s.skip("duplicate_" + ("exact", "near")[pair[4]])
                    r = _select(r, mask)
                    kept = kept[mask]
            elif self.kept_keys is not None and r["dedup"] is not None:
                self.kept_keys[key].append(r["dedup"])
            s.max_token_id = max(s.max_token_id, r["max_id"])
            self._add(self.writers[key], r)
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

    def append_part(self, file_index: int, part_dir, result: dict[str, Any]) -> int:
        """Append a partial dataset written by a task (executor_ray) after everything written so
        far: its `.bin/.idx` with the writer's `add_index` (the merge of indexed/merge.py: `.bin`
        streamed, document indices rebased), then its provenance and counts. With dedup, the
        documents are decided here, in input order, and duplicates left out of the copy."""
        ndocs = ntok = 0
        for key, writer in self.writers.items():
            prov = np.load(part_dir / f"{key}.provenance.npy")
            part = dict(result["stats"][key])
            mask = None
            if self.dedup is not None:
                with np.load(part_dir / f"{key}.dedup.npz") as z:
                    keys = {n: z[n] for n in z.files}
                mask = self.dedup[key].decide(file_index, prov[:, 1], keys)
            if mask is None or mask.all():
                writer.add_index(part_dir / key)
            else:
                part = _copy_kept(writer, part_dir / key, mask, part, self.dedup[key])
                prov = prov[mask]
            self.provenance[key].append(prov)
            self.stats[key].add(part)
            ndocs = max(ndocs, part["documents"])
            ntok += part["tokens"]
        self.text_bytes += result["text_bytes"]
        self.progress.update(file_index, ndocs, ntok, result["text_bytes"])
        return ndocs

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


def _select(r: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """A chunk result (`encode.encode_chunk`) with only the documents where `mask` is set."""
    doc_lengths, seqs_per_doc = r["doc_lengths"], r["seqs_per_doc"]
    tokens = r["tokens"][np.repeat(mask, doc_lengths)]
    return {
        **r,
        "tokens": tokens,
        "doc_lengths": doc_lengths[mask],
        "seq_lengths": r["seq_lengths"][np.repeat(mask, seqs_per_doc)],
        "seqs_per_doc": seqs_per_doc[mask],
        "max_id": int(tokens.max()) if tokens.size else -1,
    }


def _copy_kept(writer, prefix, mask: np.ndarray, part: dict[str, Any], dedup) -> dict[str, Any]:
    """Copy the documents of a partial dataset where `mask` is set; returns its counts after."""
    from dataprep.indexed import IndexedDatasetReader

    reader = IndexedDatasetReader(prefix)
    documents = np.asarray(reader.document_indices, np.int64)
    lengths = np.asarray(reader.sequence_lengths, np.int64)
    max_id, sequences, tokens = -1, 0, 0
    for i in np.flatnonzero(mask).tolist():
        seq = lengths[documents[i] : documents[i + 1]]
        ids = np.concatenate([reader[j] for j in range(documents[i], documents[i + 1])])
        writer.add_document(ids, sequence_lengths=seq.tolist())
        max_id = max(max_id, int(ids.max()) if ids.size else -1)
        sequences += seq.size
        tokens += ids.size
    del reader
    skipped = dict(part["skipped"])
    removed = dedup.pairs[len(dedup.pairs) - int((~mask).sum()) :]
    for pair in removed:
        reason = "duplicate_" + ("exact", "near")[pair[4]]
        skipped[reason] = skipped.get(reason, 0) + 1
    return {
        "documents": int(mask.sum()),
        "sequences": sequences,
        "tokens": tokens,
        "max_token_id": max_id,
        "skipped": skipped,
    }
