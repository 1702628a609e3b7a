"""The MMIDIDX byte layout helpers (dataprep/indexed/format.py), including sizes past 2^31 and 2^32.

Large datasets are simulated with a sparse file: a `.bin` of 8 GiB that occupies almost no disk.
"""

import os
import struct
import warnings

import numpy as np
import pytest

from dataprep.errors import IndexFormatError, UsageError
from dataprep.indexed import format as fmt
from dataprep.indexed.partial import WriterState
from dataprep.indexed.reader import IndexedDatasetReader
from dataprep.indexed.writer import IndexedDatasetWriter

BIG = 2**31 - 1  # the longest sequence an int32 length can describe


def test_dtype_codes_are_megatrons_table():
    # megatron-core's DType codes (indexed_dataset.py)
    table = {
        1: "uint8",
        2: "int8",
        3: "int16",
        4: "int32",
        5: "int64",
        6: "float64",
        7: "float32",
        8: "uint16",
    }
    for code, name in table.items():
        assert fmt.dtype_from_code(code) == np.dtype(name)
        assert fmt.code_from_dtype(np.dtype(name)) == code
        assert fmt.code_from_dtype(name) == code
    assert fmt.code_from_dtype(np.dtype(">u2")) == 8  # byte order does not change the code


def test_unknown_dtypes_are_rejected():
    with pytest.raises(ValueError, match="unknown dtype code 9"):
        fmt.dtype_from_code(9)
    with pytest.raises(UsageError, match="uint32"):
        fmt.code_from_dtype(np.uint32)


@pytest.mark.parametrize(
    ("vocab_size", "expected"),
    [
        (50257, np.uint16),
        (65499, np.uint16),
        (65500, np.int32),
        (65536, np.int32),
        (250100, np.int32),
        (None, np.int32),
    ],
)
def test_optimal_dtype_uses_megatrons_threshold(vocab_size, expected):
    assert fmt.optimal_dtype(vocab_size) == np.dtype(expected)


def test_header_golden_bytes():
    header = fmt.pack_header(np.uint16, 3, 5)
    assert header == (
        b"MMIDIDX\x00\x00"
        + b"\x01\x00\x00\x00\x00\x00\x00\x00"  # version 1
        + b"\x08"  # dtype code 8 = uint16
        + b"\x03\x00\x00\x00\x00\x00\x00\x00"  # 3 sequences
        + b"\x05\x00\x00\x00\x00\x00\x00\x00"  # 5 document indices
    )
    assert len(header) == fmt.HEADER_SIZE == 34
    assert fmt.unpack_header(header) == (1, np.dtype(np.uint16), 3, 5)


def test_header_counts_past_2_32():
    header = fmt.pack_header(np.int32, 2**40 + 3, 2**33)
    parsed = fmt.unpack_header(header)
    assert (parsed.sequence_count, parsed.document_count) == (2**40 + 3, 2**33)
    assert fmt.index_nbytes(2**40, 2) == 34 + 12 * 2**40 + 16


@pytest.mark.parametrize(
    ("buf", "match"),
    [
        (b"MMIDIDX\x00", "shorter than the 34-byte"),
        (b"TNTIDX\x00\x00" + bytes(26), "bad magic"),
        (b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 2, 8, 0, 1), "version 2, expected 1"),
        (b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 0, 0, 1), "unknown dtype code 0"),
    ],
)
def test_unpack_header_rejects_bad_headers(buf, match):
    with pytest.raises(IndexFormatError, match=match) as e:
        fmt.unpack_header(buf, path="x.idx")
    assert str(e.value).startswith("x.idx: ")


def test_sequence_pointers_small_example():
    assert fmt.sequence_pointers(np.array([3, 0, 2], np.int32), 2).tolist() == [0, 6, 6]
    assert fmt.sequence_pointers(np.array([], np.int32), 4).tolist() == []
    assert fmt.sequence_pointers(np.array([1, 1]), 8, start=100).tolist() == [100, 108]


