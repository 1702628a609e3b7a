"""Build configuration: `BuildConfig` (validated at construction) and the per-key counts
(`KeyStats`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataprep.errors import ConfigError


def literal(value: Any) -> str:
    """`str(value)` made safe to put in a ConfigError template (braces doubled)."""
    return str(value).replace("{", "{{").replace("}", "}}")


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
    allow_empty: bool = False  # write a dataset with no documents instead of failing
    dedup: str | None = None  # None, "exact" or "minhash" (dataprep.dedup)
    dedup_threshold: float = 0.8  # minhash: Jaccard of word 5-grams at which a document is a copy
    executor: str = "local"  # "local" (this process + a pool) or "ray"
    ray_address: str | None = None  # None: start a local Ray; else ray.init(address=...)
    ray_split_bytes: int = 64 << 20  # Ray: plain JSON Lines files above this become byte ranges

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("no {inputs} given", "inputs")
        if not self.json_keys:
            raise ConfigError("{json_keys} needs at least one key", "json_keys")
        if len(set(self.json_keys)) != len(self.json_keys):
            keys = literal(list(self.json_keys))
            raise ConfigError(f"{{json_keys}} has duplicates: {keys}", "json_keys")
        if self.workers < 1:
            raise ConfigError(f"{{workers}} must be >= 1, got {self.workers}", "workers")
        if self.dedup not in (None, "exact", "minhash"):
            dedup = literal(repr(self.dedup))
            raise ConfigError(f"{{dedup}} must be exact or minhash, got {dedup}", "dedup")
        if not 0 < self.dedup_threshold <= 1:
            raise ConfigError(
                f"{{dedup_threshold}} must be in (0, 1], got {self.dedup_threshold}",
                "dedup_threshold",
            )
        if self.executor not in ("local", "ray"):
            executor = literal(repr(self.executor))
            raise ConfigError(f"{{executor}} must be local or ray, got {executor}", "executor")
        if self.ray_address is not None and self.executor != "ray":
            raise ConfigError("{ray_address} needs {executor} ray", "ray_address", "executor")
        if self.overwrite and self.resume:
            raise ConfigError(
                "{overwrite} and {resume} contradict each other; pick one", "overwrite", "resume"
            )

    @property
    def level(self) -> str:
        return "sentence" if self.split_sentences else "document"

    def output_prefixes(self) -> dict[str, str]:
        return {key: f"{self.output_prefix}_{key}_{self.level}" for key in self.json_keys}

    @property
    def work_dir(self) -> Path:
        return Path(self.output_prefix + ".dataprep-build")

    def fingerprint(self, input_paths: Sequence[str], tokenizer_identity: str) -> str:
        """What must match for a resumed build to continue an earlier one."""
        keep = {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k
            not in (
                "overwrite",
                "resume",
                "workers",
                "progress",
                "log_interval",
                "allow_empty",
                "executor",
                "ray_address",
                "ray_split_bytes",
            )
        }
        keep.update(inputs=list(input_paths), tokenizer_identity=tokenizer_identity)
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

    def add(self, other: KeyStats) -> None:
        """Add the counts of another part."""
        self.documents += other.documents
        self.sequences += other.sequences
        self.tokens += other.tokens
        self.max_token_id = max(self.max_token_id, other.max_token_id)
        for reason, n in other.skipped.items():
            self.skip(reason, n)
