"""Parquet files -> Documents, streamed a record batch at a time by `pyarrow.parquet`.

Columns read: the requested text keys, plus every other column of a scalar type (or a struct such as
`meta`) as metadata. Row numbers (1-based) play the part of line numbers, and missing, null or
non-string values are bad records of the same kinds as in JSON Lines (`jsonl.py`). Memory is bounded
by one row group.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dataprep.documents import Document
from dataprep.errors import ReadError
from dataprep.readers import sniff
from dataprep.readers.base import FILTERED, ReadStats, RecordErrors, log
from dataprep.readers.records import BadRecord, matches, record_fields

BATCH_ROWS = 1024


def _is_metadata_type(pa, arrow_type) -> bool:
    types = pa.types
    return any(
        check(arrow_type)
        for check in (
            types.is_string,
            types.is_large_string,
            types.is_integer,
            types.is_floating,
            types.is_boolean,
            types.is_temporal,
            types.is_struct,
            types.is_dictionary,
        )
    )


def _open(path: str | os.PathLike):
    """pyarrow's ParquetFile, after checking the magic bytes at both ends of the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    head = sniff.read_head(path)
    if not head:
        return None
    if not head.startswith(sniff.PARQUET_MAGIC):
        kind = "html" if sniff.looks_like_html(head) else "not_parquet"
        if head.startswith(sniff.LFS_POINTER):
            kind = "lfs_pointer"
        found = sniff.describe_bytes(head)
        raise ReadError(path, f"expected a Parquet file but it is {found}", kind=kind)
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 4))
        if fh.read(4) != sniff.PARQUET_MAGIC:
            raise ReadError(
                path,
                f"truncated Parquet file: it does not end with the PAR1 footer ({size} bytes; the "
                "file was cut short: download or copy it again)",
                offset=size,
                kind="truncated",
            )
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise ReadError(path, f"corrupt Parquet file: {e}", kind="corrupt") from e


def iter_parquet(
    path: str | os.PathLike,
    *,
    json_keys: Sequence[str] = ("text",),
    filters: Mapping[str, Collection[str]] | None = None,
    on_error: str = "raise",
    stats: ReadStats | None = None,
    start_line: int = 0,
    extra_metadata: Mapping[str, Any] | None = None,
) -> Iterator[Document]:
    """Documents of one Parquet file, row by row; `line` is the 1-based row number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    stats = stats if stats is not None else ReadStats()
    json_keys = tuple(json_keys)
    source = os.fspath(path)
    name = Path(path).name
    bad = RecordErrors(path, on_error, stats)
    parquet_file = _open(path)
    if parquet_file is None or parquet_file.metadata.num_rows == 0:
        log.warning("%s is empty: no rows", source)
        stats.empty_files.append(source)
        stats.files += 1
        return
    schema = parquet_file.schema_arrow
    missing = [key for key in json_keys if key not in schema.names]
    if missing:
        rows = parquet_file.metadata.num_rows
        reason = f"missing column {missing[0]!r} (columns found: {', '.join(schema.names)})"
        if on_error == "raise":
            raise ReadError(path, reason, line=start_line + 1, kind="missing_key")
        log.warning("skipped all %d rows of %s", rows, ReadError(path, reason, kind="missing_key"))
        stats.skip("missing_key", max(0, rows - start_line))
        stats.files += 1
        return
    metadata_columns = [
        f.name for f in schema if f.name not in json_keys and _is_metadata_type(pa, f.type)
    ]
    columns = list(json_keys) + metadata_columns
    text_types = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary)
    sized = [
        c for c, key in enumerate(json_keys) if any(t(schema.field(key).type) for t in text_types)
    ]

    # skip whole row groups before start_line without decoding them
    row_groups, first_row = [], 0
    for i in range(parquet_file.num_row_groups):
        group_rows = parquet_file.metadata.row_group(i).num_rows
        if first_row + group_rows <= start_line and not row_groups:
            first_row += group_rows
            continue
        row_groups.append(i)
    row = first_row
    try:
        batches = parquet_file.iter_batches(
            batch_size=BATCH_ROWS, row_groups=row_groups, columns=columns
        )
        for batch in batches:
            values = [batch.column(c).to_pylist() for c in range(batch.num_columns)]
            for c in sized:  # UTF-8 bytes of the text columns
                stats.bytes += pc.sum(pc.binary_length(batch.column(c))).as_py() or 0
            for i in range(batch.num_rows):
                row += 1
                if row <= start_line:
                    continue
                record = {column: values[c][i] for c, column in enumerate(columns)}
                metadata = {column: record[column] for column in metadata_columns}
                if extra_metadata:
                    metadata.update(extra_metadata)
                if filters and not matches(filters, metadata, record):
                    stats.skip(FILTERED)
                    continue
                try:
                    fields = record_fields(record, json_keys)
                except BadRecord as e:
                    bad(e.kind, e.reason, row)
                    continue
                stats.documents += 1
                yield Document(
                    text=fields[json_keys[0]],
                    id=f"{name}:{row}",
                    metadata=metadata,
                    fields=fields,
                    source=source,
                    line=row,
                )
    except (pa.ArrowException, OSError) as e:
        raise ReadError(
            path, f"corrupt Parquet data after row {row}: {e}", line=row, kind="corrupt"
        ) from e
    bad.summarize()
    stats.files += 1
