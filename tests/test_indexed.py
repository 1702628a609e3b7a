"""IndexedDatasetWriter / IndexedDatasetReader against real megatron-core 0.16.1 (the oracle).

Byte equality with `IndexedDatasetBuilder`, reading each other's files, round trips, corrupt files,
range checks, cleanup on error and resumable writing.
"""

import gc
import os
import pickle
import struct
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataprep.errors import DataprepError, IndexFormatError, UsageError
from dataprep.indexed import IndexedDatasetReader, IndexedDatasetWriter, WriterState
from dataprep.indexed import format as fmt


@pytest.fixture(scope="session")
def megatron():
    """megatron-core's indexed_dataset module (slow to import, so only when a test needs it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset


def random_documents(rng, n_docs, vocab, *, max_sentences=4, max_len=40):
    """(tokens, sentence lengths) per document; includes empty documents and empty sentences."""
    docs = []
    for _ in range(n_docs):
        kind = rng.random()
        if kind < 0.1:
            docs.append(
                (np.zeros(0, np.int64), [])
            )  # empty document, no sequence (preprocess_data)
            continue
        n_sent = 1 if kind < 0.5 else int(rng.integers(1, max_sentences + 1))
        lengths = rng.integers(0 if n_sent > 1 else 1, max_len, size=n_sent).tolist()
        docs.append((rng.integers(0, vocab, size=sum(lengths)), lengths))
    return docs


def write_ours(prefix, docs, dtype):
    with IndexedDatasetWriter(prefix, dtype=dtype) as w:
        for tokens, lengths in docs:
            w.add_document(tokens, sequence_lengths=lengths)


def write_megatron(megatron, prefix, docs, dtype):
    builder = megatron.IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    for tokens, lengths in docs:
        builder.add_document(np.asarray(tokens), lengths)
    builder.finalize(prefix + ".idx")


def read_bytes(prefix):
    with open(prefix + ".bin", "rb") as b, open(prefix + ".idx", "rb") as i:
        return b.read(), i.read()


DTYPES = [(np.uint16, 50257), (np.int32, 250100)]


@pytest.mark.parametrize(("dtype", "vocab"), DTYPES)
def test_bytes_equal_megatron_builder(tmp_path, megatron, dtype, vocab):
    docs = random_documents(np.random.default_rng(vocab), 60, vocab)
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    write_ours(ours, docs, dtype)
    write_megatron(megatron, theirs, docs, dtype)
    ours_bin, ours_idx = read_bytes(ours)
    theirs_bin, theirs_idx = read_bytes(theirs)
    assert ours_idx == theirs_idx
    assert ours_bin == theirs_bin
    assert len(ours_bin) > 0


def test_bytes_equal_megatron_for_an_empty_dataset(tmp_path, megatron):
    write_ours(str(tmp_path / "ours"), [], np.uint16)
    write_megatron(megatron, str(tmp_path / "theirs"), [], np.uint16)
    assert read_bytes(str(tmp_path / "ours")) == read_bytes(str(tmp_path / "theirs"))


@pytest.mark.parametrize(("dtype", "vocab"), DTYPES)
def test_megatron_reads_our_files(tmp_path, megatron, dtype, vocab):
    docs = random_documents(np.random.default_rng(1), 50, vocab)
    prefix = str(tmp_path / "ours")
    write_ours(prefix, docs, dtype)
    ds = megatron.IndexedDataset(prefix)
    sentences = [
        tokens[start : start + n]
        for tokens, lengths in docs
        for start, n in zip(np.cumsum([0, *lengths])[:-1], lengths, strict=True)
    ]
    assert len(ds) == len(sentences)
    for i, expected in enumerate(sentences):
        got = ds[i]
        assert got.dtype == np.dtype(dtype)
        assert got.tolist() == expected.tolist()
    expected_documents = np.cumsum([0] + [len(lengths) for _, lengths in docs])
    assert ds.document_indices.tolist() == expected_documents.tolist()
    assert ds.sequence_lengths.tolist() == [len(s) for s in sentences]


@pytest.mark.parametrize(("dtype", "vocab"), DTYPES)
def test_our_reader_reads_megatron_files(tmp_path, megatron, dtype, vocab):
    docs = random_documents(np.random.default_rng(2), 50, vocab)
    prefix = str(tmp_path / "theirs")
    write_megatron(megatron, prefix, docs, dtype)
    ds = megatron.IndexedDataset(prefix)
    r = IndexedDatasetReader(prefix)
    assert r.dtype == np.dtype(dtype)
    assert len(r) == len(ds)
    assert r.num_documents == len(docs)
    assert r.sequence_lengths.tolist() == ds.sequence_lengths.tolist()
    assert r.document_indices.tolist() == ds.document_indices.tolist()
    assert r.sequence_pointers.tolist() == ds.index.sequence_pointers.tolist()
    for i in range(len(r)):
        assert r[i].tolist() == ds[i].tolist()
        if len(r[i]) >= 3:
            assert r.get(i, offset=1, length=2).tolist() == ds.get(i, offset=1, length=2).tolist()
    for d, (tokens, _) in enumerate(docs):
        assert r.get_document(d).tolist() == list(tokens)
    assert r.tokens().tolist() == [t for tokens, _ in docs for t in tokens]
    assert r.num_tokens == sum(len(tokens) for tokens, _ in docs)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_add_documents_equals_add_document_loop(tmp_path, dtype):
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 30, size=200)
    lengths[[0, 17, 199]] = 0  # empty documents at the start, middle and end
    tokens = rng.integers(0, 60000, size=int(lengths.sum()))
    bulk, loop = str(tmp_path / "bulk"), str(tmp_path / "loop")
    with IndexedDatasetWriter(bulk, dtype=dtype) as w:
        w.add_documents(tokens, lengths)
    with IndexedDatasetWriter(loop, dtype=dtype) as w:
        for doc in np.split(tokens, np.cumsum(lengths)[:-1]):
            w.add_document(doc)
    assert read_bytes(bulk) == read_bytes(loop)
    r = IndexedDatasetReader(bulk)
    assert r.num_documents == 200
    assert len(r) == int((lengths > 0).sum())


def test_add_documents_in_pieces_mixed_with_add_document(tmp_path):
    rng = np.random.default_rng(4)
    lengths = rng.integers(0, 20, size=30)
    tokens = rng.integers(0, 1000, size=int(lengths.sum()))
    ends = np.cumsum(lengths)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    with IndexedDatasetWriter(a, dtype=np.uint16) as w:
        w.add_documents(tokens[: ends[9]], lengths[:10])
        w.add_document([7, 8, 9], sequence_lengths=[1, 2])
        w.add_documents(tokens[ends[9] :], lengths[10:])
    with IndexedDatasetWriter(b, dtype=np.uint16) as w:
        for doc in np.split(tokens[: ends[9]], ends[:9]):
            w.add_document(doc)
        w.add_document(np.array([7, 8, 9]), sequence_lengths=np.array([1, 2]))
        for doc in np.split(tokens[ends[9] :], ends[10:-1] - ends[9]):
            w.add_document(doc)
    assert read_bytes(a) == read_bytes(b)
    assert IndexedDatasetReader(a).get_document(10).tolist() == [7, 8, 9]


@given(
    dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.uint16, np.int32, np.int64]),
    data=st.data(),
)
def test_round_trip_any_values_in_range(dtype, data):
    info = np.iinfo(dtype)
    ints = st.integers(int(info.min), int(info.max))
    docs = data.draw(st.lists(st.lists(st.lists(ints, max_size=8), max_size=3), max_size=6))
    with tempfile.TemporaryDirectory() as d:
        prefix = os.path.join(d, "rt")
        with IndexedDatasetWriter(prefix, dtype=dtype) as w:
            for sentences in docs:
                flat = [t for s in sentences for t in s]
                w.add_document(flat, sequence_lengths=[len(s) for s in sentences])
        r = IndexedDatasetReader(prefix)
        assert r.dtype == np.dtype(dtype)
        assert r.num_documents == len(docs)
        assert [r[i].tolist() for i in range(len(r))] == [s for doc in docs for s in doc]
        assert [r.get_document(i).tolist() for i in range(len(docs))] == [
            [t for s in doc for t in s] for doc in docs
        ]


# ---------------------------------------------------------------------------- reader access
@pytest.fixture
def small(tmp_path):
    prefix = str(tmp_path / "small")
    with IndexedDatasetWriter(prefix, dtype=np.uint16) as w:
        w.add_document([1, 2, 3, 4, 5])
        w.add_document([])
        w.add_document([6, 7, 8], sequence_lengths=[2, 0, 1])
    return prefix


def test_reader_access(small):
    r = IndexedDatasetReader(small)
    assert r.sequence_lengths.tolist() == [5, 2, 0, 1]
    assert r.sequence_pointers.tolist() == [0, 10, 14, 14]
    assert r.document_indices.tolist() == [0, 1, 1, 4]
    assert (r.sequence_lengths.dtype, r.sequence_pointers.dtype) == (np.int32, np.int64)
    assert r.document_indices.dtype == np.int64
    assert (len(r), r.num_documents, r.num_tokens) == (4, 3, 8)
    assert r[-1].tolist() == [8] and r[2].tolist() == []
    assert [a.tolist() for a in r[1:3]] == [[6, 7], []]
    assert r.get(0, offset=1, length=3).tolist() == [2, 3, 4]
    assert r.get(0, offset=3).tolist() == [4, 5]
    assert r.get_document(1).tolist() == [] and r.get_document(-1).tolist() == [6, 7, 8]
    with pytest.raises(IndexError):
        r[4]
    with pytest.raises(IndexError):
        r.get_document(3)
    with pytest.raises(ValueError, match="do not fit sequence 0 of 5 tokens"):
        r.get(0, offset=4, length=2)
    first = IndexedDatasetReader(small)[0]  # arrays stay valid after the reader is gone
    gc.collect()
    assert first.tolist() == [1, 2, 3, 4, 5]
    clone = pickle.loads(pickle.dumps(r))
    assert clone.get_document(2).tolist() == [6, 7, 8]


def test_missing_files_are_named(tmp_path, small):
    os.remove(small + ".bin")
    with pytest.raises(DataprepError, match=r"missing .*small\.bin"):
        IndexedDatasetReader(small)
    with pytest.raises(DataprepError, match=r"without the suffix: .*small\)"):
        IndexedDatasetReader(small + ".idx")


def test_a_build_output_prefix_points_at_the_datasets_it_wrote(tmp_path):
    """`inspect out/pile` (the --output-prefix) names out/pile_text_document (what was built)."""
    for key in ("text", "title"):
        w = IndexedDatasetWriter(tmp_path / f"pile_{key}_document", dtype=np.uint16)
        w.add_document([1, 2])
        w.close()
    (tmp_path / "pile_stray_document.idx").write_bytes(b"")  # no .bin: not a dataset
    with pytest.raises(UsageError) as e:
        IndexedDatasetReader(tmp_path / "pile")
    assert str(e.value).endswith(
        f"no dataset has that prefix; did you mean {tmp_path}/pile_text_document or "
        f"{tmp_path}/pile_title_document? (build-index names its datasets "
        "OUTPUT_PREFIX_{json-key}_document)"
    )
    with pytest.raises(UsageError) as e:
        IndexedDatasetReader(tmp_path / "other")
    assert "did you mean" not in str(e.value)


# ---------------------------------------------------------------------------- corrupt files
def _patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


S = 4  # sequences in `small`
CORRUPTIONS = {
    "bad magic": (lambda p: _patch(p + ".idx", 0, b"XXIDIDX"), "bad magic"),
    "version": (lambda p: _patch(p + ".idx", 9, struct.pack("<Q", 3)), "version 3"),
    "dtype code": (lambda p: _patch(p + ".idx", 17, b"\x63"), "unknown dtype code 99"),
    "empty idx": (lambda p: _truncate(p + ".idx", 0), "shorter than the 34-byte"),
    "truncated arrays": (lambda p: _truncate(p + ".idx", 60), "truncated"),
    "trailing bytes": (
        lambda p: _patch(p + ".idx", os.path.getsize(p + ".idx"), b"\0" * S),
        "multimodal",
    ),
    "bin too short": (lambda p: _truncate(p + ".bin", 15), r"small\.bin: too short"),
    "bin too long": (lambda p: _patch(p + ".bin", 16, b"\0\0"), "too long"),
    "first doc index": (
        lambda p: _patch(p + ".idx", 34 + 12 * S, struct.pack("<q", 1)),
        "must start with 0",
    ),
    "last doc index": (
        lambda p: _patch(p + ".idx", 34 + 12 * S + 24, struct.pack("<q", 5)),
        "end with the sequence count 4",
    ),
    "decreasing": (
        lambda p: _patch(p + ".idx", 34 + 12 * S + 8, struct.pack("<q", 3)),
        "decrease at position 1",
    ),
    "pointer": (
        lambda p: _patch(p + ".idx", 34 + 4 * S + 8, struct.pack("<q", 12)),
        r"sequence_pointers\[1\] = 12, expected 10",
    ),
    "negative length": (
        lambda p: _patch(p + ".idx", 34 + 4, struct.pack("<i", -2)),
        r"sequence_lengths\[1\] = -2",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_index_raises_index_format_error(small, case):
    corrupt, match = CORRUPTIONS[case]
    corrupt(small)
    with pytest.raises(IndexFormatError, match=match) as e:
        IndexedDatasetReader(small)
    assert "small." in str(e.value)  # the message names the file


# ---------------------------------------------------------------------------- writer checks
def test_token_that_does_not_fit_is_an_error_not_a_wrap(tmp_path):
    prefix = str(tmp_path / "x")
    with pytest.raises(DataprepError, match=r"token id 65536 does not fit .* uint16"):
        with IndexedDatasetWriter(prefix, dtype=np.uint16) as w:
            w.add_document([1, 2, 65536])
    with pytest.raises(DataprepError, match=r"token id -1 does not fit .* uint16"):
        with IndexedDatasetWriter(prefix, dtype=np.uint16) as w:
            w.add_documents(np.array([5, -1], np.int64), np.array([2]))
    with pytest.raises(DataprepError, match=r"token id 2147483648 does not fit .* int32"):
        with IndexedDatasetWriter(prefix, dtype=np.int32) as w:
            w.add_document(np.array([2**31], np.int64))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("values", "src", "dst", "bad"),
    [
        ([1, -1], np.int8, np.uint16, -1),  # narrower signed input
        ([1, -1], ">i8", np.uint16, -1),  # big-endian input
        ([1, 70000], ">i8", np.uint16, 70000),
        ([3, 300], np.uint16, np.uint8, 300),
        ([3, -129], np.int16, np.int8, -129),
        ([1, 2**32 - 1], np.uint32, np.int32, 2**32 - 1),
        ([1, 2**63], np.uint64, np.int64, 2**63),
    ],
)
def test_range_check_for_every_input_dtype(tmp_path, values, src, dst, bad):
    w = IndexedDatasetWriter(str(tmp_path / "x"), dtype=dst)
    with pytest.raises(DataprepError, match=f"token id {bad} does not fit"):
        w.add_document(np.array(values, dtype=src))
    w.add_document(np.array(values[:1], dtype=src))  # values in range still pass
    w.abort()


def test_values_in_range_are_converted_exactly(tmp_path):
    prefix = str(tmp_path / "x")
    with IndexedDatasetWriter(prefix, dtype=np.uint16) as w:
        w.add_document(np.array([0, 65535, 7], ">i8"))
        w.add_document(np.array([1, 2], np.int8))
        w.add_document(np.array([True, False]))
    assert IndexedDatasetReader(prefix).tokens().tolist() == [0, 65535, 7, 1, 2, 1, 0]


def test_lengths_must_match_tokens(tmp_path):
    with IndexedDatasetWriter(str(tmp_path / "x"), dtype=np.uint16) as w:
        with pytest.raises(ValueError, match="sum to 3 but the document has 4 tokens"):
            w.add_document([1, 2, 3, 4], sequence_lengths=[1, 2])
        with pytest.raises(ValueError, match="sum to 5 but 4 tokens"):
            w.add_documents(np.arange(4), np.array([2, 3]))
        with pytest.raises(ValueError, match="one-dimensional"):
            w.add_document(np.zeros((2, 2), np.int64))


def test_unsupported_dtype_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="uint32 cannot be stored"):
        IndexedDatasetWriter(str(tmp_path / "x"), dtype=np.uint32)


def test_exception_inside_with_leaves_nothing_behind(tmp_path):
    prefix = str(tmp_path / "x")
    with pytest.raises(RuntimeError):
        with IndexedDatasetWriter(prefix, dtype=np.uint16) as w:
            w.add_document([1, 2, 3])
            assert os.path.exists(prefix + ".bin.tmp")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_real_names_appear_only_at_close(tmp_path):
    prefix = str(tmp_path / "x")
    w = IndexedDatasetWriter(prefix, dtype=np.uint16)
    w.add_document([1, 2, 3])
    assert sorted(os.listdir(tmp_path)) == ["x.bin.tmp"]
    w.close()
    assert sorted(os.listdir(tmp_path)) == ["x.bin", "x.idx"]


def test_missing_output_directory_is_named(tmp_path):
    with pytest.raises(DataprepError, match="does not exist"):
        IndexedDatasetWriter(str(tmp_path / "nope" / "x"), dtype=np.uint16)


def test_resume_truncates_to_the_saved_state(tmp_path):
    rng = np.random.default_rng(5)
    docs = [rng.integers(0, 50000, size=n) for n in rng.integers(0, 50, size=40)]
    prefix, reference = str(tmp_path / "resumed"), str(tmp_path / "reference")
    with IndexedDatasetWriter(reference, dtype=np.uint16) as w:
        for d in docs:
            w.add_document(d)

    state_file = tmp_path / "state.npz"
    with pytest.raises(KeyboardInterrupt):
        with IndexedDatasetWriter(prefix, dtype=np.uint16, keep_partial=True) as w:
            for d in docs[:20]:
                w.add_document(d)
            w.state().save(state_file)
            for d in docs[20:30]:  # written after the checkpoint: must be dropped on resume
                w.add_document(d)
            raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == [
        "reference.bin",
        "reference.idx",
        "resumed.bin.tmp",
        "state.npz",
    ]
    state = WriterState.load(state_file)
    assert state.num_documents == 20
    with IndexedDatasetWriter(prefix, dtype=np.uint16, resume_from=state) as w:
        for d in docs[20:]:
            w.add_document(d)
    assert read_bytes(prefix) == read_bytes(reference)


def test_resume_checks_dtype_and_partial_file(tmp_path):
    prefix = str(tmp_path / "x")
    w = IndexedDatasetWriter(prefix, dtype=np.uint16, keep_partial=True)
    w.add_document([1, 2, 3])
    state = w.state()
    w.abort()
    with pytest.raises(DataprepError, match="dtype uint16, this writer has int32"):
        IndexedDatasetWriter(prefix, dtype=np.int32, resume_from=state)
    _truncate(prefix + ".bin.tmp", 2)
    with pytest.raises(DataprepError, match="has 2 bytes, fewer than the 6"):
        IndexedDatasetWriter(prefix, dtype=np.uint16, resume_from=state)
    os.remove(prefix + ".bin.tmp")
    with pytest.raises(DataprepError, match="is missing"):
        IndexedDatasetWriter(prefix, dtype=np.uint16, resume_from=state)


def test_pointer_helper_matches_megatron(megatron):
    lengths = np.array([3, 0, 2**31 - 1, 5, 7], np.int32)
    writer = megatron._IndexWriter.__new__(megatron._IndexWriter)
    writer.dtype = np.int32
    assert fmt.sequence_pointers(lengths, 4).tolist() == writer._sequence_pointers(lengths)
