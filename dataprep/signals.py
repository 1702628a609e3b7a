"""Process lifetime: SIGTERM handled as Ctrl-C is (`Terminated`, raised in the main thread, so
every command's cleanup for an interruption runs), and child processes that die with their
parent however it exits (`die_with_parent`)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: a KeyboardInterrupt, so the same cleanup and --resume hints run; the
    command line reports it as `terminated` with exit code 143 (128 + SIGTERM)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


_installed = False  # our handler is SIGTERM's in this process


def _child_after_fork() -> None:
    """A forked child (a multiprocessing worker of ours or of a library) gets SIGTERM's default
    back, die: `Pool.terminate()` must end a worker, not raise an exception inside a queue's lock,
    which deadlocks the pool (lm_eval's bootstrap pool did). Not the handler from before ours
    either: that may be another Python handler (Ray's raises SystemExit) with the same effect."""
    global _installed
    if _installed:
        _installed = False
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_child_after_fork)


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within: SIGTERM raises `Terminated` in the main thread (outside the main thread, where
    Python cannot set handlers, nothing changes); the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _installed
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    _installed = True
    try:
        yield
    finally:
        _installed = False
        signal.signal(signal.SIGTERM, previous)


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Linux: ask the kernel to send `sig` to this process when its parent exits (kill -9
    included). With `parent` (its pid, read before forking), a parent already gone means exit
    now. Elsewhere a no-op: callers close their pipes so children see EOF instead."""
    if sys.platform != "linux":
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:
        os._exit(1)
