"""Resume state of a build, saved after every finished input file and loaded by `resume`.

It lives in `{output_prefix}.dataprep-build/`: `state.json` (the configuration's fingerprint, the
files done, the inputs with their sha256, the read counters and text bytes so far, per-key counts)
and, per key, the writer state `{key}.writer.npz`, the provenance so far `{key}.provenance.npy`
and, with dedup, the de-duplicator `{key}.dedup.npz`; `state.json` is written last. A Ray build
also keeps its finished partials in `parts/` (see executor_ray). This module is the only one that
knows the layout, apart from `parts/`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.build.config import BuildConfig, KeyStats, literal
from dataprep.build.output import KeyCheckpoint, KeyOutput
from dataprep.build.plan import InputFile
from dataprep.errors import ConfigError
from dataprep.fileio import save_npy_atomic, write_json_atomic
from dataprep.indexed.partial import WriterState
from dataprep.manifest import manifest_path, provenance_path
from dataprep.readers import ReadStats

log = logging.getLogger(__name__)

STATE = "state.json"


@dataclass(frozen=True)
class _Saved:
    """The content of `state.json`."""

    fingerprint: str
    done_files: int
    inputs: list[dict[str, Any]]  # InputFile.to_json() of every input
    stats: dict[str, dict[str, Any]] | None = None  # key -> KeyStats; None: not checkpointed
    read: dict[str, Any] | None = None  # ReadStats.to_dict() of the finished files
    text_bytes: int = 0  # text tokenized so far, over all runs


@dataclass
class BuildState:
    """Where a build stands: what earlier runs finished, updated as this run finishes files."""

    fingerprint: str  # what must match for resume (BuildConfig.fingerprint)
    inputs: list[InputFile]  # the plan's; finished ones also have documents and sha256
    done_files: int = 0  # input files finished (by every run so far)
    read: ReadStats = field(default_factory=ReadStats)  # of the finished files
    earlier_records: int = 0  # records read by earlier runs
    earlier_text_bytes: int = 0  # text tokenized by earlier runs
    keys: dict[str, KeyCheckpoint] | None = None  # per key, where the outputs were resumed from

    @property
    def earlier_tokens(self) -> dict[str, int]:
        return {key: c.stats.tokens for key, c in (self.keys or {}).items()}

    def file_done(self, file_index: int, read: ReadStats, sha256: str) -> None:
        """Input `file_index` is finished: its counters join the build's."""
        self.read.merge(read)
        finished = self.inputs[file_index]
        self.inputs[file_index] = dataclasses.replace(
            finished, documents=read.documents, sha256=sha256
        )
        self.done_files = file_index + 1

    def save(self, work: Path, outputs: Mapping[str, KeyOutput], text_bytes: int) -> None:
        """Checkpoint after a finished input file: every output flushed and its arrays saved,
        `state.json` last. `text_bytes`: text tokenized by this run."""
        stats = {}
        for key, output in outputs.items():
            checkpoint = output.checkpoint()
            checkpoint.writer.save(work / f"{key}.writer.npz")
            save_npy_atomic(work / f"{key}.provenance.npy", checkpoint.provenance)
            if checkpoint.dedup is not None:
                checkpoint.dedup.save(work / f"{key}.dedup.npz")
            stats[key] = dataclasses.asdict(checkpoint.stats)
        saved = _Saved(
            self.fingerprint,
            self.done_files,
            [i.to_json() for i in self.inputs],
            stats,
            self.read.to_dict(),
            self.earlier_text_bytes + text_bytes,
        )
        write_json_atomic(work / STATE, dataclasses.asdict(saved))


