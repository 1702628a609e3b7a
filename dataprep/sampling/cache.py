"""The on-disk cache of sampling indices: `.npy` arrays keyed by an md5 of their description.

`cached_arrays` loads `{cache_dir}/{base}-{name}.npy` memory-mapped when every file exists, else
builds the arrays and saves them atomically, the JSON description last (as megatron-core's
`GPTDataset` / `BlendedDataset` index caches). `dataset_identity` is what a cache key knows of the
data. GPTSamples and BlendedSamples both cache through here.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def dataset_identity(prefix: str | None, sequence_lengths: np.ndarray) -> dict[str, Any]:
    """What the cache key knows of the data: .idx/.bin size and mtime, or a hash of the lengths."""
    if prefix is not None and os.path.exists(prefix + ".idx"):
        out: dict[str, Any] = {}
        for suffix in (".idx", ".bin"):
            st = os.stat(prefix + suffix)
            out[suffix[1:]] = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
        return out
    lengths = np.ascontiguousarray(sequence_lengths, dtype="<i4")
    return {
        "sequence_lengths_md5": hashlib.md5(lengths.tobytes(), usedforsecurity=False).hexdigest()
    }


def cached_arrays(
    cache_dir: str | None,
    base: str,
    description: str,
    names: tuple[str, ...],
    build: Callable[[], tuple[np.ndarray, ...]],
) -> tuple[tuple[np.ndarray, ...], bool]:
    """Load `{cache_dir}/{base}-{name}.npy` (mmap) when all exist, else build and save them.

    Each file is written to a temporary name and renamed; the description is written last.
    Returns (arrays, loaded_from_cache). A cache folder that cannot be written is skipped with a
    warning.
    """
    if cache_dir is not None:
        paths = [os.path.join(cache_dir, f"{base}-{name}.npy") for name in names]
        description_path = os.path.join(cache_dir, f"{base}-description.json")
        if all(os.path.isfile(p) for p in [*paths, description_path]):
            logger.info("loading cached indices %s-* from %s", base, cache_dir)
            return tuple(np.load(p, mmap_mode="r", allow_pickle=False) for p in paths), True
    arrays = build()
    if cache_dir is not None:
        from dataprep.fileio import save_npy_atomic

        try:
            os.makedirs(cache_dir, exist_ok=True)
            for path, array in zip(paths, arrays, strict=True):
                save_npy_atomic(path, array)
            tmp = f"{description_path}.tmp-{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(description + "\n")
            os.replace(tmp, description_path)
        except OSError as e:
            logger.warning(
                "cannot write the index cache in %s (%s); indices kept in memory only. "
                "Pass a writable cache_dir (--cache-dir) to reuse them.",
                cache_dir,
                e,
            )
    return arrays, False
