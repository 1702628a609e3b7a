"""Small file helpers shared by every module that writes outputs: content hashes and atomic saves.

An atomic save writes to a temporary name beside the target and renames it, so a reader (or an
interrupted run) never sees half a file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read in blocks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """`np.save` without pickles to a temporary name, then rename to `path`."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def npy_memmap_atomic(
    path: str | os.PathLike, *, dtype: np.dtype, shape: tuple[int, ...]
) -> Iterator[np.memmap]:
    """A writable `.npy` memory map at a temporary name beside `path`, for arrays written piece
    by piece; flushed and renamed to `path` when the block ends, removed if it raises."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        yield out
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON (indented, UTF-8, trailing newline) to a temporary name and rename it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