def prepare(config: BuildConfig, prefixes: Sequence[str]) -> None:
    """Before anything is written: refuse existing outputs (unless `overwrite`) and a leftover
    interrupted build (unless `resume` or `overwrite`); remove what `overwrite` replaces."""
    from dataprep.build.plan import existing_outputs

    work = config.work_dir
    existing = existing_outputs(list(prefixes))
    if existing and not config.overwrite:
        raise ConfigError(
            f"output already exists: {literal(', '.join(existing))}; "
            "pass {overwrite} to replace it",
            "overwrite",
        )
    if existing and config.overwrite and not config.resume:
        # an interrupted overwrite must not leave the old dataset beside a new manifest
        for prefix in prefixes:
            for path in (prefix + ".bin", prefix + ".idx"):
                Path(path).unlink(missing_ok=True)
            manifest_path(prefix).unlink(missing_ok=True)
            provenance_path(prefix).unlink(missing_ok=True)
    if work.exists() and not config.resume:
        if resumable(work) and not config.overwrite:
            raise ConfigError(
                f"an interrupted build left {literal(work)}; pass {{resume}} to continue it "
                "or {overwrite} to start again",
                "resume",
                "overwrite",
            )
        shutil.rmtree(work)


def resumable(work: Path) -> bool:
    """Whether `work` holds something a resumed build would reuse."""
    return (work / STATE).exists() or any(work.glob("parts/*/part.json"))


def checkpointed(work: Path) -> bool:
    """Whether some input file was finished and checkpointed."""
    return (work / STATE).exists()


def forget(work: Path) -> None:
    """Drop the checkpoint (nothing worth resuming)."""
    (work / STATE).unlink(missing_ok=True)


def load(
    config: BuildConfig,
    fingerprint: str,
    inputs: list[InputFile],
    new_dedup: Callable[[], Any] | None = None,
) -> BuildState:
    """The state to start from: nothing done, or with `resume` what the interrupted build saved
    (checked against `fingerprint` and the inputs' sizes and times). `new_dedup` makes the
    de-duplicator a key's saved state is loaded into."""
    work = config.work_dir
    if not config.resume:
        return BuildState(fingerprint, inputs)
    state_file = work / STATE
    if state_file.exists():
        saved = _Saved(**json.loads(state_file.read_text()))
    elif (work / "parts" / "fingerprint").exists() and (
        (work / "parts" / "fingerprint").read_text() == fingerprint
    ):  # a Ray build killed before its first checkpoint: its finished partials are reused
        saved = _Saved(fingerprint, done_files=0, inputs=[])
    else:
        raise ConfigError(f"{{resume}}: no interrupted build found at {literal(work)}", "resume")
    if saved.fingerprint != fingerprint:
        raise ConfigError(
            f"{{resume}}: {literal(work)} belongs to a build with other inputs, flags or "
            "tokenizer; rerun with the same arguments, or use {overwrite} to start again",
            "resume",
            "overwrite",
        )
    done_files = saved.done_files
    finished = [InputFile.from_json(i) for i in saved.inputs[:done_files]]
    for old, new in zip(finished, inputs, strict=False):
        if (old.size, old.mtime_ns) != (new.size, new.mtime_ns):
            raise ConfigError(
                f"{{resume}}: {literal(new.path)} changed since it was processed; "
                "use {overwrite} to start again",
                "resume",
                "overwrite",
            )
    state = BuildState(fingerprint, inputs, done_files)
    if saved.stats is not None:  # else killed before the first checkpoint: start from nothing
        state.keys = {}
        for key in config.json_keys:
            dedup = None
            if new_dedup is not None:
                dedup = new_dedup()
                dedup.load(work / f"{key}.dedup.npz")
            state.keys[key] = KeyCheckpoint(
                stats=KeyStats(**saved.stats[key]),
                provenance=np.load(work / f"{key}.provenance.npy"),
                writer=WriterState.load(work / f"{key}.writer.npz"),
                dedup=dedup,
            )
        state.read = ReadStats.from_dict(saved.read)
        state.earlier_records = state.read.documents
        state.earlier_text_bytes = saved.text_bytes
        inputs[:done_files] = finished
    log.info("resuming: %d of %d input files already done", done_files, len(inputs))
    return state
