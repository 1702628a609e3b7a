"""mC4 (Hugging Face allenai/c4): `multilingual/c4-<lang>.tfrecord-NNNNN-of-MMMMM.json.gz`.

One JSON object per line, `{"text", "timestamp", "url"}`, gzip-compressed. The language is not in
the record but in the file name (`c4-ja.tfrecord-...`, `c4-zh-Latn.tfrecord-...`,
`c4-ja-validation.tfrecord-...`), so a language filter skips whole files; a Document's metadata is
{"url", "timestamp", "language"}.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataprep.documents import Document
from dataprep.readers.jsonl import iter_json_lines

# "c4-" + language code (2-3 letters, optional script like "-Latn"), then "-validation" or "."
_MC4_NAME = re.compile(r"^c4-(?P<language>[a-z]{2,3}(?:-[A-Z][a-z]{3})?)(?:-validation)?\.")


def mc4_language(path: str | os.PathLike) -> str | None:
    """The language code in an mC4 file name ("ja", "zh-Latn"), or None (e.g. C4's c4-train.*)."""
    match = _MC4_NAME.match(Path(path).name)
    return match["language"] if match else None


@dataclass(frozen=True, slots=True)
class Mc4Metadata:
    """`metadata_of` for one mC4 file: url and timestamp from the record, language from the name;
    picklable, so a worker process can parse the file's blocks."""

    language: str | None

    def __call__(self, record: dict) -> dict[str, Any]:
        metadata = {key: record[key] for key in ("url", "timestamp") if key in record}
        if self.language is not None:
            metadata["language"] = self.language
        return metadata


def mc4_metadata_of(language: str | None) -> Mc4Metadata:
    """The `metadata_of` of an mC4 file whose name gives `language`."""
    return Mc4Metadata(language)


def iter_mc4(path: str | os.PathLike, **options: Any) -> Iterator[Document]:
    """Documents of one mC4 file; `options` are those of `jsonl.iter_json_lines`."""
    return iter_json_lines(path, metadata_of=mc4_metadata_of(mc4_language(path)), **options)
