"""`build_index`: read documents -> tokenize -> write Megatron `.bin/.idx` (formats.md §1, §2).

Outputs `{output_prefix}_{key}_{document|sentence}.bin/.idx` per JSON key, as Megatron's
preprocess_data.py, each with a manifest `{prefix}.json` (counts, skips by reason, inputs with size
and sha256, tokenizer identity, largest token id) and `{prefix}.provenance.npy` (int64 rows `(input
index, line)`, one per written document).

Parallelism: the main process decompresses each JSON Lines file and cuts it into blocks of whole
lines (about `chunk_bytes` each, line numbers counted); `workers` processes parse, check and
tokenize the blocks (`run_task`) and the main process writes their results in submission order, so
the bytes do not depend on `workers`. Bad records found by a worker are raised or counted exactly
as a sequential read would (`readers.base.CollectedRecordErrors`). Parquet files are read in the
main process and only tokenized in the workers.
Resumability: `.bin` data goes to temporary names; after each input file the writers' state is saved
to `{output_prefix}.dataprep-build/`, and `--resume` truncates back to the last finished file and
continues there. Real names appear only when the build completes.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import queue
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataprep import __version__
from dataprep.errors import DataprepError, ReadError, UsageError
from dataprep.manifest import manifest_path, provenance_path, write_json_atomic

log = logging.getLogger(__name__)

# A document longer than this (characters) is tokenized in pieces cut before a space that follows a
# non-space and precedes a non-space; GPT-2's pre-tokenizer never joins across such a cut, so the
# ids
# are the same, while memory stays bounded (a 100 MB document would otherwise become one 25M-element
# list).
LONG_DOCUMENT_CHARS = 4_000_000
LONG_DOCUMENT_PIECE = 1_000_000


@dataclass(frozen=True, slots=True)
class BuildConfig:
    inputs: tuple[str, ...]  # files, directories, globs or @list.txt
    output_prefix: str  # outputs are {output_prefix}_{key}_{level}.bin/.idx
    tokenizer: str = "gpt2"  # a spec for dataprep.tokenizers.load_tokenizer
    json_keys: tuple[str, ...] = ("text",)  # one dataset per key
    append_eod: bool = False  # append the tokenizer's end-of-document id to each document
    split_sentences: bool = False  # one sequence per sentence (level "sentence")
    keep_newlines: bool = False  # with split_sentences: keep the newline at a sentence's end
    workers: int = 1  # tokenizer processes; 1 = tokenize in this process
    fmt: str | None = None  # reader format; None = detect from magic bytes and name
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (metadata key, accepted values)
    languages: tuple[str, ...] | None = None  # mC4 languages to keep; None = all
    skip_bad_records: bool = False  # count malformed records as skips instead of stopping
    skip_bad_files: bool = False  # count corrupt/truncated input files as skips
    overwrite: bool = False  # replace existing outputs
    resume: bool = False  # continue an interrupted build of the same configuration
    chunk_bytes: int = 1 << 19  # text per tokenizer task (--chunk-mb)
    progress: bool = True  # tqdm bar on stderr (only when stderr is a terminal)
    log_interval: int = 0  # log a progress line every N documents when there is no bar

    def __post_init__(self) -> None:
        if not self.inputs:
            raise UsageError("no --input given")
        if not self.json_keys:
            raise UsageError("--json-keys needs at least one key")
        if len(set(self.json_keys)) != len(self.json_keys):
            raise UsageError(f"--json-keys has duplicates: {list(self.json_keys)}")
        if self.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {self.workers}")
        if self.overwrite and self.resume:
            raise UsageError("--overwrite and --resume contradict each other; pick one")

    @property
    def level(self) -> str:
        return "sentence" if self.split_sentences else "document"

    def output_prefixes(self) -> dict[str, str]:
        return {key: f"{self.output_prefix}_{key}_{self.level}" for key in self.json_keys}

    @property
    def work_dir(self) -> Path:
        return Path(self.output_prefix + ".dataprep-build")

    def fingerprint(self, inputs: Sequence[dict[str, Any]], tokenizer_identity: str) -> str:
        """What must match for --resume to continue an earlier build."""
        keep = {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in ("overwrite", "resume", "workers", "progress", "log_interval")
        }
        keep["inputs"] = [i["path"] for i in inputs]
        keep["tokenizer_identity"] = tokenizer_identity
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


@dataclass
class KeyStats:
    documents: int = 0
    sequences: int = 0
    tokens: int = 0
    max_token_id: int = -1
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n


@dataclass
class BuildSummary:
    outputs: dict[str, str]  # key -> dataset prefix
    stats: dict[str, KeyStats]
    read: dict[str, Any]  # ReadStats.to_dict()
    inputs: list[dict[str, Any]]
    seconds: float
    text_bytes: int

    def format(self) -> str:
        lines = []
        mb = self.text_bytes / 1e6
        rate = mb / self.seconds if self.seconds > 0 else float("inf")
        lines.append(
            f"read {len(self.inputs)} input file(s), {self.read.get('documents', 0):,} records, "
            f"{mb:,.1f} MB of text in {self.seconds:,.1f} s ({rate:,.2f} MB/s)"
        )
        for key, prefix in self.outputs.items():
            s = self.stats[key]
            tok_rate = s.tokens / self.seconds if self.seconds > 0 else float("inf")
            lines.append(
                f"{prefix}.bin/.idx: {s.documents:,} documents, {s.sequences:,} sequences, "
                f"{s.tokens:,} tokens ({tok_rate:,.0f} tokens/s), largest id {s.max_token_id}"
            )
            if s.skipped:
                reasons = ", ".join(f"{r}={n:,}" for r, n in sorted(s.skipped.items()))
                lines.append(f"  skipped documents: {reasons}")
        record_skips = self.read.get("skipped") or {}
        if record_skips:
            reasons = ", ".join(f"{r}={n:,}" for r, n in sorted(record_skips.items()))
            lines.append(f"  skipped records: {reasons}")
        for reason, files in sorted(self.read.get("files_skipped", {}).items()):
            lines.append(f"  skipped files ({reason}): {', '.join(files)}")
        if self.read.get("empty_files"):
            lines.append(f"  empty input files: {', '.join(self.read['empty_files'])}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# worker side

_WORKER_TOKENIZER = None


def _init_worker(spec: str) -> None:
    global _WORKER_TOKENIZER
    from dataprep.tokenizers import load_tokenizer

    _WORKER_TOKENIZER = load_tokenizer(spec)


def _split_long(text: str) -> list[str]:
    """Cut a very long text before spaces between two non-space characters (see module doc)."""
    pieces, start = [], 0
    while len(text) - start > LONG_DOCUMENT_PIECE:
        cut = start + LONG_DOCUMENT_PIECE
        while cut < len(text) and not (
            text[cut] == " "
            and not text[cut - 1].isspace()
            and cut + 1 < len(text)
            and not text[cut + 1].isspace()
        ):
            cut += 1
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _encode_texts(tokenizer, texts: list[str]) -> list[np.ndarray]:
    out: list[np.ndarray | None] = [None] * len(texts)
    short = [i for i, t in enumerate(texts) if len(t) <= LONG_DOCUMENT_CHARS]
    for i, ids in zip(short, tokenizer.encode_numpy([texts[i] for i in short]), strict=True):
        out[i] = ids
    for i, t in enumerate(texts):
        if out[i] is None:
            parts = tokenizer.encode_numpy(_split_long(t))
            out[i] = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return out  # type: ignore[return-value]


def encode_chunk(task: dict[str, Any], tokenizer=None) -> dict[str, Any]:
    """Tokenize one chunk of documents for every key.

    Returns per key: `tokens` (flat ids), `doc_lengths` (tokens per written document),
    `seq_lengths` (tokens per sequence), `seqs_per_doc`, and `empty` (positions in the chunk of
    documents that tokenized
    to nothing and are not written).
    """
    tok = tokenizer if tokenizer is not None else _WORKER_TOKENIZER
    eod = tok.eod_id
    results = {}
    for key, texts in task["texts"].items():
        if task["split_sentences"]:
            from dataprep.sentences import split_sentences

            per_doc = [split_sentences(t, keep_newlines=task["keep_newlines"]) for t in texts]
            flat = [s for doc in per_doc for s in doc]
            encoded = _encode_texts(tok, flat)
            seq_lists, pos = [], 0
            for doc in per_doc:
                seqs = [e for e in encoded[pos : pos + len(doc)] if e.size]
                pos += len(doc)
                seq_lists.append(seqs)
        else:
            seq_lists = [[e] if e.size else [] for e in _encode_texts(tok, texts)]
        empty, arrays, seq_lengths, seqs_per_doc = [], [], [], []
        for i, seqs in enumerate(seq_lists):
            if not seqs:
                empty.append(i)
                continue
            if task["append_eod"]:
                seqs[-1] = np.append(seqs[-1], eod)
            arrays.extend(seqs)
            seq_lengths.extend(s.size for s in seqs)
            seqs_per_doc.append(len(seqs))
        tokens = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        max_id = int(tokens.max()) if tokens.size else -1
        narrow = task.get("dtype")
        fits = 0 <= max_id <= np.iinfo(narrow).max if narrow is not None else False
        if fits and (tokens.dtype.kind == "u" or tokens.min() >= 0):
            # cast here, in parallel, and ship 2 bytes a token instead of 4; ids that do not fit
            # stay as they are so that the writer reports them
            tokens = tokens.astype(narrow)
        seq_lengths_a = np.asarray(seq_lengths, dtype=np.int64)
        seqs_per_doc_a = np.asarray(seqs_per_doc, dtype=np.int64)
        bounds = np.concatenate([[0], np.cumsum(seqs_per_doc_a)])
        csum = np.concatenate([[0], np.cumsum(seq_lengths_a)])
        results[key] = {
            "tokens": tokens,
            "doc_lengths": csum[bounds[1:]] - csum[bounds[:-1]],
            "seq_lengths": seq_lengths_a,
            "seqs_per_doc": seqs_per_doc_a,
            "empty": empty,
            "max_id": max_id,
            "text_bytes": sum(len(t.encode("utf-8")) for t in texts),  # for MB/s
        }
    return results


def _group_by_key(docs, keys: Sequence[str]):
    """Texts and lines per key of `docs`; empty texts are left out and counted per key."""
    texts: dict[str, list[str]] = {k: [] for k in keys}
    lines: dict[str, list[int]] = {k: [] for k in keys}
    empty = dict.fromkeys(keys, 0)
    for doc in docs:
        for key in keys:
            text = doc.fields[key]
            if not text:
                empty[key] += 1
                continue
            texts[key].append(text)
            lines[key].append(doc.line)
    return texts, lines, empty


def _parse_block(task: dict[str, Any]) -> dict[str, Any]:
    """Documents of one block of JSON Lines: texts and lines per key, skips, read counters."""
    from dataprep.readers.base import CollectedRecordErrors, ReadStats

    parser = task["parser"]
    stats = ReadStats()
    bad = CollectedRecordErrors(parser.path, task["on_error"])
    docs = parser.documents(task["first_line"], task["block"], stats=stats, bad=bad)
    texts, lines, empty = _group_by_key(docs, parser.json_keys)
    return {"texts": texts, "lines": lines, "empty_text": empty, "read": stats, "bad": bad}


def run_task(task: dict[str, Any], tokenizer=None) -> dict[str, Any]:
    """One unit of work: a block of JSON Lines to parse (`block`) or texts already read (`texts`),
    tokenized for every key (see `encode_chunk`)."""
    if "block" in task:
        parsed = _parse_block(task)
        task = {**task, "texts": parsed.pop("texts")}
    else:
        parsed = {"lines": None, "empty_text": {}, "read": None, "bad": None}
    return {"keys": encode_chunk(task, tokenizer), **parsed}


def _worker_main(conn, spec: str | None) -> None:
    """A tokenizer process: tasks arrive on `conn` (a thread keeps reading them, so the main
    process never waits to hand one over), results go back in the same order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    if spec is not None:  # spawn: load here; fork: inherited
        _init_worker(spec)
    sys.setswitchinterval(0.0005)  # the receiving thread gets the GIL soon after a message lands
    tasks: queue.Queue = queue.Queue()

    def receive() -> None:
        try:
            while True:
                data = conn.recv_bytes()
                tasks.put(data)
                if not data:
                    return
        except (EOFError, OSError):
            tasks.put(b"")

    threading.Thread(target=receive, daemon=True).start()
    while True:
        data = tasks.get()
        if not data:
            return
        try:
            reply = ("ok", run_task(pickle.loads(data)))
        except BaseException as e:  # handed to the main process, which raises it
            reply = ("error", e)
        try:
            payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            text = traceback.format_exception(reply[1]) if reply[0] == "error" else []
            payload = pickle.dumps(("error", RuntimeError("".join(text) or "unpicklable result")))
        conn.send_bytes(payload)


