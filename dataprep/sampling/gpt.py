"""GPT training samples from an indexed dataset: megatron-core's document/sample/shuffle indices.

As megatron-core's `gpt_dataset.py` (GPTDataset indices, their cache files) and
`helpers.cpp:build_sample_idx`. The arrays equal the ones megatron-core 0.16 builds for the same
dataset, split, seed, sequence length and sample count, so a run can move between Megatron and
dataprep without its data order changing. Pure numpy: the C++ sample-index loop becomes a
cumulative sum over the shuffled documents and one `searchsorted`. Sample k is
`seq_length + add_extra_token` tokens; consecutive samples (before shuffling) share
`add_extra_token` tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from dataprep.errors import ConfigError, DataprepError, UsageError
from dataprep.sampling.cache import cached_arrays, dataset_identity
from dataprep.sampling.split import SPLIT_NAMES, split_bookends, split_index, split_ranges

logger = logging.getLogger(__name__)

INT32_MAX = int(np.iinfo(np.int32).max)
SEPARATE_FINAL_EPOCH_THRESHOLD = 0.80  # megatron-core: shuffle a short last epoch on its own
CACHE_FORMAT_VERSION = 1  # bump when the description or the arrays change meaning
PAD_ID = -1  # megatron-core's `_PAD_TOKEN_ID`: fills a short final valid sample (drop_last False)


def build_document_index(
    indices: np.ndarray, num_epochs: int, rng: np.random.RandomState, separate_final_epoch: bool
) -> np.ndarray:
    """The split's sequence ids repeated `num_epochs` times and shuffled with `rng` (int32).

    With `separate_final_epoch` the first `num_epochs - 1` epochs are shuffled together and the last
    one on its own, so a short final epoch does not mix into the others.
    """
    if not separate_final_epoch or num_epochs == 1:
        document_index = np.tile(np.asarray(indices, dtype=np.int32), num_epochs)
        rng.shuffle(document_index)
        return document_index
    first = build_document_index(indices, num_epochs - 1, rng, False)
    last = build_document_index(indices, 1, rng, False)
    return np.concatenate([first, last])


def build_sample_index(
    sequence_lengths: np.ndarray,
    document_index: np.ndarray,
    *,
    seq_length: int,
    num_epochs: int,
    tokens_per_epoch: int,
    drop_last_partial_sequence: bool = True,
    add_extra_token: int = 1,
) -> np.ndarray:
    """(num_samples + 1, 2) array: row s = (position in document_index, token offset) where sample s
    starts; sample s ends `add_extra_token` tokens past where sample s + 1 starts.

    Formula: with C the cumulative token count over `document_index`, sample s starts at global
    token s * seq_length, and row s (s >= 1) names the document holding the end of window s - 1,
    i.e. the first position p with C[p + 1] >= s * seq_length + E, and offset s * seq_length - C[p].
    num_samples = (num_epochs * tokens_per_epoch - E) // seq_length (ceil when not dropping the
    last partial sequence, computed in float32 like the C++). Example: lengths [3, 5], E = 1,
    seq_length 3, one epoch: 2 samples, rows (0, 0), (1, 0), (1, 3); sample 0 = doc0[0:3] +
    doc1[0:1].
    int32 unless a document position or a length exceeds int32, as megatron-core.
    """
    E, L = int(add_extra_token), int(seq_length)
    total = int(num_epochs) * int(tokens_per_epoch)
    if drop_last_partial_sequence:
        num_samples = (total - E) // L
    else:  # C++: ceil(float(total - E) / seq_length) in single precision
        num_samples = int(np.ceil(np.float32(total - E) / np.float32(L)))
    num_samples = max(num_samples, 0)
    document_index = np.asarray(document_index)
    sequence_lengths = np.asarray(sequence_lengths)
    largest = max(len(document_index), int(sequence_lengths.max()) if len(sequence_lengths) else 0)
    dtype = np.int32 if largest <= INT32_MAX else np.int64

    sample_index = np.zeros((num_samples + 1, 2), dtype=dtype)
    if num_samples == 0:
        return sample_index
    lengths = np.take(sequence_lengths, document_index)  # tokens at each position
    ends = lengths.astype(np.int64)  # C[p + 1]: tokens up to and including position p
    np.cumsum(ends, out=ends)  # in place: far quicker than cumsum(dtype=int64) on int32
    window_ends = np.arange(1, num_samples + 1, dtype=np.int64) * L + E  # exclusive, (num_samples,)
    position = np.searchsorted(ends, window_ends, side="left")
    # Only the last window of a non-dropped partial sequence can run past the data: the C++ then
    # stops at the last document with offset len - E.
    past_end = position >= len(document_index)
    position[past_end] = len(document_index) - 1
    offset = window_ends - E - (ends[position] - lengths[position].astype(np.int64))
    offset[past_end] = int(lengths[-1]) - E
    sample_index[1:, 0] = position
    sample_index[1:, 1] = offset
    return sample_index


def build_shuffle_index(
    num_samples: int, total_size: int, rng: np.random.RandomState
) -> np.ndarray:
    """A permutation of [0, total_size): [0, num_samples) shuffled, then the rest shuffled apart.

    uint32, or int64 from 2**32 - 2 samples on, as megatron-core.
    """
    dtype = np.uint32 if total_size < int(np.iinfo(np.uint32).max) - 1 else np.int64
    first = np.arange(num_samples, dtype=dtype)
    rng.shuffle(first)
    if num_samples == total_size:
        return first
    last = np.arange(num_samples, total_size, dtype=dtype)
    rng.shuffle(last)
    return np.concatenate([first, last])


def plan_epochs(
    tokens_per_epoch: int, num_samples: int | None, *, seq_length: int, add_extra_token: int
) -> tuple[int, bool, int]:
    """(num_epochs, separate_final_epoch, samples before the final epoch) as megatron-core decides.

    num_epochs is the smallest n with n * tokens_per_epoch >= num_samples * seq_length + E (1 when
    num_samples is None). The final epoch is shuffled separately when it supplies fewer than
    int(0.8 * samples per epoch) of the requested samples.
    """
    E, L = add_extra_token, seq_length
    if num_samples is None:
        return 1, False, 0
    needed = num_samples * L + E
    num_epochs = max(1, -(-needed // tokens_per_epoch))  # ceil
    if num_epochs == 1:
        return 1, False, 0
    sans_final = ((num_epochs - 1) * tokens_per_epoch - E) // L
    from_final = num_samples - sans_final
    per_epoch = (tokens_per_epoch - E) // L
    assert 0 <= from_final <= per_epoch + 1, (from_final, per_epoch)
    separate = from_final < int(SEPARATE_FINAL_EPOCH_THRESHOLD * per_epoch)
    return num_epochs, separate, sans_final


@dataclass(frozen=True, slots=True)
class GPTSamplesConfig:
    seq_length: (
        int  # tokens per training sample (inputs); each window is seq_length + add_extra_token
    )
    seed: int  # numpy RandomState seed (Megatron --seed)
    split: str = "969,30,1"  # train,valid,test weights over the dataset's sequences
    add_extra_token: int = (
        1  # 1: windows overlap by one token, labels = next token (Megatron default)
    )
    # For the valid split only, as Megatron's drop_last_partial_validation_sequence; train and test
    # always drop the final partial sequence. A kept partial sample is padded with PAD_ID.
    drop_last_partial_sequence: bool = True
    # Where the .npy indices are cached; None: "<dataset dir>/dataprep-cache" (skipped with a
    # warning when that folder cannot be written, e.g. read-only data).
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.seq_length, bool) or not isinstance(self.seq_length, int | np.integer):
            raise UsageError(f"seq_length {self.seq_length!r}: expected an integer >= 1")
        if self.seq_length < 1:
            raise UsageError(f"seq_length {self.seq_length}: expected an integer >= 1")
        if self.add_extra_token not in (0, 1):
            raise UsageError(f"add_extra_token {self.add_extra_token!r}: expected 0 or 1")
        if not isinstance(self.seed, int | np.integer) or not 0 <= self.seed < 2**32:
            raise UsageError(f"seed {self.seed!r}: expected an integer in [0, 2**32)")
        split_bookends(self.split)  # raises UsageError for a bad split string


def _open_reader(reader_or_prefix: Any) -> tuple[Any, str | None]:
    if isinstance(reader_or_prefix, str | os.PathLike):
        from dataprep.indexed import IndexedDatasetReader

        prefix = os.fspath(reader_or_prefix)
        return IndexedDatasetReader(prefix), prefix
    prefix = getattr(reader_or_prefix, "path_prefix", None)
    return reader_or_prefix, (os.fspath(prefix) if prefix is not None else None)


class GPTSamples:
    """One split of one indexed dataset as GPT windows, in megatron-core GPTDataset order.

    `samples[k]` is int64 of length seq_length + add_extra_token; `len(samples)` counts every
    sample of the whole epochs built (at least `num_samples`), as megatron-core.
    """

    def __init__(
        self,
        reader_or_prefix: Any,
        *,
        num_samples: int | None,
        split_name: str,
        config: GPTSamplesConfig,
    ) -> None:
        if num_samples is not None and (isinstance(num_samples, bool) or num_samples < 0):
            raise UsageError(f"num_samples {num_samples!r}: expected an integer >= 0 or None")
        self.config = config
        self.split_name = split_name
        self.num_samples = num_samples
        which = split_index(split_name)
        self.reader, self.prefix = _open_reader(reader_or_prefix)
        name = self.prefix if self.prefix is not None else "dataset"
        sequence_lengths = self.reader.sequence_lengths
        span = split_ranges(config.split, len(sequence_lengths))[which]
        if span is None:
            raise ConfigError(
                f"split {ConfigError.quote(repr(config.split))} gives the "
                f"{ConfigError.quote(repr(split_name))} split no share of "
                f"{ConfigError.quote(name)}; "
                "give it a positive weight or use another {split_name}",
                "split_name",
            )
        self.sequence_range = span
        beg, end = span
        self.tokens_per_epoch = int(np.sum(sequence_lengths[beg:end], dtype=np.int64))
        E, L = config.add_extra_token, config.seq_length
        if self.tokens_per_epoch < L + E:
            raise DataprepError(
                f"{name} has {self.tokens_per_epoch} tokens in split {split_name!r}; one sample "
                f"needs seq_length+{E} = {L + E} (split {config.split!r} gives it sequences "
                f"[{beg}, {end}) of {len(sequence_lengths)}); use a shorter sequence length, "
                "another split or more data"
            )
        self.num_epochs, self.separate_final_epoch, self._sans_final = plan_epochs(
            self.tokens_per_epoch, num_samples, seq_length=L, add_extra_token=E
        )
        self.drop_last_partial_sequence = (
            config.drop_last_partial_sequence if split_name == "valid" else True
        )
        identity = {
            "class": "GPTSamples",
            "format_version": CACHE_FORMAT_VERSION,
            "dataset_path": os.path.abspath(self.prefix) if self.prefix is not None else None,
            "dataset": dataset_identity(self.prefix, sequence_lengths),
            "num_samples": num_samples,
            "split_name": split_name,
            "split": config.split,
            "split_matrix": split_bookends(config.split),
            "seed": int(config.seed),
            "seq_length": L,
            "add_extra_token": E,
            "drop_last_partial_sequence": self.drop_last_partial_sequence,
        }
        self.description = json.dumps(identity, indent=4)
        self.hash = hashlib.md5(self.description.encode("utf-8"), usedforsecurity=False).hexdigest()
        cache_dir = config.cache_dir
        if cache_dir is None and self.prefix is not None:
            cache_dir = os.path.join(
                os.path.dirname(os.path.abspath(self.prefix)), "dataprep-cache"
            )
        self.cache_dir = cache_dir
        (self.document_index, self.sample_index, self.shuffle_index), self.from_cache = (
            cached_arrays(
                cache_dir,
                f"{self.hash}-GPTSamples-{split_name}",
                self.description,
                ("document_index", "sample_index", "shuffle_index"),
                self._build,
            )
        )
        logger.info(
            "%s %s: %d samples of %d+%d tokens, %d epoch(s)%s",
            name,
            split_name,
            len(self),
            L,
            E,
            self.num_epochs,
            " (cached)" if self.from_cache else "",
        )

    def _build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        beg, end = self.sequence_range
        rng = np.random.RandomState(self.config.seed)
        indices = np.arange(beg, end, dtype=np.int32)
        document_index = build_document_index(
            indices, self.num_epochs, rng, self.separate_final_epoch
        )
        sample_index = build_sample_index(
            self.reader.sequence_lengths,
            document_index,
            seq_length=self.config.seq_length,
            num_epochs=self.num_epochs,
            tokens_per_epoch=self.tokens_per_epoch,
            drop_last_partial_sequence=self.drop_last_partial_sequence,
            add_extra_token=self.config.add_extra_token,
        )
        total = sample_index.shape[0] - 1
        first = self._sans_final if self.separate_final_epoch else total
        shuffle_index = build_shuffle_index(first, total, rng)
        logger.debug("built %s indices in %.3f s", self.split_name, time.perf_counter() - t0)
        return document_index, sample_index, shuffle_index

    def __len__(self) -> int:
        return int(self.sample_index.shape[0]) - 1

    def _window(self, k: int) -> tuple[int, int, int, int]:
        n = len(self)
        if not -n <= k < n:
            raise IndexError(f"sample {k} out of range for {n} samples")
        j = int(self.shuffle_index[k % n])
        b, ob = (int(v) for v in self.sample_index[j])
        e, oe = (int(v) for v in self.sample_index[j + 1])
        return b, ob, e, oe

    def sample_documents(self, k: int) -> list[tuple[int, int, int]]:
        """The pieces of sample k: (sequence id, start offset, end offset), in order."""
        b, ob, e, oe = self._window(k)
        E = self.config.add_extra_token
        lengths = self.reader.sequence_lengths
        pieces = []
        for p in range(b, e + 1):
            doc = int(self.document_index[p])
            start = ob if p == b else 0
            stop = oe + E if p == e else int(lengths[doc])
            pieces.append((doc, start, stop))
        return pieces

    def __getitem__(self, k: int) -> np.ndarray:
        parts = [
            self.reader.get(doc, offset=start, length=stop - start)
            for doc, start, stop in self.sample_documents(k)
        ]
        tokens = np.concatenate(parts).astype(np.int64, copy=False)
        want = self.config.seq_length + self.config.add_extra_token
        if len(tokens) < want:  # only a kept partial final valid sample
            tokens = np.concatenate([tokens, np.full(want - len(tokens), PAD_ID, dtype=np.int64)])
        return tokens


__all__ = [
    "GPTSamples",
    "GPTSamplesConfig",
    "PAD_ID",
    "SPLIT_NAMES",
    "build_document_index",
    "build_sample_index",
    "build_shuffle_index",
    "plan_epochs",
]
