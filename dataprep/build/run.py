"""`build_index(config)`: plan the inputs, prepare or resume the state, run every input file
through the executor into the sink, then write the manifests and provenance."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from dataprep import __version__
from dataprep.build.config import BuildConfig, BuildSummary, KeyStats
from dataprep.build.executor_local import LocalExecutor
from dataprep.build.plan import describe_inputs, existing_outputs, plan_parts
from dataprep.build.sink import Progress, Sink
from dataprep.build.state import save_state
from dataprep.errors import UsageError
from dataprep.fileio import save_npy_atomic, sha256_file, write_json_atomic
from dataprep.manifest import manifest_path, provenance_path

log = logging.getLogger(__name__)


def build_index(config: BuildConfig) -> BuildSummary:
    """Run a whole build; raises DataprepError subclasses for user mistakes and bad data."""
    from dataprep.indexed import IndexedDatasetWriter
    from dataprep.indexed.format import optimal_dtype
    from dataprep.indexed.writer import WriterState, bin_tmp_path
    from dataprep.readers import ReadStats, expand_inputs, normalize_filters
    from dataprep.tokenizers import load_tokenizer

    files = expand_inputs(list(config.inputs))
    tokenizer = load_tokenizer(config.tokenizer)
    if config.append_eod and tokenizer.eod_id is None:
        raise UsageError(f"--append-eod: tokenizer {tokenizer.spec!r} has no end-of-document token")
    dtype = np.dtype(optimal_dtype(tokenizer.vocab_size))
    outputs = config.output_prefixes()
    out_dir = Path(config.output_prefix).parent
    out_dir.mkdir(parents=True, exist_ok=True)

    inputs = describe_inputs(files)
    fingerprint = config.fingerprint(inputs, tokenizer.identity)
    work = config.work_dir
    state_file = work / "state.json"

    existing = existing_outputs(list(outputs.values()))
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
    parts_fingerprint = work / "parts" / "fingerprint"  # a Ray build killed before any checkpoint
    interrupted = state_file.exists() or any(work.glob("parts/*/part.json"))
    if work.exists() and not config.resume:
        if interrupted and not config.overwrite:
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
    earlier_text_bytes = 0
    if config.resume:
        if not state_file.exists():
            if parts_fingerprint.exists() and parts_fingerprint.read_text() == fingerprint:
                state = {"fingerprint": fingerprint, "done_files": 0, "inputs": []}
            else:
                raise UsageError(f"--resume: no interrupted build found at {work}")
        else:
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
        if "stats" in state:  # else killed before the first checkpoint: start from nothing
            for key in config.json_keys:
                stats[key] = KeyStats(**state["stats"][key])
                provenance[key] = [np.load(work / f"{key}.provenance.npy")]
                writer_states[key] = WriterState.load(work / f"{key}.writer.npz")
            read_stats = ReadStats.from_dict(state["read"])
            earlier_text_bytes = state.get("text_bytes", 0)
            inputs[:done_files] = state["inputs"][:done_files]
        log.info("resuming: %d of %d input files already done", done_files, len(files))
    work.mkdir(parents=True, exist_ok=True)
    earlier_records = read_stats.documents
    earlier_tokens = {key: s.tokens for key, s in stats.items()}

    writers = {
        key: IndexedDatasetWriter(
            prefix, dtype=dtype, keep_partial=True, resume_from=writer_states[key]
        )
        for key, prefix in outputs.items()
    }
    filters = normalize_filters({k: v for k, v in config.filters})
    sizes = [i["size"] for i in inputs]
    progress = Progress(
        config.progress,
        config.log_interval,
        len(files),
        total_bytes=sum(sizes),
        done_bytes=sum(sizes[:done_files]),
        done_files=done_files,
    )
    dedup = None
    if config.dedup:
        from dataprep.dedup import Deduplicator

        dedup = {key: Deduplicator(config.dedup, config.dedup_threshold) for key in outputs}
        if done_files:
            for key, d in dedup.items():
                d.load(work / f"{key}.dedup.npz")
    sink = Sink(
        writers,
        stats,
        provenance,
        progress,
        split_sentences=config.split_sentences,
        dedup=dedup,
    )
    common = {
        "dedup": config.dedup,
        "split_sentences": config.split_sentences,
        "keep_newlines": config.keep_newlines,
        "append_eod": config.append_eod,
        "dtype": dtype.str,
    }
    parts = plan_parts(
        files,
        sizes,
        done_files,
        split_bytes=config.ray_split_bytes if config.executor == "ray" else 0,
        config=config,
    )
    executor = None
    start = time.perf_counter()
    try:
        if config.executor == "ray":
            from dataprep.build.executor_ray import RayExecutor

            executor = RayExecutor(
                config, tokenizer, common, filters, work=work, fingerprint=fingerprint
            )
        else:
            executor = LocalExecutor(config, tokenizer, common, filters)
        file_stats, file_docs = ReadStats(), 0
        for done in executor.run(parts, sink, input_offset=sum(sizes[:done_files])):
            file_stats.merge(done.read)
            file_docs += done.documents
            for message in done.warnings:
                log.warning("%s", message)
            if not done.part.last:
                continue
            file_index, path = done.part.file_index, files[done.part.file_index]
            skipped_whole = file_stats.empty_files or any(file_stats.files_skipped.values())
            if file_docs == 0 and not skipped_whole:
                log.warning("%s: no documents written from this file", path)
            read_stats.merge(file_stats)
            progress.file_done(sum(sizes[: file_index + 1]))
            inputs[file_index]["documents"] = file_stats.documents
            inputs[file_index]["sha256"] = done.sha256 or sha256_file(path)
            save_state(
                work,
                fingerprint,
                file_index + 1,
                stats,
                read_stats,
                inputs,
                provenance,
                writers,
                text_bytes=earlier_text_bytes + sink.text_bytes,
            )
            for key, d in (dedup or {}).items():
                d.save(work / f"{key}.dedup.npz")
            file_stats, file_docs = ReadStats(), 0
        seconds = time.perf_counter() - start
        empty = [key for key, s in stats.items() if s.documents == 0]
        if empty and not config.allow_empty:
            from dataprep.build.empty import EmptyResultError, explain_empty

            state_file.unlink(
                missing_ok=True
            )  # nothing worth resuming: the cleanup below removes everything
            key = empty[0]
            raise EmptyResultError(
                explain_empty(key, files, config, read_stats.to_dict(), stats[key].skipped)
            )
        for w in writers.values():
            w.close()
    except BaseException as e:
        parts_kept = isinstance(e, KeyboardInterrupt) and any(work.glob("parts/*/part.json"))
        if not state_file.exists() and not parts_kept:
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
        if executor is not None:
            executor.close()

    read_dict = read_stats.to_dict()
    for key, prefix in outputs.items():
        prov = np.concatenate(provenance[key]) if provenance[key] else np.zeros((0, 2), np.int64)
        save_npy_atomic(provenance_path(prefix), prov)
        s = stats[key]
        extra = {}
        if dedup is not None:
            from dataprep.manifest import duplicates_path

            save_npy_atomic(duplicates_path(prefix), dedup[key].pairs_array())
            extra["dedup"] = dedup[key].describe(inputs, duplicates_path(prefix).name)
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
                **extra,
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
        resumed_files=done_files,
        earlier_records=earlier_records,
        earlier_text_bytes=earlier_text_bytes,
        earlier_tokens=earlier_tokens,
    )
