"""Megatron's train/valid/test split string, and the element ranges it selects.

As megatron-core's `parse_and_normalize_split`, `convert_split_vector_to_split_matrix` and
`_build_megatron_dataset_splits`. For GPT the elements are
the *sequences* of the indexed dataset (one per document unless built with --split-sentences).
Example: "969,30,1" over 1000 sequences -> train [0, 969), valid [969, 999), test [999, 1000).
"""

from __future__ import annotations

import math

import numpy as np

from dataprep.errors import UsageError

SPLIT_NAMES = ("train", "valid", "test")


def parse_split(split: str) -> tuple[float, float, float]:
    """Parse "969,30,1", "98/2/0" or "1" into weights normalised to sum 1 (missing parts are 0).

    Normalised as megatron-core does (float64 `w / sum(w)`), so the bookends match its floats.
    """
    parts = [p.strip() for p in str(split).replace("/", ",").split(",")]
    if not 1 <= len(parts) <= 3 or any(p == "" for p in parts):
        raise UsageError(
            f"split {split!r}: expected 1 to 3 comma-separated non-negative weights for "
            "train,valid,test, e.g. '969,30,1' or '98,2,0'"
        )
    values = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise UsageError(
                f"split {split!r}: {p!r} is not a number; expected weights like '969,30,1'"
            ) from None
        if not math.isfinite(v) or v < 0:
            raise UsageError(f"split {split!r}: weight {p} must be a finite number >= 0")
        values.append(v)
    values += [0.0] * (3 - len(values))
    w = np.array(values, dtype=np.float64)
    if w.sum() <= 0:
        raise UsageError(f"split {split!r}: all weights are 0; give at least one positive weight")
    a, b, c = (w / w.sum()).tolist()
    return (a, b, c)


def split_bookends(split: str) -> list[tuple[float, float] | None]:
    """Megatron's split matrix: [(0, a), (a, a+b), (a+b, a+b+c)], None where a part is empty."""
    weights = parse_split(split)
    edges = [0.0]
    for w in weights:
        edges.append(edges[-1] + w)  # sequential float sums, as functools.reduce in megatron-core
    return [(lo, hi) if hi > lo else None for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def split_ranges(split: str, num_elements: int) -> list[tuple[int, int] | None]:
    """[beg, end) element ranges of train, valid, test: `int(round(bookend * num_elements))`."""
    ranges: list[tuple[int, int] | None] = []
    for bookend in split_bookends(split):
        if bookend is None:
            ranges.append(None)
        else:
            lo, hi = bookend
            ranges.append(
                (int(round(lo * float(num_elements))), int(round(hi * float(num_elements))))
            )
    return ranges


def split_index(split_name: str) -> int:
    """0, 1, 2 for "train", "valid", "test"; UsageError for anything else."""
    try:
        return SPLIT_NAMES.index(split_name)
    except ValueError:
        raise UsageError(
            f"split name {split_name!r}: expected one of {', '.join(SPLIT_NAMES)}"
        ) from None
