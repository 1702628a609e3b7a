"""IndexedDatasetReader: memory-maps a Megatron MMIDIDX `.bin/.idx` pair (as megatron-core's
`indexed_dataset.py` writes it).

Opening checks the whole index, not just the header: magic, version, dtype code, the file size
against the array sizes, document_indices (starts at 0, ends at S, never decreases), the sequence
pointers against the lengths, and the `.bin` size. Any mismatch raises IndexFormatError naming
the file and what is wrong. Reads return read-only numpy views into the memory map (no copy).
"""

from __future__ import annotations

import os
from functools import cached_property

import numpy as np

from dataprep.errors import DataprepError, IndexFormatError, UsageError
from dataprep.indexed import format as fmt

_CHECK_CHUNK = 1 << 23  # elements per step when validating long arrays


def check_dataset_files(path_prefix: str | os.PathLike) -> None:
    """Raise unless `{path_prefix}.bin` and `.idx` both exist.

    Neither there: the prefix names no dataset, a `UsageError` (exit 2, a wrong argument); only one
    there: an incomplete dataset, a `DataprepError` (exit 1, bad data).
    """
    prefix = os.fspath(path_prefix)
    missing = [p for p in (prefix + ".idx", prefix + ".bin") if not os.path.isfile(p)]
    if not missing:
        return
    hint = ""
    if prefix.endswith((".bin", ".idx")):
        hint = f" (pass the path prefix without the suffix: {prefix[:-4]})"
    if len(missing) == 2:
        if not hint:
            hint = _built_under(prefix)
        raise UsageError(
            f"dataset {prefix}: missing {' and '.join(missing)}: no dataset has that prefix{hint}"
        )
    raise DataprepError(f"dataset {prefix}: missing {missing[0]}{hint}; the pair is incomplete")


def _built_under(prefix: str) -> str:
    """A hint naming the datasets a `build-index --output-prefix {prefix}` wrote (it names them
    `{prefix}_{json-key}_{document|sentence}`), or ""."""
    import glob

    found = sorted(
        p[:-4] for p in glob.glob(glob.escape(prefix) + "_*.idx") if os.path.isfile(p[:-4] + ".bin")
    )
    if not found:
        return ""
    more = f" (or {len(found) - 3} more)" if len(found) > 3 else ""
    return (
        f"; did you mean {' or '.join(found[:3])}{more}? (build-index names its datasets "
        "OUTPUT_PREFIX_{json-key}_document)"
    )


