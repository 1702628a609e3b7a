"""IndexedDatasetWriter: writes a Megatron MMIDIDX `.bin/.idx` pair, byte-identical to
megatron-core's `IndexedDatasetBuilder` for the same documents (its `add_document`, `end_document`
and `add_index` merge).

Tokens stream into `{prefix}.bin.tmp`; `close()` writes `{prefix}.idx.tmp` and renames `.bin`
then `.idx` into place, so a complete pair appears only after success. On an exception inside
`with`, both temporary files are removed, unless `keep_partial=True`: then `.bin.tmp` stays, and
a later writer created with `resume_from=state` truncates it back to a `WriterState` saved
earlier and carries on.
"""

from __future__ import annotations

import array
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dataprep.errors import DataprepError
from dataprep.indexed import format as fmt
from dataprep.indexed.partial import WriterState, bin_tmp_path, idx_tmp_path

logger = logging.getLogger(__name__)

_COPY_CHUNK = 64 << 20  # bytes per copy_file_range / copyfileobj step in add_index
_BUFFER_SIZE = 4 << 20  # write buffer of the .bin file


class _GrowingArray:
    """Append-only int64 array: single values go to an `array('q')` tail, blocks to numpy chunks."""

    def __init__(self, initial: np.ndarray | None = None) -> None:
        self._chunks: list[np.ndarray] = [] if initial is None else [np.asarray(initial, np.int64)]
        self._chunked = sum(c.shape[0] for c in self._chunks)
        self._tail = array.array("q")
        self.append = self._tail.append  # the hot path: one C call per value

    def __len__(self) -> int:
        return self._chunked + len(self._tail)

    def extend_small(self, values: Sequence[int]) -> None:
        self._tail.extend(values)

    def extend(self, values: np.ndarray) -> None:
        self._flush()
        values = np.array(values, dtype=np.int64)  # a copy: the caller may reuse its array
        self._chunks.append(values)
        self._chunked += values.shape[0]

    def _flush(self) -> None:
        if self._tail:
            self._chunks.append(np.frombuffer(self._tail, np.int64).copy())
            self._chunked += len(self._tail)
            del self._tail[:]  # keeps the same object, so `self.append` stays bound to it

    def to_array(self) -> np.ndarray:
        self._flush()
        if len(self._chunks) != 1:
            whole = np.concatenate(self._chunks) if self._chunks else np.empty(0, np.int64)
            self._chunks = [whole]
        return self._chunks[0]


