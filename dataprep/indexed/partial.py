"""A writer's unfinished output: the temporary file names and the state to resume from.

IndexedDatasetWriter streams tokens into `{prefix}.bin.tmp` and writes `{prefix}.idx.tmp` on
close (`bin_tmp_path`, `idx_tmp_path`). `WriterState` records how far a writer got (bytes
flushed, sequence lengths, document indices, dtype code); it is saved as an `.npz` and passed
back as `resume_from=` to truncate `.bin.tmp` to it and carry on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataprep.errors import DataprepError


def bin_tmp_path(path_prefix: str | os.PathLike) -> Path:
    return Path(os.fspath(path_prefix) + ".bin.tmp")


def idx_tmp_path(path_prefix: str | os.PathLike) -> Path:
    return Path(os.fspath(path_prefix) + ".idx.tmp")


@dataclass(frozen=True, eq=False)
class WriterState:
    """Where a writer stood: enough to truncate `.bin.tmp` back to it and resume."""

    bin_nbytes: int  # bytes of .bin written and flushed (= sum(sequence_lengths) * itemsize)
    sequence_lengths: np.ndarray  # int32, (S,)
    document_indices: np.ndarray  # int64, (D,), starts with 0, ends with S
    dtype_code: int  # header code of the token dtype

    @property
    def num_documents(self) -> int:
        return int(self.document_indices.shape[0]) - 1

    def save(self, path: str | os.PathLike) -> None:
        """Save as an uncompressed `.npz` (written to a temporary name, then renamed)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(
                f,
                bin_nbytes=np.int64(self.bin_nbytes),
                sequence_lengths=self.sequence_lengths,
                document_indices=self.document_indices,
                dtype_code=np.int64(self.dtype_code),
            )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> WriterState:
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(
                    bin_nbytes=int(z["bin_nbytes"]),
                    sequence_lengths=z["sequence_lengths"].astype(np.int32, copy=False),
                    document_indices=z["document_indices"].astype(np.int64, copy=False),
                    dtype_code=int(z["dtype_code"]),
                )
        except (OSError, KeyError, ValueError) as e:
            raise DataprepError(f"{path}: cannot read the saved writer state: {e}") from e