class IndexedDatasetReader:
    """Sequence-like: `reader[i]` is the tokens of sequence i; `get_document(d)` of document d."""

    def __init__(self, path_prefix: str | os.PathLike) -> None:
        self.path_prefix = os.fspath(path_prefix)
        self.idx_path = self.path_prefix + ".idx"
        self.bin_path = self.path_prefix + ".bin"
        check_dataset_files(self.path_prefix)
        self._open()

    def _open(self) -> None:
        idx_size = os.path.getsize(self.idx_path)
        with open(self.idx_path, "rb") as f:
            header = fmt.unpack_header(f.read(fmt.HEADER_SIZE), path=self.idx_path)
        self.dtype: np.dtype = header.dtype
        S, D = header.sequence_count, header.document_count
        expected = fmt.index_nbytes(S, D)
        if idx_size != expected:
            what = "truncated" if idx_size < expected else "has trailing bytes"
            extra = ""
            if idx_size - expected == S and S:
                extra = " (exactly S more: a multimodal dataset's sequence_modes, not supported)"
            raise IndexFormatError(
                f"{self.idx_path}: {what}: the header says {S} sequences and {D} document indices, "
                f"so the file should be {expected} bytes, but it is {idx_size}{extra}; "
                "rebuild or re-copy the dataset"
            )
        if D < 1:
            raise IndexFormatError(
                f"{self.idx_path}: document_count is 0; a valid index has at least one entry "
                "(document_indices starts with 0)"
            )
        self._idx_map = np.memmap(self.idx_path, mode="r", dtype=np.uint8)
        off_lengths, off_pointers, off_documents = fmt.array_offsets(S)
        buf = self._idx_map
        self.sequence_lengths = np.frombuffer(buf, fmt.LENGTHS_DTYPE, S, off_lengths)
        self.sequence_pointers = np.frombuffer(buf, fmt.POINTERS_DTYPE, S, off_pointers)
        self.document_indices = np.frombuffer(buf, fmt.DOCUMENTS_DTYPE, D, off_documents)
        self._validate_index()

        bin_size = os.path.getsize(self.bin_path)
        itemsize = self.dtype.itemsize
        expected_bin = (
            int(self.sequence_pointers[-1]) + int(self.sequence_lengths[-1]) * itemsize if S else 0
        )
        if bin_size != expected_bin:
            what = "too short" if bin_size < expected_bin else "too long"
            raise IndexFormatError(
                f"{self.bin_path}: {what}: {bin_size} bytes, but its index {self.idx_path} "
                "describes "
                f"{expected_bin // itemsize} tokens of {self.dtype.name} = {expected_bin} bytes; "
                "the pair does not belong together or the copy is incomplete"
            )
        if bin_size:
            self._bin_map = np.memmap(self.bin_path, mode="r", dtype=np.uint8)
        else:  # mmap cannot map an empty file
            self._bin_map = np.empty(0, np.uint8)

    def _validate_index(self) -> None:
        path, S = self.idx_path, self.sequence_lengths.shape[0]
        di = self.document_indices
        if di[0] != 0 or di[-1] != S:
            raise IndexFormatError(
                f"{path}: document_indices must start with 0 and end with the sequence count {S}, "
                f"got first {int(di[0])} and last {int(di[-1])}"
            )
        itemsize = self.dtype.itemsize
        start = 0
        for i in range(0, max(S, di.shape[0]), _CHECK_CHUNK):
            d = di[i : i + _CHECK_CHUNK + 1]
            if d.shape[0] > 1 and (np.diff(d) < 0).any():
                j = i + int(np.flatnonzero(np.diff(d) < 0)[0])
                raise IndexFormatError(
                    f"{path}: document_indices decrease at position {j} "
                    f"({int(di[j])} then {int(di[j + 1])}); they must never decrease"
                )
            lengths = self.sequence_lengths[i : i + _CHECK_CHUNK]
            if lengths.size == 0:
                continue
            if lengths.min() < 0:
                j = i + int(np.argmin(lengths))
                raise IndexFormatError(
                    f"{path}: sequence_lengths[{j}] = {int(lengths.min())} is negative"
                )
            expected = fmt.sequence_pointers(lengths, itemsize, start=start)
            actual = self.sequence_pointers[i : i + _CHECK_CHUNK]
            if not np.array_equal(expected, actual):
                j = i + int(np.flatnonzero(expected != actual)[0])
                raise IndexFormatError(
                    f"{path}: sequence_pointers[{j}] = {int(self.sequence_pointers[j])}, expected "
                    f"{int(expected[j - i])} (the sum of the preceding lengths x {itemsize} bytes)"
                )
            start = int(expected[-1]) + int(lengths[-1]) * itemsize

    # ------------------------------------------------------------------ pickling (DataLoader
    # workers)
    def __getstate__(self) -> dict:
        return {"path_prefix": self.path_prefix}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path_prefix"])

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return int(self.sequence_lengths.shape[0])

    @property
    def num_sequences(self) -> int:
        return len(self)

    @property
    def num_documents(self) -> int:
        return int(self.document_indices.shape[0]) - 1

    @cached_property
    def num_tokens(self) -> int:
        return int(self.sequence_lengths.sum(dtype=np.int64))

    def __repr__(self) -> str:
        return (
            f"IndexedDatasetReader({self.path_prefix!r}: {self.num_documents} documents, "
            f"{len(self)} sequences, {self.dtype.name})"
        )

    # ------------------------------------------------------------------ access
    def _index(self, index: int) -> int:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sequence index {index} out of range for {n} sequences")
        return i

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self.get(i) for i in range(*index.indices(len(self)))]
        return self.get(index)

    def get(self, index: int, *, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens `offset : offset + length` of sequence `index` (all of it by default)."""
        i = self._index(index)
        size = int(self.sequence_lengths[i])
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise ValueError(
                f"offset {offset} and length {length} do not fit sequence {i} of {size} tokens"
            )
        start = int(self.sequence_pointers[i]) + offset * self.dtype.itemsize
        return np.frombuffer(self._bin_map, self.dtype, length, start)

    def get_document(self, doc: int) -> np.ndarray:
        """All sequences of document `doc`, concatenated (they are contiguous in `.bin`)."""
        n = self.num_documents
        d = int(doc) + n if int(doc) < 0 else int(doc)
        if not 0 <= d < n:
            raise IndexError(f"document index {doc} out of range for {n} documents")
        first, last = int(self.document_indices[d]), int(self.document_indices[d + 1])
        if first == last:
            return np.empty(0, self.dtype)
        count = int(self.sequence_lengths[first:last].sum(dtype=np.int64))
        return np.frombuffer(self._bin_map, self.dtype, count, int(self.sequence_pointers[first]))

    def tokens(self) -> np.ndarray:
        """The whole `.bin` as one flat read-only array of `dtype`."""
        return np.frombuffer(self._bin_map, self.dtype)