def test_sequence_pointers_past_2_31_tokens_are_exact():
    lengths = np.full(5, BIG, dtype=np.int32)  # 5 * (2^31 - 1) tokens: int32 sums would overflow
    pointers = fmt.sequence_pointers(lengths, 4)
    assert pointers.dtype == np.int64
    assert pointers.tolist() == [i * BIG * 4 for i in range(5)]
    # chunked computation with `start` gives the same numbers
    chunked = np.concatenate(
        [
            fmt.sequence_pointers(lengths[:2], 4),
            fmt.sequence_pointers(lengths[2:], 4, start=2 * BIG * 4),
        ]
    )
    assert chunked.tolist() == pointers.tolist()
    assert fmt.bin_nbytes(lengths, 4) == 5 * BIG * 4


def test_iter_index_bytes_layout_past_2_31_tokens():
    lengths = np.array([BIG, BIG, 7, 0, BIG], dtype=np.int32)
    documents = np.array([0, 2, 2, 5], dtype=np.int64)
    data = b"".join(fmt.iter_index_bytes(np.uint16, lengths, documents, chunk_size=2))
    assert len(data) == fmt.index_nbytes(5, 4)
    header = fmt.unpack_header(data)
    off_l, off_p, off_d = fmt.array_offsets(header.sequence_count)
    assert np.frombuffer(data, "<i4", 5, off_l).tolist() == lengths.tolist()
    expected_pointers = [0, 2 * BIG, 4 * BIG, 4 * BIG + 14, 4 * BIG + 14]
    assert np.frombuffer(data, "<i8", 5, off_p).tolist() == expected_pointers
    assert np.frombuffer(data, "<i8", 4, off_d).tolist() == documents.tolist()


def test_iter_index_bytes_rejects_lengths_beyond_int32():
    with pytest.raises(ValueError, match="sequence lengths"):
        list(fmt.iter_index_bytes(np.uint16, np.array([2**31]), np.array([0, 1])))


def _sparse_or_skip(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
    if os.stat(path).st_blocks * 512 > 1 << 20:
        os.unlink(path)
        pytest.skip("this file system does not support sparse files")


@pytest.fixture(scope="session")
def megatron():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset


def test_reader_and_writer_past_4_gib_with_a_sparse_bin(tmp_path, megatron):
    """A 'resumed' writer whose .bin already holds 2 x (2^31 - 1) uint16 tokens (8 GiB, sparse)."""
    prefix = str(tmp_path / "big")
    head = 2 * BIG * 2  # bytes before the document we really write: > 2^32
    _sparse_or_skip(prefix + ".bin.tmp", head)
    state = WriterState(
        bin_nbytes=head,
        sequence_lengths=np.array([BIG, BIG], np.int32),
        document_indices=np.array([0, 1, 2], np.int64),
        dtype_code=8,
    )
    with IndexedDatasetWriter(prefix, dtype=np.uint16, resume_from=state) as w:
        w.add_document(np.array([11, 12, 13]))
    r = IndexedDatasetReader(prefix)
    assert len(r) == 3 and r.num_documents == 3
    assert r.sequence_pointers.tolist() == [0, 2 * BIG, head]
    assert r.num_tokens == 2 * BIG + 3
    assert r.get(2).tolist() == [11, 12, 13]
    assert r.get_document(2).tolist() == [11, 12, 13]
    assert r.get(1, offset=BIG - 2).tolist() == [0, 0]  # the hole reads as zeros
    assert r.tokens().shape == (2 * BIG + 3,)
    assert os.path.getsize(prefix + ".bin") == head + 6
    # megatron-core reads the same file at the same > 4 GiB offsets
    ds = megatron.IndexedDataset(prefix)
    assert ds.index.sequence_pointers.tolist() == [0, 2 * BIG, head]
    assert ds[2].tolist() == [11, 12, 13]
    assert ds.get(1, offset=BIG - 2).tolist() == [0, 0]
