"""The Ray executor (`build-index --executor ray`): one Ray task per part (an input file, or a
byte range of a large plain JSON Lines file), each running the local build's task function
(`read.process_file` + `encode.run_task`) into a partial dataset `{work}/parts/<part>/`; the
driver appends the partials to the sink in input order (`Sink.append_part`, the writer's
`add_index` merge), so the final `.bin/.idx`, counts and provenance are the local build's.

Faults: a task whose worker process dies is retried by Ray (`max_retries`); each attempt writes
to its own temporary directory, renamed to the part's name only when complete (`part.json` last),
so a half-written partial is never merged. A bad record comes back as the same ReadError a local
build raises (file:line). After the driver is killed, `--resume` truncates the output to the last
checkpointed file and reuses every finished partial. Inputs and the output directory must be on a
filesystem every Ray node sees at the same path. Ray is imported only here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.build.plan import Part, PartDone
from dataprep.errors import DataprepError, require_extra

log = logging.getLogger(__name__)

MAX_RETRIES = 3  # attempts after a task's worker process died
KEPT_WARNINGS = 50  # warnings a task hands back to the driver, which logs them


def _ray():
    require_extra("ray", "--executor ray", "ray")
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


def _file_stat(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def build_part(
    part: Part, config, common: dict[str, Any], filters, parts_dir: str, cwd: str
) -> dict:
    """The Ray task: read and tokenize one part into `{parts_dir}/{part.name}/` (one `.bin/.idx`
    and `.provenance.npy` per key, then `part.json` with the counts); returns part.json's content,
    or {"error": DataprepError} for bad input. Runs in the driver's working directory `cwd` (on
    the shared filesystem), so relative input and tokenizer paths, and the file names in messages,
    are the driver's."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    from dataprep.build import encode, read
    from dataprep.build.config import KeyStats
    from dataprep.build.sink import Progress, Sink
    from dataprep.fileio import save_npy_atomic, sha256_file, write_json_atomic
    from dataprep.indexed import IndexedDatasetWriter

    final = Path(parts_dir) / part.name
    tmp = Path(parts_dir) / f"{part.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir(parents=True)
    kept = _KeptWarnings()
    logger = logging.getLogger("dataprep")
    logger.addHandler(kept)
    writers: dict[str, Any] = {}
    try:
        tokenizer = encode.tokenizer_for(config.tokenizer)
        dtype = np.dtype(common["dtype"])
        writers = {key: IndexedDatasetWriter(tmp / key, dtype=dtype) for key in config.json_keys}
        stats = {key: KeyStats() for key in config.json_keys}
        provenance: dict[str, list[np.ndarray]] = {key: [] for key in config.json_keys}
        sink = Sink(
            writers,
            stats,
            provenance,
            Progress(False, 0, 1),
            split_sentences=config.split_sentences,
            keep_keys=bool(config.dedup),
        )

        def execute(task, lines):
            yield encode.run_task(task, tokenizer), lines

        try:
            read_stats, documents = read.process_file(
                part,
                config=config,
                common=common,
                filters=filters,
                execute=execute,
                drain=lambda: iter(()),
                sink=sink,
            )
        except DataprepError as e:
            return {"error": e}
        for key, w in writers.items():
            w.close()
            rows = provenance[key]
            save_npy_atomic(
                tmp / f"{key}.provenance.npy",
                np.concatenate(rows) if rows else np.zeros((0, 2), np.int64),
            )
            if config.dedup:
                from dataprep.dedup import concat_keys

                keys = concat_keys(sink.kept_keys[key], config.dedup)
                np.savez(tmp / f"{key}.dedup.npz", **keys)
        result = {
            "spec": part.spec(),
            "file_stat": _file_stat(part.path),
            "stats": {key: dataclasses.asdict(s) for key, s in stats.items()},
            "read": read_stats.to_dict(),
            "documents": documents,
            "text_bytes": sink.text_bytes,
            "sha256": sha256_file(part.path) if part.last and part.start == 0 else None,
            "warnings": kept.messages,
        }
        write_json_atomic(tmp / "part.json", result)
        shutil.rmtree(final, ignore_errors=True)  # what an earlier, killed attempt left
        os.rename(tmp, final)
        return result
    finally:
        logger.removeHandler(kept)
        for w in writers.values():
            w.abort()  # no-op once closed
        shutil.rmtree(tmp, ignore_errors=True)


class RayExecutor:
    """Runs parts as Ray tasks and merges their partial datasets into the sink in input order."""

    def __init__(self, config, tokenizer, common, filters, *, work: Path, fingerprint: str):
        ray = _ray()
        self.config, self.common, self.filters = config, common, filters
        self.parts_dir = (work / "parts").resolve()
        self.fingerprint = fingerprint
        self.started = False
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "include_dashboard": False,
                "logging_level": logging.WARNING,
                "log_to_driver": False,
            }
            if config.ray_address:
                ray.init(address=config.ray_address, **options)
            else:
                with _without_token_auth_notice():
                    ray.init(num_cpus=config.workers, **options)
            self.started = True
        self.task = ray.remote(max_retries=MAX_RETRIES)(build_part)

    def _finished(self, part: Part) -> dict | None:
        """The result of a partial a killed driver left complete, if it is still valid."""
        path = self.parts_dir / part.name / "part.json"
        if not path.exists():
            return None
        result = json.loads(path.read_text())
        if result["spec"] != part.spec() or result["file_stat"] != _file_stat(part.path):
            return None
        return result

    def run(self, parts: list[Part], sink, *, input_offset: int = 0) -> Iterator[PartDone]:
        from dataprep.readers import ReadStats

        ray = _ray()
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        (self.parts_dir / "fingerprint").write_text(self.fingerprint)
        results: dict[str, Any] = {}
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
                    part, self.config, self.common, self.filters, str(self.parts_dir), os.getcwd()
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
                while not isinstance(result, dict) and result in pending:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                    for ref in ready:
                        pending.discard(ref)
                        finished += sizes[ref]
                    sink.progress.input_position(finished)
                if not isinstance(result, dict):
                    result = ray.get(result)
                if "error" in result:
                    raise result["error"]
                part_dir = self.parts_dir / part.name
                documents = sink.append_part(part.file_index, part_dir, result)
                yield PartDone(
                    part,
                    ReadStats.from_dict(result["read"]),
                    documents,
                    sha256=result["sha256"],
                    warnings=result["warnings"],
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
