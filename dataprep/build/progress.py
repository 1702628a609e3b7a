"""The progress display of a build: one bar for the whole build (tqdm on a terminal), or periodic
log lines with percentage and ETA otherwise."""

from __future__ import annotations

import logging
import sys
import time

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

    def update(self, docs: int, tokens: int, nbytes: int) -> None:
        """Documents, tokens and text bytes just written."""
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
