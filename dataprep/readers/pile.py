"""The Pile (EleutherAI): `train/00..29.jsonl.zst`, `val.jsonl.zst`, `test.jsonl.zst`.

One JSON object per line, `{"text": str, "meta": {"pile_set_name": str}}`, in multi-frame zstd
written with large windows. A Document's metadata is the record's `meta` object (e.g.
{"pile_set_name": "Pile-CC"}), so `filters={"pile_set_name": {"Pile-CC"}}` keeps one subset.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from dataprep.documents import Document
from dataprep.readers.jsonl import iter_json_lines


def pile_metadata(record: dict) -> dict[str, Any]:
    """The record's `meta` object ({} when it has none)."""
    meta = record.get("meta")
    return meta if isinstance(meta, dict) else {}


def is_pile_record(record: Any) -> bool:
    """True for `{"meta": {"pile_set_name": ...}, ...}`."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("meta"), dict)
        and "pile_set_name" in record["meta"]
    )


def iter_pile(path: str | os.PathLike, **options: Any) -> Iterator[Document]:
    """Documents of one Pile shard; `options` are those of `jsonl.iter_json_lines`."""
    return iter_json_lines(path, metadata_of=pile_metadata, **options)
