"""The local executor: parts are read one after another in this process and their tasks
(`tasks.BlockTask` / `TextTask`) are parsed and tokenized by a pool of processes (`LocalPool`: one
pipe per worker, results collected in submission order, so the output does not depend on the
number of workers), written straight into the sink. The Ray executor (`executor_ray`) runs the
same reading and task function (`read.process_file` with `encode.run_task`) on a cluster instead
and merges its partial datasets into the same sink."""

from __future__ import annotations

import collections
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Iterator

from dataprep.build import encode, read
from dataprep.build.config import BuildConfig
from dataprep.build.encode import run_task
from dataprep.build.plan import Part, PartDone
from dataprep.build.read import InlineRunner
from dataprep.build.sink import Sink
from dataprep.build.tasks import Encoded, Task, TaskOptions
from dataprep.errors import DataConfigError
from dataprep.signals import die_with_parent


def _worker_main(conn, spec: str | None, parent: int, parent_ends: list) -> None:
    """A tokenizer process: tasks arrive on `conn` (a thread keeps reading them, so the main
    process never waits to hand one over), results go back in the same order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the driver's handler (cli.main's)
    die_with_parent(signal.SIGKILL, parent)  # no worker outlives its build, even a kill -9'd one
    for end in parent_ends:  # forked copies of the main process's ends: EOF when it is gone
        end.close()
    if spec is not None:  # spawn: load here; fork: inherited
        encode.init_worker(spec)
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


class WorkerDiedError(DataConfigError):
    """A tokenizer process died (exit 1, like bad data); the message names the `workers` field."""


class LocalPool:
    """Tokenizer processes, each fed through its own pipe, tasks dealt round-robin; results come
    back in submission order. No helper threads in this process: handing over and collecting
    happen in the caller's thread, between reads."""

    def __init__(self, count: int, tokenizer, per_worker: int = 2) -> None:
        if sys.platform == "linux":
            # forked workers inherit the loaded tokenizer: no second load per worker
            encode.WORKER_TOKENIZER = tokenizer
            ctx, spec = multiprocessing.get_context("fork"), None
        else:
            ctx, spec = multiprocessing.get_context("spawn"), tokenizer.spec
        self.conns, self.procs = [], []
        fork = spec is None
        try:
            for _ in range(count):
                here, there = ctx.Pipe()
                ends = [*self.conns, here] if fork else []
                proc = ctx.Process(
                    target=_worker_main, args=(there, spec, os.getpid(), ends), daemon=True
                )
                proc.start()
                there.close()
                self.conns.append(here)
                self.procs.append(proc)
        except BaseException:
            self.close()
            raise
        self.limit = count * per_worker
        self.pending: collections.deque[int] = collections.deque()  # workers, in task order
        self.submitted = 0

    def submit(self, task: Task) -> Iterator[Encoded]:
        """Hand `task` to the next worker; yields the results that had to be collected first to
        stay within the in-flight limit."""
        while len(self.pending) >= self.limit:
            yield self._collect()
        worker = self.submitted % len(self.conns)
        data = pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.conns[worker].send_bytes(data)
        except OSError as e:
            raise self._died(worker) from e
        self.pending.append(worker)
        self.submitted += 1

    def drain(self) -> Iterator[Encoded]:
        while self.pending:
            yield self._collect()

    def _collect(self) -> Encoded:
        worker = self.pending.popleft()
        try:
            status, value = pickle.loads(self.conns[worker].recv_bytes())
        except (EOFError, OSError) as e:
            raise self._died(worker) from e
        if status == "error":
            raise value
        return value

    def _died(self, worker: int) -> WorkerDiedError:
        proc = self.procs[worker]
        proc.join(timeout=1)
        return WorkerDiedError(
            f"tokenizer worker {worker} died (exit code {proc.exitcode}); if it ran out of "
            "memory, use fewer {workers}",
            "workers",
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


class LocalExecutor:
    """Runs parts in order in this process; `workers` > 1 adds a LocalPool for the tasks."""

    def __init__(self, config: BuildConfig, tokenizer, options: TaskOptions, filters) -> None:
        self.config, self.options, self.filters = config, options, filters
        pool = LocalPool(config.workers, tokenizer) if config.workers > 1 else None
        self.pool = pool
        self.runner = pool if pool is not None else InlineRunner(tokenizer)

    def run(self, parts: list[Part], sink: Sink, *, input_offset: int = 0) -> Iterator[PartDone]:
        for part in parts:
            stats, documents = read.process_file(
                part,
                input_offset=input_offset,
                config=self.config,
                options=self.options,
                filters=self.filters,
                runner=self.runner,
                sink=sink,
            )
            input_offset += part.size
            yield PartDone(part, stats, documents)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
