"""Batching of concurrent requests for `dataprep serve`: one thread owns the model.

Requests hand their rows (`trainer.inference.generate.Row`) to `Batcher.submit` and get one
`concurrent.futures.Future` per row. The thread takes the first waiting row, then every row that
arrives within `wait_ms` (or is already waiting because the model was busy), up to
`max_batch_size` rows, and runs them as one batch with `generate_rows`, in which every row gets
what it would get alone. A row whose client has gone (`Row.cancelled`) before its batch starts is
dropped, and stops at its next token once started, so its slot is not spent on nobody. If a batch
fails as a whole (a bug, not a bad request: the routes check requests first), each of its rows is
retried alone so that one row's error reaches only its own request.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable

from trainer.inference.generate import Row, RowResult

log = logging.getLogger(__name__)

RunRows = Callable[[list[Row]], list[RowResult]]


class Cancelled(Exception):
    """The row's client went away before its batch started."""


class Batcher:
    def __init__(self, run_rows: RunRows, *, max_batch_size: int = 8, wait_ms: float = 5.0):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.run_rows, self.max_batch_size, self.wait_s = run_rows, max_batch_size, wait_ms / 1e3
        self.pending: queue.Queue[tuple[Row, concurrent.futures.Future]] = queue.Queue()
        self.batches = 0  # batches run, their sizes and the rows cut short by their clients:
        self.sizes: list[int] = []  # what the tests and the benchmark read
        self.cancelled = 0
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, rows: list[Row]) -> list[concurrent.futures.Future]:
        futures = []
        for row in rows:
            future: concurrent.futures.Future = concurrent.futures.Future()
            self.pending.put((row, future))
            futures.append(future)
        return futures

    def _take(self) -> list[tuple[Row, concurrent.futures.Future]]:
        batch = [self.pending.get()]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch_size:
            left = deadline - time.monotonic()
            try:
                item = self.pending.get(timeout=left) if left > 0 else self.pending.get_nowait()
            except queue.Empty:
                break
            batch.append(item)
        return batch

    def _loop(self) -> None:
        while True:
            batch = []
            for row, future in self._take():
                if row.cancelled is not None and row.cancelled():
                    self.cancelled += 1
                    future.set_exception(Cancelled())
                elif future.set_running_or_notify_cancel():
                    batch.append((row, future))
            if batch:
                self._run(batch)

    def _run(self, batch: list[tuple[Row, concurrent.futures.Future]]) -> None:
        self.batches += 1
        self.sizes.append(len(batch))
        try:
            results = self.run_rows([row for row, _ in batch])
        except Exception as e:
            if len(batch) == 1:
                log.debug("a row failed", exc_info=True)
                batch[0][1].set_exception(e)
                return
            for item in batch:  # isolate the row that fails
                self._run([item])
            return
        for (_, future), result in zip(batch, results, strict=True):
            self.cancelled += result.finish_reason == "cancelled"
            future.set_result(result)
