"""The build manifest: a JSON sidecar `{prefix}.json` next to every `{prefix}.bin/.idx` we write.

It records what a dataset is made of (inputs with sizes and sha256, tokenizer identity, counts,
skips by reason, the largest token id) so later stages can find the tokenizer without being told,
and a person can see where the data came from. Per-document provenance lives beside it in
`{prefix}.provenance.npy`; with --dedup, the manifest's "dedup" entry counts removed documents by
kind ("exact", "near") and `{prefix}.duplicates.npy` lists every removed one with the
provenance of both copies.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError

MANIFEST_SUFFIX = ".json"
PROVENANCE_SUFFIX = ".provenance.npy"
# --dedup: int64 rows (duplicate's input index, line, original's input index, line, kind 0 exact /
# 1 near), in input order of the duplicates
DUPLICATES_SUFFIX = ".duplicates.npy"


def manifest_path(prefix: str | os.PathLike) -> Path:
    return Path(os.fspath(prefix) + MANIFEST_SUFFIX)


def provenance_path(prefix: str | os.PathLike) -> Path:
    return Path(os.fspath(prefix) + PROVENANCE_SUFFIX)


def duplicates_path(prefix: str | os.PathLike) -> Path:
    return Path(os.fspath(prefix) + DUPLICATES_SUFFIX)


def load_manifest(prefix: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a dataset prefix, or None when it has none (e.g. made by Megatron)."""
    path = manifest_path(prefix)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataprepError(f"{path}: cannot read the build manifest: {e}") from e


def tokenizer_spec_from_manifest(prefix: str | os.PathLike) -> str:
    """The tokenizer spec (for `load_tokenizer`) recorded when the dataset was built."""
    manifest = load_manifest(prefix)
    if manifest is None or "tokenizer" not in manifest:
        raise DataprepError(
            f"{prefix}: no build manifest ({manifest_path(prefix).name}) names the tokenizer; "
            "pass --tokenizer NAME_OR_PATH"
        )
    return manifest["tokenizer"]["spec"]
