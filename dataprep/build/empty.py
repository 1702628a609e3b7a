"""Why a build wrote no documents: an empty result is an error (exit 1) unless `allow_empty`, and
the message names what removed everything (a filter, with the values that do occur in the data;
the language selection; bad files; bad records; empty texts)."""

from __future__ import annotations

import collections
import os
from collections.abc import Sequence
from pathlib import Path

from dataprep.build.config import BuildConfig, literal
from dataprep.errors import DataConfigError
from dataprep.readers import ReadStats

SAMPLE_RECORDS = 20_000  # records read to list the values a filter key takes
SHOWN_VALUES = 10


class EmptyResultError(DataConfigError):
    """The build would write a dataset with no documents: bad data (exit 1), whose message names
    the configuration fields (the CLI: flags) that removed everything."""


# the fields an EmptyResultError may name
FIELDS = ("languages", "skip_bad_files", "filters", "json_keys", "allow_empty")


def filter_values(
    files: Sequence[Path], config: BuildConfig, keys: Sequence[str]
) -> dict[str, collections.Counter]:
    """The values each filter key takes in (a sample of) the inputs, read without the filters."""
    from dataprep.readers import iter_documents

    seen = {key: collections.Counter() for key in keys}
    count = 0
    for path in files:
        docs = iter_documents(
            path,
            fmt=config.fmt,
            json_keys=config.json_keys,
            languages=config.languages,
            on_error="skip",
            on_bad_file="skip",
        )
        for doc in docs:
            for key in keys:
                value = doc.metadata.get(key)
                if value is None and isinstance(doc.metadata.get("meta"), dict):
                    value = doc.metadata["meta"].get(key)
                seen[key]["(missing)" if value is None else str(value)] += 1
            count += 1
            if count >= SAMPLE_RECORDS:
                return seen
    return seen


def empty_result_error(
    key: str, files: Sequence[Path], config: BuildConfig, read: ReadStats, skipped: dict[str, int]
) -> EmptyResultError:
    """The error: dataset `key` got no documents, and why (one line)."""
    files_skipped = read.files_skipped
    record_skips = read.skipped
    read_files = len(files) - sum(len(v) for v in files_skipped.values())
    why: list[str] = []  # parts of the template: values through literal()
    if read_files == 0:
        if files_skipped.get("language"):
            why.append(
                f"{{languages}} {literal(','.join(config.languages or ()))} matched none of the "
                f"{len(files)} input file(s)"
            )
        bad = {k: v for k, v in files_skipped.items() if k != "language"}
        if bad:
            names = ", ".join(
                f"{os.path.basename(p)} ({kind})" for kind, paths in bad.items() for p in paths
            )
            why.append(
                f"every input file was skipped as bad under {{skip_bad_files}}: {literal(names)}"
            )
    elif record_skips.get("filtered") and read.documents == 0:
        given = " ".join(
            f"{{filters}} {literal(f'{k}={v}')}" for k, vs in config.filters for v in vs
        )
        seen = filter_values(files, config, [k for k, _ in config.filters])
        shown = []
        for k, counter in seen.items():
            values = ", ".join(f"{v!r} ({n:,})" for v, n in counter.most_common(SHOWN_VALUES))
            more = (
                f", and {len(counter) - SHOWN_VALUES} more" if len(counter) > SHOWN_VALUES else ""
            )
            shown.append(literal(f"{k}: {values or 'none'}{more}"))
        why.append(
            f"{given} filtered out all {record_skips['filtered']:,} records; values in the data: "
            + "; ".join(shown)
            + " (values are compared exactly, case included)"
        )
    elif read.documents == 0:
        if record_skips:
            counts = ", ".join(f"{k}={n:,}" for k, n in sorted(record_skips.items()))
            why.append(f"no record could be read ({literal(counts)})")
        elif read.empty_files:
            why.append("the input files are empty")
        else:
            why.append("the inputs hold no records")
    elif skipped:
        counts = ", ".join(f"{k}={n:,}" for k, n in sorted(skipped.items()))
        why.append(
            f"all {read.documents:,} records were skipped for key {literal(repr(key))} "
            f"({literal(counts)})"
        )
    return EmptyResultError(
        f"no documents to write for {{json_keys}} {literal(key)}: "
        f"{'; '.join(why) or 'nothing was kept'}; "
        "pass {allow_empty} to write an empty dataset anyway",
        *FIELDS,
    )
