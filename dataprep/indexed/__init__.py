"""Megatron's MMIDIDX `.bin/.idx` indexed dataset: writer, reader and merge.

Specified in reference/formats.md §1 (byte layout) and §2.3 (merge).
"""

from dataprep.indexed.format import DType, optimal_dtype
from dataprep.indexed.merge import MergeSummary, merge_datasets
from dataprep.indexed.reader import IndexedDatasetReader
from dataprep.indexed.writer import IndexedDatasetWriter, WriterState

__all__ = [
    "DType",
    "IndexedDatasetReader",
    "IndexedDatasetWriter",
    "MergeSummary",
    "WriterState",
    "merge_datasets",
    "optimal_dtype",
]
