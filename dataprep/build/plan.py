"""The build plan: the input files, described (name, path, size, mtime) for the manifest and for
checking on --resume that finished inputs did not change."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def describe_inputs(files: Sequence[Path]) -> list[dict[str, Any]]:
    out = []
    for p in files:
        st = p.stat()
        out.append(
            {
                "name": p.name,
                "path": str(p.resolve()),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
            }
        )
    return out


def existing_outputs(prefixes: Sequence[str]) -> list[str]:
    found = []
    for prefix in prefixes:
        for suffix in (".bin", ".idx"):
            if os.path.exists(prefix + suffix):
                found.append(prefix + suffix)
    return found
