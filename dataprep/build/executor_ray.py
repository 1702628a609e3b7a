"""The Ray executor (`build-index --executor ray`): one Ray task per part (an input file, or a
byte range of a large plain JSON Lines file), each running the local build's reading and task
function (`read.process_file` + `encode.run_task`, the same typed tasks) into a partial dataset
`{work}/parts/<part>/` (`output.KeyOutput.save_part`); the driver appends the partials to the sink
in input order (`Sink.append_part`, the writer's `add_index` merge), so the final `.bin/.idx`,
counts and provenance are the local build's.

Faults: a task whose worker process dies is retried by Ray (`max_retries`); each attempt writes
to its own temporary directory, renamed to the part's name only when complete (`part.json` last),
so a half-written partial is never merged. A bad record comes back as the same ReadError a local
build raises (file:line). After the driver is killed, `--resume` truncates the output to the last
checkpointed file and reuses every finished partial. Inputs and the output directory must be on a
filesystem every Ray node sees at the same path. Ray is imported only here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.build.config import BuildConfig
from dataprep.build.plan import Part, PartDone
from dataprep.build.sink import Sink
from dataprep.build.tasks import PartFailed, PartResult, TaskOptions
from dataprep.errors import ConfigError, DataprepError

log = logging.getLogger(__name__)

MAX_RETRIES = 3  # attempts after a task's worker process died
KEPT_WARNINGS = 50  # warnings a task hands back to the driver, which logs them


def _ray():
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            "{executor} ray needs the ray package: pip install 'dataprep[ray]'", "executor"
        )
    import ray

    return ray


class _DropTokenAuthNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled for this Ray cluster" not in record.getMessage()


@contextlib.contextmanager
def _without_token_auth_notice():
    """Ray 2.5x warns, on every local `ray.init()`, that it turned on token authentication (its
    default, kept: the cluster we start lives as long as the build and only we connect to it).
    The notice says nothing about the build, so it is dropped; every other Ray warning stays."""
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    notice = _DropTokenAuthNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


class _KeptWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < KEPT_WARNINGS:
            self.messages.append(record.getMessage())


def _file_stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def build_part(
    part: Part,
    config: BuildConfig,
    options: TaskOptions,
    filters,
    parts_dir: str,
    cwd: str,
) -> PartResult | PartFailed:
    """The Ray task: read and tokenize one part into `{parts_dir}/{part.name}/` (one partial
    dataset per key, `output.KeyOutput.save_part`, then `part.json`); returns the PartResult, or
    PartFailed for bad input. Runs in the driver's working directory `cwd` (on the shared
    filesystem), so relative input and tokenizer paths, and the file names in messages, are the
    driver's."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    from dataprep.build import encode, read
    from dataprep.build.output import KeyOutput
    from dataprep.build.progress import Progress
    from dataprep.fileio import sha256_file, write_json_atomic

    final = Path(parts_dir) / part.name
    tmp = Path(parts_dir) / f"{part.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir(parents=True)
    kept = _KeptWarnings()
    logger = logging.getLogger("dataprep")
    logger.addHandler(kept)
    outputs: dict[str, KeyOutput] = {}
    try:
        tokenizer = encode.tokenizer_for(config.tokenizer)
        for key in config.json_keys:
            outputs[key] = KeyOutput(
                key,
                tmp / key,
                dtype=np.dtype(options.dtype),
                split_sentences=options.split_sentences,
                collect_dedup_keys=bool(options.dedup),
            )
        sink = Sink(outputs, Progress(False, 0, 1))
        try:
            read_stats, documents = read.process_file(
                part,
                config=config,
                options=options,
                filters=filters,
                runner=read.InlineRunner(tokenizer),
                sink=sink,
            )
        except DataprepError as e:
            return PartFailed(e)
        for output in outputs.values():
            output.save_part(tmp, options.dedup)
        result = PartResult(
            spec=part.spec(),
            file_stat=_file_stat(part.path),
            stats={key: output.stats for key, output in outputs.items()},
            read=read_stats,
            documents=documents,
            text_bytes=sink.text_bytes,
            sha256=sha256_file(part.path) if part.last and part.start == 0 else None,
            warnings=tuple(kept.messages),
        )
        write_json_atomic(tmp / "part.json", result.to_json())
        shutil.rmtree(final, ignore_errors=True)  # what an earlier, killed attempt left
        os.rename(tmp, final)
        return result
    finally:
        logger.removeHandler(kept)
        for output in outputs.values():
            output.abort()  # no-op once closed
        shutil.rmtree(tmp, ignore_errors=True)


class RayExecutor:
    """Runs parts as Ray tasks and merges their partial datasets into the sink in input order."""

    def __init__(
        self, config: BuildConfig, options: TaskOptions, filters, *, work: Path, fingerprint: str
    ) -> None:
        ray = _ray()
        self.config, self.options, self.filters = config, options, filters
        self.parts_dir = (work / "parts").resolve()
        self.fingerprint = fingerprint
        self.started = False
        if not ray.is_initialized():
            init: dict[str, Any] = {
                "include_dashboard": False,
                "logging_level": logging.WARNING,
                "log_to_driver": False,
            }
            if config.ray_address:
                ray.init(address=config.ray_address, **init)
            else:
                with _without_token_auth_notice():
                    ray.init(num_cpus=config.workers, **init)
            self.started = True
        self.task = ray.remote(max_retries=MAX_RETRIES)(build_part)

    def _finished(self, part: Part) -> PartResult | None:
        """The result of a partial a killed driver left complete, if it is still valid."""
        path = self.parts_dir / part.name / "part.json"
        if not path.exists():
            return None
        result = PartResult.from_json(json.loads(path.read_text()))
        if result.spec != part.spec() or result.file_stat != _file_stat(part.path):
            return None
        return result

    def run(self, parts: list[Part], sink: Sink, *, input_offset: int = 0) -> Iterator[PartDone]:
        ray = _ray()
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        (self.parts_dir / "fingerprint").write_text(self.fingerprint)
        results: dict[str, PartResult | Any] = {}  # a result, or the ref of a running task
        sizes: dict[Any, int] = {}
        reused = 0
        for part in parts:
            done = self._finished(part)
            if done is not None:
                results[part.name] = done
                input_offset += part.size
                reused += 1
            else:
                ref = self.task.remote(
                    part, self.config, self.options, self.filters, str(self.parts_dir), os.getcwd()
                )
                results[part.name] = ref
                sizes[ref] = part.size
        if reused:
            log.info("reusing %d finished part(s) from %s", reused, self.parts_dir)
        pending = set(sizes)
        finished = input_offset
        try:
            for part in parts:
                result = results[part.name]
                while not isinstance(result, PartResult) and result in pending:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                    for ref in ready:
                        pending.discard(ref)
                        finished += sizes[ref]
                    sink.progress.input_position(finished)
                if not isinstance(result, PartResult):
                    result = ray.get(result)
                if isinstance(result, PartFailed):
                    raise result.error
                part_dir = self.parts_dir / part.name
                documents = sink.append_part(part.file_index, part_dir, result)
                yield PartDone(
                    part, result.read, documents, sha256=result.sha256, warnings=result.warnings
                )
                shutil.rmtree(part_dir, ignore_errors=True)  # merged (and checkpointed)
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or gone
                    pass

    def close(self) -> None:
        if self.started:
            _ray().shutdown()
