"""`Document`: the one type passed from the readers (`dataprep/readers/`) to later stages.

A reader yields one Document per input record (a JSON line or a Parquet row). `text` is the
first requested JSON key; `fields` holds every requested key (Megatron's `--json-keys` of
`tools/preprocess_data.py`), and `id` ("<file name>:<line>") is stable across runs, so a
document can be traced back to its record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Document:
    text: str  # == fields[json_keys[0]]; may be empty (the builder decides what to do with it)
    id: str  # "<file name>:<line>", e.g. "00.jsonl.zst:17"
    metadata: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"pile_set_name": "Pile-CC"}
    fields: Mapping[str, str] = field(default_factory=dict)  # every requested json key -> its text
    source: str = ""  # path of the input file
    line: int = 0  # 1-based line (JSON Lines) or row (Parquet) number in `source`