class IndexedDatasetWriter:
    """Write documents to `{path_prefix}.bin/.idx`.

    with IndexedDatasetWriter("out/pile_text_document", dtype=np.uint16) as w:
        w.add_document(ids)                                # one document, one sequence
        w.add_document(ids, sequence_lengths=[3, 5])       # one document of two sentences
    """

    def __init__(
        self,
        path_prefix: str | os.PathLike,
        *,
        dtype: np.dtype | type | str,
        resume_from: WriterState | None = None,
        keep_partial: bool = False,
    ) -> None:
        self.path_prefix = os.fspath(path_prefix)
        self.dtype = fmt.little_endian(dtype)
        self._code = fmt.code_from_dtype(self.dtype)
        self._itemsize = self.dtype.itemsize
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            self._range: tuple[int, int] | None = (int(info.min), int(info.max))
        else:
            self._range = None
        self._needs_check: dict[np.dtype, bool] = {}  # input dtype -> must its values be checked
        self.keep_partial = keep_partial or resume_from is not None
        self._bin_tmp = bin_tmp_path(self.path_prefix)
        self._idx_tmp = idx_tmp_path(self.path_prefix)
        parent = self._bin_tmp.parent
        if not parent.is_dir():
            raise DataprepError(
                f"output directory {parent} does not exist; create it or choose another "
                "output prefix"
            )
        if resume_from is None:
            self._lengths = _GrowingArray()
            self._documents = _GrowingArray(np.zeros(1, np.int64))
            self._nbytes = 0
            self._bin = open(self._bin_tmp, "wb", buffering=_BUFFER_SIZE)  # noqa: SIM115
        else:
            self._resume(resume_from)
        self._closed = False

    def _resume(self, state: WriterState) -> None:
        if state.dtype_code != self._code:
            raise DataprepError(
                f"cannot resume {self.path_prefix}: the saved state is for dtype "
                f"{fmt.dtype_from_code(state.dtype_code).name}, this writer has {self.dtype.name}"
            )
        lengths = np.asarray(state.sequence_lengths)
        documents = np.asarray(state.document_indices)
        if (
            documents.shape[0] < 1
            or documents[0] != 0
            or documents[-1] != lengths.shape[0]
            or fmt.bin_nbytes(lengths, self._itemsize) != state.bin_nbytes
        ):
            raise DataprepError(
                f"cannot resume {self.path_prefix}: the saved writer state is inconsistent "
                f"({lengths.shape[0]} sequences, {documents.shape[0]} document indices, "
                f"{state.bin_nbytes} bytes); start the build again without resuming"
            )
        if not self._bin_tmp.exists():
            raise DataprepError(
                f"cannot resume {self.path_prefix}: {self._bin_tmp} is missing; start the build "
                "again"
            )
        size = self._bin_tmp.stat().st_size
        if size < state.bin_nbytes:
            raise DataprepError(
                f"cannot resume {self.path_prefix}: {self._bin_tmp} has {size} bytes, fewer than "
                "the "
                f"{state.bin_nbytes} recorded in the saved state; start the build again"
            )
        self._bin = open(self._bin_tmp, "r+b", buffering=_BUFFER_SIZE)  # noqa: SIM115
        self._bin.truncate(state.bin_nbytes)
        self._bin.seek(state.bin_nbytes)
        self._nbytes = state.bin_nbytes
        self._lengths = _GrowingArray(lengths)
        self._documents = _GrowingArray(documents)
        logger.info(
            "resuming %s at %d documents, %d bytes (dropped %d bytes written after the saved "
            "state)",
            self.path_prefix,
            state.num_documents,
            state.bin_nbytes,
            size - state.bin_nbytes,
        )

    # ------------------------------------------------------------------ adding data
    def _as_tokens(self, tokens: np.ndarray | Sequence[int]) -> np.ndarray:
        """Tokens as a contiguous array of self.dtype; DataprepError if a value does not fit."""
        arr = tokens if type(tokens) is np.ndarray else np.asarray(tokens)
        if arr.ndim != 1:
            raise ValueError(f"tokens must be one-dimensional, got shape {arr.shape}")
        if arr.shape[0] == 0:
            return np.empty(0, self.dtype)
        check = self._needs_check.get(arr.dtype)
        if check is None:
            if self._range is not None and arr.dtype.kind not in "iub":
                raise DataprepError(
                    f"{self.path_prefix}: token ids must be integers, got an array of {arr.dtype}"
                )
            check = self._range is not None and not np.can_cast(arr.dtype, self.dtype)
            self._needs_check[arr.dtype] = check
        if check:
            if self._range[0] == 0 and arr.dtype.kind == "i" and arr.itemsize >= self._itemsize:
                # unsigned target, input at least as wide: one reduction over the bits read as
                # unsigned catches negative values too (they become huge)
                if arr.view(arr.dtype.str.replace("i", "u")).max() > self._range[1]:
                    lo, hi = arr.min(), arr.max()
                    self._range_error(int(lo) if lo < 0 else int(hi))
            else:
                lo, hi = arr.min(), arr.max()
                if lo < self._range[0] or hi > self._range[1]:
                    self._range_error(int(lo) if lo < self._range[0] else int(hi))
        return arr.astype(self.dtype, order="C", copy=False)

    def _range_error(self, value: int) -> None:
        hint = (
            "use dtype int32 (a vocabulary of 65500 or more needs it)"
            if self.dtype.itemsize < 4 and value >= 0
            else "check the tokenizer that produced these ids"
        )
        raise DataprepError(
            f"{self.path_prefix}: token id {value} does not fit the dataset dtype "
            f"{self.dtype.name} (range {self._range[0]}..{self._range[1]}); {hint}"
        )

    def _write(self, arr: np.ndarray) -> None:
        if arr.shape[0]:
            self._bin.write(arr.data)
            self._nbytes += arr.nbytes

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"writer for {self.path_prefix} is already closed")

    def add_document(
        self,
        tokens: np.ndarray | Sequence[int],
        *,
        sequence_lengths: Sequence[int] | None = None,
    ) -> None:
        """Append one document. Without `sequence_lengths` it is one sequence, or none if it is
        empty (what Megatron's preprocess_data writes for an empty document); with them, one per
        sentence."""
        self._check_open()
        arr = self._as_tokens(tokens)
        if sequence_lengths is None:
            if arr.size > fmt.INT32_MAX:
                raise ValueError(
                    f"a document of {arr.size} tokens does not fit one sequence (int32 length); "
                    "pass sequence_lengths to split it"
                )
            if arr.size:
                self._lengths.append(arr.size)
        else:
            lengths = (
                sequence_lengths
                if isinstance(sequence_lengths, list | tuple)
                else np.asarray(sequence_lengths).reshape(-1).tolist()
            )
            if lengths and (min(lengths) < 0 or max(lengths) > fmt.INT32_MAX):
                raise ValueError(f"sequence lengths must be in [0, {fmt.INT32_MAX}], got {lengths}")
            if sum(lengths) != arr.shape[0]:
                raise ValueError(
                    f"sequence_lengths sum to {sum(lengths)} but the document has "
                    f"{arr.shape[0]} tokens"
                )
            self._lengths.extend_small(lengths)
        self._write(arr)
        self._documents.append(len(self._lengths))

    def add_documents(self, tokens: np.ndarray, document_lengths: np.ndarray) -> None:
        """Append many documents at once, one sequence each: `tokens` is all of them concatenated.

        Equivalent to `add_document(doc)` for each document (an empty one adds no sequence), but
        vectorised: one range check, one write, no Python loop per document.
        """
        self._check_open()
        arr = self._as_tokens(tokens)
        lengths = np.asarray(document_lengths)
        if lengths.ndim != 1 or (lengths.size and lengths.dtype.kind not in "iu"):
            raise ValueError("document_lengths must be a 1-D integer array")
        lengths = lengths.astype(np.int64, copy=False)
        if lengths.size and (lengths.min() < 0 or lengths.max() > fmt.INT32_MAX):
            raise ValueError(f"document lengths must be in [0, {fmt.INT32_MAX}]")
        total = int(lengths.sum())
        if total != arr.size:
            raise ValueError(f"document_lengths sum to {total} but {arr.size} tokens were given")
        nonempty = lengths > 0
        start = len(self._lengths)
        self._lengths.extend(lengths[nonempty])
        self._documents.extend(start + np.cumsum(nonempty, dtype=np.int64))
        self._write(arr)

    def add_index(self, path_prefix: str | os.PathLike) -> None:
        """Append a whole dataset (Megatron `add_index`): its sequences, its documents rebased, and
        its `.bin` copied as a stream (copy_file_range where the OS has it), never loaded into
        memory."""
        from dataprep.indexed.reader import IndexedDatasetReader

        self._check_open()
        other = IndexedDatasetReader(path_prefix)
        if other.dtype != self.dtype:
            raise DataprepError(
                f"cannot append {other.path_prefix} (dtype {other.dtype.name}) to "
                f"{self.path_prefix} "
                f"(dtype {self.dtype.name}); datasets must share a token dtype"
            )
        offset = len(self._lengths)
        self._lengths.extend(other.sequence_lengths)
        self._documents.extend(other.document_indices[1:] + offset)
        nbytes = fmt.bin_nbytes(other.sequence_lengths, self._itemsize)
        with open(other.path_prefix + ".bin", "rb") as src:
            self._copy_from(src, nbytes)
        self._nbytes += nbytes
        del other

    def _copy_from(self, src, nbytes: int) -> None:
        self._bin.flush()
        dst_fd, src_fd = self._bin.fileno(), src.fileno()
        done = 0
        if hasattr(os, "copy_file_range"):
            try:
                while done < nbytes:
                    n = os.copy_file_range(
                        src_fd, dst_fd, min(_COPY_CHUNK, nbytes - done), done, self._nbytes + done
                    )
                    if n == 0:
                        break
                    done += n
            except OSError:  # e.g. EXDEV or ENOSYS: fall back to a plain stream copy
                pass
        src.seek(done)
        self._bin.seek(self._nbytes + done)
        if done < nbytes:
            shutil.copyfileobj(src, self._bin, _COPY_CHUNK)
        if self._bin.tell() != self._nbytes + nbytes:
            raise DataprepError(
                f"{src.name}: copied {self._bin.tell() - self._nbytes} bytes, "
                f"expected {nbytes}; was the file changed while merging?"
            )

    # ------------------------------------------------------------------ state and finishing
    @property
    def num_documents(self) -> int:
        return len(self._documents) - 1

    @property
    def num_sequences(self) -> int:
        return len(self._lengths)

    @property
    def bin_nbytes(self) -> int:
        return self._nbytes

    def state(self) -> WriterState:
        """Flush and fsync `.bin.tmp` and return where the writer stands (cheap to `save`)."""
        self._check_open()
        self._bin.flush()
        os.fsync(self._bin.fileno())
        return WriterState(
            bin_nbytes=self._nbytes,
            sequence_lengths=self._lengths.to_array().astype(np.int32),
            document_indices=self._documents.to_array().copy(),
            dtype_code=self._code,
        )

    def close(self) -> None:
        """Write the index, move `.bin` then `.idx` into place; on failure remove temporaries."""
        if self._closed:
            return
        bin_path = Path(self.path_prefix + ".bin")
        idx_path = Path(self.path_prefix + ".idx")
        try:
            self._bin.flush()
            os.fsync(self._bin.fileno())
            self._bin.close()
            with open(self._idx_tmp, "wb") as f:
                for part in fmt.iter_index_bytes(
                    self.dtype, self._lengths.to_array(), self._documents.to_array()
                ):
                    f.write(part)
                f.flush()
                os.fsync(f.fileno())
            idx_path.unlink(missing_ok=True)  # never leave an old .idx beside the new .bin
            os.replace(self._bin_tmp, bin_path)
            os.replace(self._idx_tmp, idx_path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        logger.debug(
            "wrote %s: %d documents, %d sequences, %d bytes",
            self.path_prefix,
            self.num_documents,
            self.num_sequences,
            self._nbytes,
        )

    def abort(self) -> None:
        """Stop without finishing: remove the temporary files (keep `.bin.tmp` if keep_partial)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._bin.close()
        finally:
            self._idx_tmp.unlink(missing_ok=True)
            if not self.keep_partial:
                self._bin_tmp.unlink(missing_ok=True)

    def __enter__(self) -> IndexedDatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
