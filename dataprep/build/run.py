"""`build_index(config)`: plan the inputs, prepare or resume the state, open the outputs, run every
input file through the executor into the sink, then finish the datasets and their sidecars."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from dataprep.build import state
from dataprep.build.config import BuildConfig
from dataprep.build.output import KeyOutput
from dataprep.build.plan import BuildPlan, Part, PartDone, make_plan, plan_parts
from dataprep.build.progress import Progress
from dataprep.build.read import task_options
from dataprep.build.sink import Sink
from dataprep.build.state import BuildState
from dataprep.build.summary import BuildSummary
from dataprep.fileio import sha256_file
from dataprep.manifest import Manifest

log = logging.getLogger(__name__)


def build_index(config: BuildConfig) -> BuildSummary:
    """Run a whole build; raises DataprepError subclasses for user mistakes and bad data."""
    plan = make_plan(config)
    work = config.work_dir
    work.parent.mkdir(parents=True, exist_ok=True)
    state.prepare(config, list(plan.prefixes.values()))
    resumed = state.load(config, plan.fingerprint, plan.inputs, _new_dedup(config))
    work.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, KeyOutput] = {}
    sizes, done = plan.sizes, resumed.done_files
    progress = Progress(
        config.progress,
        config.log_interval,
        len(plan.files),
        total_bytes=sum(sizes),
        done_bytes=sum(sizes[:done]),
        done_files=done,
    )
    sink = Sink(outputs, progress)
    split = config.ray_split_bytes if config.executor == "ray" else 0
    parts = plan_parts(plan.files, sizes, done, split_bytes=split, config=config)
    executor = None
    start = time.perf_counter()
    try:
        _open_outputs(config, plan, resumed, outputs)
        executor = _executor(config, plan)
        finished = executor.run(parts, sink, input_offset=sum(sizes[:done]))
        for file_index in _finished_files(finished, plan, resumed):
            progress.file_done(sum(sizes[: file_index + 1]))
            resumed.save(work, outputs, sink.text_bytes)
        _check_not_empty(config, plan, resumed, outputs)
        for output in outputs.values():
            output.close()
    except BaseException as e:
        _leave_no_trace_unless_resumable(work, outputs, e)
        raise
    finally:
        for output in outputs.values():
            output.abort()  # no-op for closed outputs; keeps .bin.tmp of unfinished ones
        progress.close()
        if executor is not None:
            executor.close()
    seconds = time.perf_counter() - start
    manifest = _manifest(config, plan, resumed)
    for output in outputs.values():
        output.finalize(manifest)
    shutil.rmtree(work, ignore_errors=True)
    stats = {key: output.stats for key, output in outputs.items()}
    return BuildSummary.of(plan.prefixes, stats, resumed, seconds, sink.text_bytes, done)


def _leave_no_trace_unless_resumable(
    work: Path, outputs: dict[str, KeyOutput], error: BaseException
) -> None:
    """After a failed build: remove everything unless a resumed build could reuse something (a
    checkpoint, or, when interrupted, a Ray build's finished partials)."""
    interrupted = isinstance(error, KeyboardInterrupt) and state.resumable(work)
    if not state.checkpointed(work) and not interrupted:
        for output in outputs.values():
            output.discard()
        shutil.rmtree(work, ignore_errors=True)


def _new_dedup(config: BuildConfig):
    """A factory of the build's de-duplicators, or None without dedup."""
    if not config.dedup:
        return None
    from dataprep.dedup import Deduplicator

    return lambda: Deduplicator(config.dedup, config.dedup_threshold)


def _open_outputs(
    config: BuildConfig, plan: BuildPlan, resumed: BuildState, outputs: dict[str, KeyOutput]
) -> None:
    """Open (or resume) every key's output into `outputs`, which the caller cleans up."""
    new_dedup = _new_dedup(config)
    for key, prefix in plan.prefixes.items():
        dedup = new_dedup() if new_dedup is not None and resumed.keys is None else None
        outputs[key] = KeyOutput(
            key,
            prefix,
            dtype=plan.dtype,
            split_sentences=config.split_sentences,
            keep_partial=True,
            resume=resumed.keys[key] if resumed.keys is not None else None,
            dedup=dedup,
        )


def _executor(config: BuildConfig, plan: BuildPlan):
    options = task_options(config, plan.dtype)
    if config.executor == "ray":
        from dataprep.build.executor_ray import RayExecutor

        return RayExecutor(
            config, options, plan.filters, work=config.work_dir, fingerprint=plan.fingerprint
        )
    from dataprep.build.executor_local import LocalExecutor

    return LocalExecutor(config, plan.tokenizer, options, plan.filters)


def _finished_files(finished: Iterator[PartDone], plan: BuildPlan, build: BuildState):
    """The indices of the input files as they finish (their last part done), each recorded in
    `build` first; logs the parts' warnings and the files that gave no document."""
    from dataprep.readers import ReadStats

    file_stats, file_docs = ReadStats(), 0
    for done in finished:
        file_stats.merge(done.read)
        file_docs += done.documents
        for message in done.warnings:
            log.warning("%s", message)
        part: Part = done.part
        if not part.last:
            continue
        path = plan.files[part.file_index]
        skipped_whole = file_stats.empty_files or any(file_stats.files_skipped.values())
        if file_docs == 0 and not skipped_whole:
            log.warning("%s: no documents written from this file", path)
        build.file_done(part.file_index, file_stats, done.sha256 or sha256_file(path))
        yield part.file_index
        file_stats, file_docs = ReadStats(), 0


def _check_not_empty(
    config: BuildConfig, plan: BuildPlan, build: BuildState, outputs: dict[str, KeyOutput]
) -> None:
    """EmptyResultError naming what removed everything, unless `allow_empty`."""
    empty = [key for key, output in outputs.items() if output.stats.documents == 0]
    if empty and not config.allow_empty:
        from dataprep.build.empty import empty_result_error

        state.forget(config.work_dir)  # nothing worth resuming: the cleanup removes everything
        key = empty[0]
        skipped = outputs[key].stats.skipped
        raise empty_result_error(key, plan.files, config, build.read, skipped)


def _manifest(config: BuildConfig, plan: BuildPlan, build: BuildState) -> Manifest:
    """What every key's manifest shares (each output fills in its own name and counts)."""
    return Manifest(
        dtype=plan.dtype.name,
        level=config.level,
        append_eod=config.append_eod,
        read=build.read.to_dict(),
        inputs=[i.to_json(mtime=False) for i in build.inputs],
        tokenizer=plan.tokenizer.describe(),
        filters={k: list(v) for k, v in config.filters},
        languages=list(config.languages) if config.languages else None,
    )
