"""Megatron's MMIDIDX `.bin/.idx` indexed dataset: writer, reader and merge.

The byte layout and the merge are megatron-core's (`indexed_dataset.py`: `_IndexWriter`,
`_IndexReader`, `IndexedDatasetBuilder.add_index`).
"""

from dataprep.indexed.format import DType, optimal_dtype
from dataprep.indexed.merge import MergeSummary, merge_datasets
from dataprep.indexed.partial import WriterState
from dataprep.indexed.reader import IndexedDatasetReader
from dataprep.indexed.writer import IndexedDatasetWriter

__all__ = [
    "DType",
    "IndexedDatasetReader",
    "IndexedDatasetWriter",
    "MergeSummary",
    "WriterState",
    "merge_datasets",
    "optimal_dtype",
]
