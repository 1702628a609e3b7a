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


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within: SIGTERM raises `Terminated` in the main thread (outside the main thread, where
    Python cannot set handlers, nothing changes); the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
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