class _Workers:
    """Tokenizer processes, each fed through its own pipe, tasks dealt round-robin; results come
    back in submission order. No helper threads in this process: handing over and collecting
    happen in the caller's thread, between reads."""

    def __init__(self, count: int, tokenizer, per_worker: int = 2) -> None:
        if sys.platform == "linux":
            # forked workers inherit the loaded tokenizer: no second load per worker
            global _WORKER_TOKENIZER
            _WORKER_TOKENIZER = tokenizer
            ctx, spec = multiprocessing.get_context("fork"), None
        else:
            ctx, spec = multiprocessing.get_context("spawn"), tokenizer.spec
        self.conns, self.procs = [], []
        try:
            for _ in range(count):
                here, there = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(there, spec), daemon=True)
                proc.start()
                there.close()
                self.conns.append(here)
                self.procs.append(proc)
        except BaseException:
            self.close()
            raise
        self.limit = count * per_worker
        self.pending: collections.deque = collections.deque()  # (worker, context)
        self.submitted = 0

    def submit(self, task: dict[str, Any], context: Any) -> Iterator[tuple[dict[str, Any], Any]]:
        """Hand `task` to the next worker; yields the (result, context) pairs that had to be
        collected first to stay within the in-flight limit."""
        while len(self.pending) >= self.limit:
            yield self._collect()
        worker = self.submitted % len(self.conns)
        data = pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.conns[worker].send_bytes(data)
        except OSError as e:
            raise self._died(worker) from e
        self.pending.append((worker, context))
        self.submitted += 1

    def drain(self) -> Iterator[tuple[dict[str, Any], Any]]:
        while self.pending:
            yield self._collect()

    def _collect(self) -> tuple[dict[str, Any], Any]:
        worker, context = self.pending.popleft()
        try:
            status, value = pickle.loads(self.conns[worker].recv_bytes())
        except (EOFError, OSError) as e:
            raise self._died(worker) from e
        if status == "error":
            raise value
        return value, context

    def _died(self, worker: int) -> DataprepError:
        proc = self.procs[worker]
        proc.join(timeout=1)
        return DataprepError(
            f"tokenizer worker {worker} died (exit code {proc.exitcode}); if it ran out of "
            "memory, use fewer --workers"
        )

    def close(self) -> None:
        """Stop the workers: politely when all results were collected, at once otherwise."""
        if not getattr(self, "pending", None):
            for conn in self.conns:
                try:
                    conn.send_bytes(b"")
                except OSError:
                    pass
            for proc in self.procs:
                proc.join(timeout=2)
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for conn in self.conns:
            conn.close()


