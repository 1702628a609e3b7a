"""The MMIDIDX byte layout of Megatron's `.idx` file: constants and pure helpers, no file I/O.

As megatron-core's `indexed_dataset.py` (`_IndexWriter`, `_IndexReader`) lays it out. The writer and
the reader both take every offset, size and code from here, so they cannot drift apart. All integers
are little-endian; offsets, counts and pointers are int64 (a dataset may hold far more than 2^31
tokens), sequence lengths are int32 as in Megatron.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from dataprep.errors import IndexFormatError, UsageError

MAGIC = b"MMIDIDX\x00\x00"  # 9 bytes, `_INDEX_HEADER`
VERSION = 1
# magic (9s), version (<Q), dtype code (<B), sequence_count S (<Q), document_count D (<Q); packed,
# 34 bytes
HEADER_STRUCT = struct.Struct("<9sQBQQ")
HEADER_SIZE = HEADER_STRUCT.size
assert HEADER_SIZE == 34

# the three arrays that follow the header, in order, with their on-disk dtypes
LENGTHS_DTYPE = np.dtype("<i4")  # sequence_lengths[S]: tokens per sequence
POINTERS_DTYPE = np.dtype("<i8")  # sequence_pointers[S]: byte offset of each sequence in .bin
DOCUMENTS_DTYPE = np.dtype(
    "<i8"
)  # document_indices[D]: sequence index where each document starts, + S

INT32_MAX = int(np.iinfo(np.int32).max)


class DType(IntEnum):
    """Token dtype codes stored in byte 17 of the header (Megatron's `DType` table)."""

    uint8 = 1
    int8 = 2
    int16 = 3
    int32 = 4
    int64 = 5
    float64 = 6
    float32 = 7
    uint16 = 8


def little_endian(dtype: np.dtype | type | str) -> np.dtype:
    """The little-endian version of a dtype (shown as plain `uint16` on little-endian machines)."""
    dt = np.dtype(dtype).newbyteorder("<")
    return np.dtype(dt.name) if dt.isnative else dt


def dtype_from_code(code: int) -> np.dtype:
    """The little-endian numpy dtype for a header dtype code; ValueError for an unknown code."""
    try:
        return little_endian(DType(code).name)
    except ValueError:
        known = ", ".join(f"{d.value}={d.name}" for d in DType)
        raise ValueError(f"unknown dtype code {code}; expected one of {known}") from None


def code_from_dtype(dtype: np.dtype | type | str) -> int:
    """The header code of a numpy dtype (byte order ignored); UsageError if Megatron has none."""
    dt = np.dtype(dtype)
    if dt.name in DType.__members__:
        return int(DType[dt.name])
    known = ", ".join(d.name for d in DType)
    raise UsageError(f"dtype {dt.name} cannot be stored in a .bin/.idx dataset; use one of {known}")


def optimal_dtype(vocab_size: int | None) -> np.dtype:
    """Megatron's rule (`DType.optimal_dtype`): uint16 if vocab_size < 65500, else int32.

    GPT-2 (50257) -> uint16; mT5 (250100) -> int32. None (unknown) -> int32, as in Megatron.
    """
    if vocab_size is not None and vocab_size < 65500:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


class Header(NamedTuple):
    version: int
    dtype: np.dtype
    sequence_count: int  # S
    document_count: int  # D = number of documents + 1


def pack_header(dtype: np.dtype | type | str, sequence_count: int, document_count: int) -> bytes:
    """The 34 header bytes of an `.idx` file."""
    return HEADER_STRUCT.pack(
        MAGIC, VERSION, code_from_dtype(dtype), sequence_count, document_count
    )


def unpack_header(buf: bytes, *, path: str = "<index>") -> Header:
    """Parse and check the header; IndexFormatError naming `path` unless it is MMIDIDX v1."""
    if len(buf) < HEADER_SIZE:
        raise IndexFormatError(
            f"{path}: file is {len(buf)} bytes, shorter than the {HEADER_SIZE}-byte MMIDIDX "
            "header; "
            "it is truncated or not an index file (rebuild the dataset)"
        )
    magic, version, code, sequence_count, document_count = HEADER_STRUCT.unpack_from(buf)
    if magic != MAGIC:
        raise IndexFormatError(
            f"{path}: bad magic {magic!r}, expected {MAGIC!r}; this is not a Megatron mmap .idx "
            "file "
            "(legacy 'lazy'/'cached' datasets start with b'TNTIDX'; re-preprocess them)"
        )
    if version != VERSION:
        raise IndexFormatError(f"{path}: index version {version}, expected {VERSION}")
    try:
        dtype = dtype_from_code(code)
    except ValueError as e:
        raise IndexFormatError(f"{path}: {e}") from None
    return Header(version, dtype, sequence_count, document_count)


def array_offsets(sequence_count: int) -> tuple[int, int, int]:
    """Byte offsets in `.idx` of sequence_lengths, sequence_pointers and document_indices."""
    lengths = HEADER_SIZE
    pointers = lengths + LENGTHS_DTYPE.itemsize * sequence_count
    documents = pointers + POINTERS_DTYPE.itemsize * sequence_count
    return lengths, pointers, documents


def index_nbytes(sequence_count: int, document_count: int) -> int:
    """Exact size of a text (non-multimodal) `.idx`: 34 + 4S + 8S + 8D."""
    return array_offsets(sequence_count)[2] + DOCUMENTS_DTYPE.itemsize * document_count


def sequence_pointers(sequence_lengths: np.ndarray, itemsize: int, *, start: int = 0) -> np.ndarray:
    """Byte offset of each sequence in `.bin`: ptr[0] = start, ptr[i+1] = ptr[i] + len[i]*itemsize.

    Computed in int64 whatever the input dtype, so sums past 2^31 tokens are exact. `start` lets
    a caller compute the pointers of a long array chunk by chunk.
    Example: lengths [3, 0, 2], itemsize 2 -> [0, 6, 6].
    """
    nbytes = np.asarray(sequence_lengths).astype(np.int64) * np.int64(itemsize)
    pointers = np.empty(nbytes.shape[0], dtype=np.int64)
    if pointers.size:
        pointers[0] = start
        np.cumsum(nbytes[:-1], out=pointers[1:])
        pointers[1:] += start
    return pointers


def bin_nbytes(sequence_lengths: np.ndarray, itemsize: int) -> int:
    """Size of the `.bin` holding these sequences: sum(lengths) * itemsize, never overflowing."""
    return int(np.asarray(sequence_lengths).sum(dtype=np.int64)) * int(itemsize)


def iter_index_bytes(
    dtype: np.dtype | type | str,
    sequence_lengths: np.ndarray,
    document_indices: np.ndarray,
    *,
    chunk_size: int = 1 << 22,
) -> Iterator[bytes]:
    """The whole `.idx` content as consecutive byte strings: header, lengths, pointers, documents.

    Pointers are produced `chunk_size` sequences at a time, so writing a huge index never holds a
    second full-size int64 array. Lengths must fit int32 (ValueError otherwise).
    """
    lengths = np.asarray(sequence_lengths)
    documents = np.asarray(document_indices)
    if lengths.size and (int(lengths.min()) < 0 or int(lengths.max()) > INT32_MAX):
        raise ValueError(f"sequence lengths must be in [0, {INT32_MAX}]")
    itemsize = np.dtype(dtype).itemsize
    yield pack_header(dtype, lengths.shape[0], documents.shape[0])
    yield lengths.astype(LENGTHS_DTYPE, copy=False).tobytes()
    start = 0
    for i in range(0, lengths.shape[0], chunk_size):
        chunk = lengths[i : i + chunk_size]
        pointers = sequence_pointers(chunk, itemsize, start=start)
        yield pointers.astype(POINTERS_DTYPE, copy=False).tobytes()
        start = int(pointers[-1]) + int(chunk[-1]) * itemsize
    yield documents.astype(DOCUMENTS_DTYPE, copy=False).tobytes()
