"""The summary of a build printed at the end (`BuildSummary`): inputs, records, text, and per
output dataset its counts and skips; after a resume, this run's figures and the whole build's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dataprep.build.config import KeyStats
from dataprep.build.plan import InputFile
from dataprep.readers import ReadStats

if TYPE_CHECKING:
    from dataprep.build.state import BuildState


@dataclass
class BuildSummary:
    outputs: dict[str, str]  # key -> dataset prefix
    stats: dict[str, KeyStats]
    read: ReadStats  # of every input, earlier runs included
    inputs: list[InputFile]
    seconds: float  # this run's wall time
    text_bytes: int  # text tokenized in this run
    # --resume: what earlier runs had finished (0 files: a build in one run)
    resumed_files: int = 0
    earlier_records: int = 0
    earlier_text_bytes: int = 0
    earlier_tokens: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        outputs: dict[str, str],
        stats: dict[str, KeyStats],
        build: BuildState,
        seconds: float,
        text_bytes: int,
        resumed_files: int,
    ) -> BuildSummary:
        """The summary of a finished build whose state is `build`."""
        return cls(
            outputs=outputs,
            stats=stats,
            read=build.read,
            inputs=build.inputs,
            seconds=seconds,
            text_bytes=text_bytes,
            resumed_files=resumed_files,
            earlier_records=build.earlier_records,
            earlier_text_bytes=build.earlier_text_bytes,
            earlier_tokens=build.earlier_tokens,
        )

    def format(self) -> str:
        lines = []
        mb = self.text_bytes / 1e6
        rate = mb / self.seconds if self.seconds > 0 else float("inf")
        records = self.read.documents
        if self.resumed_files:
            # this run's figures and rates, then the whole build's totals (no rate: it spans runs)
            run_records = records - self.earlier_records
            run_tokens = sum(s.tokens for s in self.stats.values()) - sum(
                self.earlier_tokens.values()
            )
            tok_rate = run_tokens / self.seconds if self.seconds > 0 else float("inf")
            lines.append(
                f"this run: {len(self.inputs) - self.resumed_files} of {len(self.inputs)} input "
                f"file(s), {run_records:,} records, {mb:,.1f} MB of text, {run_tokens:,} tokens "
                f"in {self.seconds:,.1f} s ({rate:,.2f} MB/s, {tok_rate:,.0f} tokens/s)"
            )
            lines.append(
                f"whole build (resumed after {self.resumed_files} finished file(s)): "
                f"{len(self.inputs)} input file(s), {records:,} records, "
                f"{(self.text_bytes + self.earlier_text_bytes) / 1e6:,.1f} MB of text"
            )
            for key, prefix in self.outputs.items():
                s = self.stats[key]
                lines.append(
                    f"{prefix}.bin/.idx: {s.documents:,} documents, {s.sequences:,} sequences, "
                    f"{s.tokens:,} tokens, largest id {s.max_token_id}"
                )
                self._skips(lines, s)
            self._read_skips(lines)
            return "\n".join(lines)
        lines.append(
            f"read {len(self.inputs)} input file(s), {records:,} records, "
            f"{mb:,.1f} MB of text in {self.seconds:,.1f} s ({rate:,.2f} MB/s)"
        )
        for key, prefix in self.outputs.items():
            s = self.stats[key]
            tok_rate = s.tokens / self.seconds if self.seconds > 0 else float("inf")
            lines.append(
                f"{prefix}.bin/.idx: {s.documents:,} documents, {s.sequences:,} sequences, "
                f"{s.tokens:,} tokens ({tok_rate:,.0f} tokens/s), largest id {s.max_token_id}"
            )
            self._skips(lines, s)
        self._read_skips(lines)
        return "\n".join(lines)

    @staticmethod
    def _skips(lines: list[str], s: KeyStats) -> None:
        if s.skipped:
            reasons = ", ".join(f"{r}={n:,}" for r, n in sorted(s.skipped.items()))
            lines.append(f"  skipped documents: {reasons}")

    def _read_skips(self, lines: list[str]) -> None:
        if self.read.skipped:
            reasons = ", ".join(f"{r}={n:,}" for r, n in sorted(self.read.skipped.items()))
            lines.append(f"  skipped records: {reasons}")
        for reason, files in sorted(self.read.files_skipped.items()):
            lines.append(f"  skipped files ({reason}): {', '.join(files)}")
        if self.read.empty_files:
            lines.append(f"  empty input files: {', '.join(self.read.empty_files)}")