# ------------------------------------------------------------------------------------------------
# main side


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _describe_inputs(files: Sequence[Path]) -> list[dict[str, Any]]:
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


def _existing_outputs(prefixes: Sequence[str]) -> list[str]:
    found = []
    for prefix in prefixes:
        for suffix in (".bin", ".idx"):
            if os.path.exists(prefix + suffix):
                found.append(prefix + suffix)
    return found


class _Progress:
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


class _Sink:
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


def _iter_chunks(docs: Iterator, keys: Sequence[str], chunk_bytes: int) -> Iterator[list]:
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


def build_index(config: BuildConfig) -> BuildSummary:
    """Run a whole build; raises DataprepError subclasses for user mistakes and bad data."""
    from dataprep.indexed import IndexedDatasetWriter
    from dataprep.indexed.format import optimal_dtype
    from dataprep.indexed.writer import WriterState, bin_tmp_path
    from dataprep.readers import (
        FILE_ERROR_KINDS,
        ReadStats,
        expand_inputs,
        iter_documents,
        normalize_filters,
        resolve_format,
    )
    from dataprep.readers.base import RecordErrors
    from dataprep.readers.compression import open_decompressed
    from dataprep.readers.jsonl import JsonLinesParser, finish_file, line_blocks
    from dataprep.tokenizers import load_tokenizer

    files = expand_inputs(list(config.inputs))
    tokenizer = load_tokenizer(config.tokenizer)
    if config.append_eod and tokenizer.eod_id is None:
        raise UsageError(f"--append-eod: tokenizer {tokenizer.spec!r} has no end-of-document token")
    dtype = np.dtype(optimal_dtype(tokenizer.vocab_size))
    outputs = config.output_prefixes()
    out_dir = Path(config.output_prefix).parent
    out_dir.mkdir(parents=True, exist_ok=True)

    inputs = _describe_inputs(files)
    fingerprint = config.fingerprint(inputs, tokenizer.identity)
    work = config.work_dir
    state_file = work / "state.json"

    existing = _existing_outputs(list(outputs.values()))
    if existing and not config.overwrite:
        raise UsageError(
            f"output already exists: {', '.join(existing)}; pass --overwrite to replace it"
        )
    if existing and config.overwrite and not config.resume:
        # an interrupted --overwrite build must not leave the old dataset beside a new manifest
        for prefix in outputs.values():
            for path in (
                prefix + ".bin",
                prefix + ".idx",
                manifest_path(prefix),
                provenance_path(prefix),
            ):
                Path(path).unlink(missing_ok=True)
    if work.exists() and not config.resume:
        if state_file.exists() and not config.overwrite:
            raise UsageError(
                f"an interrupted build left {work}; pass --resume to continue it "
                "or --overwrite to start again"
            )
        shutil.rmtree(work)

    # --- resume state
    done_files = 0
    stats = {key: KeyStats() for key in config.json_keys}
    read_stats = ReadStats()
    provenance: dict[str, list[np.ndarray]] = {key: [] for key in config.json_keys}
    writer_states: dict[str, Any] = {key: None for key in config.json_keys}
    if config.resume:
        if not state_file.exists():
            raise UsageError(f"--resume: no interrupted build found at {work}")
        state = json.loads(state_file.read_text())
        if state["fingerprint"] != fingerprint:
            raise UsageError(
                f"--resume: {work} belongs to a build with other inputs, flags or tokenizer; "
                "rerun with the same arguments, or use --overwrite to start again"
            )
        done_files = state["done_files"]
        for old, new in zip(state["inputs"][:done_files], inputs, strict=False):
            if (old["size"], old["mtime_ns"]) != (new["size"], new["mtime_ns"]):
                raise UsageError(
                    f"--resume: {new['path']} changed since it was processed; "
                    "use --overwrite to start again"
                )
        for key in config.json_keys:
            stats[key] = KeyStats(**state["stats"][key])
            provenance[key] = [np.load(work / f"{key}.provenance.npy")]
            writer_states[key] = WriterState.load(work / f"{key}.writer.npz")
        read_stats = (
            ReadStats.from_dict(state["read"]) if hasattr(ReadStats, "from_dict") else read_stats
        )
        inputs[:done_files] = state["inputs"][:done_files]
        log.info("resuming: %d of %d input files already done", done_files, len(files))
    work.mkdir(parents=True, exist_ok=True)

    writers = {
        key: IndexedDatasetWriter(
            prefix, dtype=dtype, keep_partial=True, resume_from=writer_states[key]
        )
        for key, prefix in outputs.items()
    }
    filters = normalize_filters({k: v for k, v in config.filters})
    on_error = "skip" if config.skip_bad_records else "raise"
    on_bad_file = "skip" if config.skip_bad_files else "raise"
    progress = _Progress(config.progress, config.log_interval, len(files))
    sink = _Sink(writers, stats, provenance, progress, split_sentences=config.split_sentences)
    common = {
        "split_sentences": config.split_sentences,
        "keep_newlines": config.keep_newlines,
        "append_eod": config.append_eod,
        "dtype": dtype.str,
    }
    workers = _Workers(config.workers, tokenizer) if config.workers > 1 else None

    def execute(task: dict[str, Any], lines: Any) -> Iterator[tuple[dict[str, Any], Any]]:
        if workers is None:
            yield run_task(task, tokenizer), lines
        else:
            yield from workers.submit(task, lines)

    def drain() -> Iterator[tuple[dict[str, Any], Any]]:
        return iter(()) if workers is None else workers.drain()

    start = time.perf_counter()
    try:
        for file_index in range(done_files, len(files)):
            path = files[file_index]
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
                for chunk in _iter_chunks(docs, config.json_keys, config.chunk_bytes):
                    texts, lines, empty = _group_by_key(chunk, config.json_keys)
                    for key, n in empty.items():
                        if n:
                            stats[key].skip("empty_text", n)
                    if not any(texts.values()):
                        continue
                    for done in execute({**common, "texts": texts}, lines):
                        file_docs += take(done)
                for done in drain():
                    file_docs += take(done)
            elif resolved is not None:
                fmt, language = resolved
                parser = JsonLinesParser(os.fspath(path), config.json_keys, fmt, language, filters)
                blocks = 0
                try:
                    with open_decompressed(path) as reader:
                        for first_line, block in line_blocks(reader, config.chunk_bytes):
                            blocks += 1
                            task = {
                                **common,
                                "parser": parser,
                                "first_line": first_line,
                                "block": block,
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
                    finish_file(path, file_stats, bad, empty=blocks == 0)
            skipped_whole = file_stats.empty_files or any(file_stats.files_skipped.values())
            if file_docs == 0 and not skipped_whole:
                log.warning("%s: no documents written from this file", path)
            read_stats.merge(file_stats)
            inputs[file_index]["documents"] = file_stats.documents
            inputs[file_index]["sha256"] = _sha256(path)
            _save_state(
                work, fingerprint, file_index + 1, stats, read_stats, inputs, provenance, writers
            )
        seconds = time.perf_counter() - start
        for w in writers.values():
            w.close()
    except BaseException:
        if not state_file.exists():
            # nothing finished that --resume could reuse: leave no trace of this build
            for w in writers.values():
                w.abort()
            for prefix in outputs.values():
                bin_tmp_path(prefix).unlink(missing_ok=True)
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        for w in writers.values():
            w.abort()  # no-op for closed writers; keeps .bin.tmp of unfinished ones for --resume
        progress.close()
        if workers is not None:
            workers.close()

    read_dict = read_stats.to_dict()
    for key, prefix in outputs.items():
        prov = np.concatenate(provenance[key]) if provenance[key] else np.zeros((0, 2), np.int64)
        tmp = Path(str(provenance_path(prefix)) + ".tmp.npy")
        np.save(tmp, prov)
        os.replace(tmp, provenance_path(prefix))
        s = stats[key]
        write_json_atomic(
            manifest_path(prefix),
            {
                "dataprep_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "prefix": os.path.basename(prefix),
                "json_key": key,
                "level": config.level,
                "dtype": dtype.name,
                "append_eod": config.append_eod,
                "documents": s.documents,
                "sequences": s.sequences,
                "tokens": s.tokens,
                "max_token_id": s.max_token_id,
                "skipped_documents": dict(sorted(s.skipped.items())),
                "read": read_dict,
                "inputs": [{k: v for k, v in i.items() if k != "mtime_ns"} for i in inputs],
                "tokenizer": tokenizer.describe(),
                "filters": {k: list(v) for k, v in config.filters},
                "languages": list(config.languages) if config.languages else None,
                "provenance": provenance_path(prefix).name,
            },
        )
    shutil.rmtree(work, ignore_errors=True)
    return BuildSummary(
        outputs=outputs,
        stats=stats,
        read=read_dict,
        inputs=inputs,
        seconds=seconds,
        text_bytes=sink.text_bytes,
    )


def _save_state(
    work: Path,
    fingerprint: str,
    done_files: int,
    stats: dict[str, KeyStats],
    read_stats,
    inputs: list[dict[str, Any]],
    provenance: dict[str, list[np.ndarray]],
    writers,
) -> None:
    """Checkpoint after a finished input file: writers flushed, arrays saved, state.json last."""
    for key, w in writers.items():
        w.state().save(work / f"{key}.writer.npz")
        prov = np.concatenate(provenance[key]) if provenance[key] else np.zeros((0, 2), np.int64)
        provenance[key] = [prov]
        np.save(work / f"{key}.provenance.tmp.npy", prov)
        os.replace(work / f"{key}.provenance.tmp.npy", work / f"{key}.provenance.npy")
    write_json_atomic(
        work / "state.json",
        {
            "fingerprint": fingerprint,
            "done_files": done_files,
            "stats": {k: dataclasses.asdict(v) for k, v in stats.items()},
            "read": read_stats.to_dict(),
            "inputs": inputs,
        },
    )
