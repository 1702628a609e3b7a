"""Blends of GPT datasets: Megatron's --data-path forms, per-dataset requests and greedy blending.

As megatron-core's `get_blend_from_list`, `BlendedMegatronDatasetBuilder`, `BlendedDataset` and
`helpers.cpp:build_blending_indices` (computed by greedy.py).
Sample i of a blend comes from the dataset whose share is furthest behind its weight:
`argmax_d(w_d * max(i, 1) - count_d)`, first dataset on ties; no randomness. Example: weights
[0.7, 0.3] give datasets 0, 1, 0, 0, 1, 0, 0, 1, 0, 0 for the first 10 samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from dataprep.errors import ConfigError, DataprepError, UsageError
from dataprep.sampling.cache import cached_arrays
from dataprep.sampling.gpt import GPTSamples, GPTSamplesConfig
from dataprep.sampling.greedy import FAST_DATASETS, _greedy, _greedy_blocks, _sample_numbers
from dataprep.sampling.split import split_index, split_ranges

logger = logging.getLogger(__name__)

SURPLUS = 0.005  # megatron-core mid_level_dataset_surplus: each dataset builds 0.5% extra samples
MAX_DATASETS = 32766  # dataset ids are int16


def normalize(weights: Sequence[float]) -> list[float]:
    """float64 `w / sum(w)` as Python floats, bit for bit as megatron-core's `normalize`."""
    w = np.asarray(weights, dtype=np.float64)
    return (w / np.sum(w)).tolist()


def build_blending_indices(weights: Sequence[float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(dataset_index int16, dataset_sample_index int64), both (size,), Megatron's greedy blend.

    `weights` are used as given (normalise them first, as BlendedSamples does).
    """
    w = [float(v) for v in np.asarray(weights, dtype=np.float64)]
    picks = _greedy(w, size)
    return picks, _sample_numbers(picks, len(w))


def build_exhaustive_blending_indices(sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Exactly sizes[d] samples from each dataset d, interleaved by the same greedy rule.

    Until the first dataset is spent this is the plain greedy with weights `sizes / total`
    (numpy blocks); from there on, one step at a time over the unspent datasets.
    """
    sizes_list = [int(s) for s in sizes]
    total = sum(sizes_list)
    weights = [s / float(total) for s in sizes_list]
    picks = np.zeros(total, dtype=np.int16)
    counts = [0] * len(sizes_list)
    start = 0
    if len(sizes_list) > 1 and min(sizes_list) > 0 and len(sizes_list) <= FAST_DATASETS:
        _greedy_blocks(weights, picks, [0] * len(sizes_list), 0, total)
        spent = total  # the first step at which some dataset takes its last sample
        for d, s in enumerate(sizes_list):
            where = np.flatnonzero(picks == d)
            if len(where) >= s:
                spent = min(spent, int(where[s - 1]))
        start = min(spent + 1, total)
        counts = np.bincount(picks[:start], minlength=len(sizes_list)).tolist()
    unspent = [d for d, s in enumerate(sizes_list) if counts[d] < s]
    for i in range(start, total):
        x = float(i) if i > 1 else 1.0
        best, best_error = -1, -math.inf
        for d in unspent:
            error = weights[d] * x - counts[d]
            if error > best_error:
                best, best_error = d, error
        picks[i] = best
        counts[best] += 1
        if counts[best] == sizes_list[best]:
            unspent.remove(best)
    return picks, _sample_numbers(picks, len(sizes_list))


class BlendedSamples:
    """Samples drawn from several GPTSamples by the greedy blend; `blend[i]` is int64 tokens.

    `size=None` draws every sample of every dataset (weights are then sample counts).
    """

    def __init__(
        self, datasets: Sequence[GPTSamples], weights: Sequence[float], size: int | None
    ) -> None:
        if not 1 <= len(datasets) <= MAX_DATASETS:
            raise UsageError(f"a blend needs 1 to {MAX_DATASETS} datasets, got {len(datasets)}")
        if len(weights) != len(datasets):
            raise UsageError(f"{len(weights)} blend weights for {len(datasets)} datasets")
        for w in weights:
            if not math.isfinite(w) or w <= 0:
                raise UsageError(f"blend weight {w!r}: expected a number > 0")
        if size is not None and size < 0:
            raise UsageError(f"blend size {size}: expected an integer >= 0")
        self.datasets = list(datasets)
        self.size = size
        self.weights = normalize(weights) if size is not None else [int(w) for w in weights]
        identity = {
            "class": "BlendedSamples",
            "datasets": [d.hash for d in self.datasets],
            "weights": self.weights,
            "size": size,
        }
        self.description = json.dumps(identity, indent=4)
        self.hash = hashlib.md5(self.description.encode("utf-8"), usedforsecurity=False).hexdigest()
        split = self.datasets[0].split_name

        def build() -> tuple[np.ndarray, np.ndarray]:
            if size is None:
                return build_exhaustive_blending_indices(self.weights)
            return build_blending_indices(self.weights, size)

        (self.dataset_index, self.dataset_sample_index), self.from_cache = cached_arrays(
            self.datasets[0].cache_dir,
            f"{self.hash}-BlendedSamples-{split}",
            self.description,
            ("dataset_index", "dataset_sample_index"),
            build,
        )
        self.counts = np.bincount(self.dataset_index, minlength=len(self.datasets))
        for d, (ds, used) in enumerate(zip(self.datasets, self.counts, strict=True)):
            if used > len(ds):
                raise DataprepError(
                    f"blend draws {used} samples from dataset {d} ({ds.prefix}) which has only "
                    f"{len(ds)}; build it with num_samples >= {used}"
                )

    @property
    def realised_weights(self) -> list[float]:
        """The share of the blend's samples each dataset supplies."""
        return (self.counts / max(len(self), 1)).tolist()

    def __len__(self) -> int:
        return int(self.dataset_index.shape[0])

    def locate(self, i: int) -> tuple[int, int]:
        """(dataset id, sample number in that dataset) of blend sample i."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range for {n} samples")
        return int(self.dataset_index[i % n]), int(self.dataset_sample_index[i % n])

    def __getitem__(self, i: int) -> np.ndarray:
        d, k = self.locate(i)
        return self.datasets[d][k]

    def sample_documents(self, i: int) -> list[tuple[int, int, int]]:
        d, k = self.locate(i)
        return self.datasets[d].sample_documents(k)


def parse_data_path(
    words: Sequence[str], *, blend_needs_weights: bool = False
) -> tuple[list[str], list[float] | None]:
    """Megatron --data-path: `PREFIX`, `W1 P1 W2 P2 ...`, or `P1 P2 ...` (weights from sizes).

    Returns (prefixes, weights), weights None when not given. `blend_needs_weights` (the
    trainer's rule) refuses several prefixes without weights.
    """
    words = [str(w) for w in words]
    if not words:
        raise ConfigError("{data_path} is empty: give PREFIX, or WEIGHT PREFIX pairs", "data_path")

    def number(word: str) -> float | None:
        try:
            return float(word)
        except ValueError:
            return None

    if len(words) % 2 == 0:
        weights = [number(w) for w in words[0::2]]
        if all(w is not None for w in weights):
            for w, word in zip(weights, words[0::2], strict=True):
                if not math.isfinite(w) or w <= 0:
                    raise ConfigError(
                        f"{{data_path}} weight {ConfigError.quote(word)}: expected a number > 0",
                        "data_path",
                    )
            return list(words[1::2]), weights  # type: ignore[arg-type]
    # prefixes only: a number that names no dataset is a weight out of place
    stray = [w for w in words if number(w) is not None and not os.path.exists(w + ".idx")]
    if stray:
        raise ConfigError(
            f"{{data_path}} {ConfigError.quote(' '.join(words))}: mixes weights "
            f"({ConfigError.quote(', '.join(stray))}) and prefixes; "
            "expected PREFIX, WEIGHT PREFIX pairs (one weight per prefix) or prefixes only",
            "data_path",
        )
    if blend_needs_weights and len(words) > 1:
        raise ConfigError(
            f"{{data_path}} {ConfigError.quote(repr(' '.join(words)))}: give weight/prefix pairs "
            "'w1 p1 w2 p2 ...' to "
            "blend several datasets",
            "data_path",
        )
    return words, None


def size_weights(sizes: Sequence[float], alpha: float = 0.3) -> np.ndarray:
    """mT5-style sampling weights p_d proportional to n_d ** alpha (1: by size, 0: uniform)."""
    n = np.asarray(sizes, dtype=np.float64)
    if len(n) == 0 or np.any(n < 0) or n.sum() <= 0:
        raise UsageError(f"sizes {list(sizes)}: expected non-negative sizes with a positive sum")
    if not 0 <= alpha <= 1:
        raise UsageError(f"alpha {alpha}: expected a number in [0, 1]")
    p = np.where(n > 0, n**alpha, 0.0)
    return p / p.sum()


def _split_tokens(prefix: str, split: str, split_name: str) -> int:
    from dataprep.indexed import IndexedDatasetReader

    lengths = IndexedDatasetReader(prefix).sequence_lengths
    span = split_ranges(split, len(lengths))[split_index(split_name)]
    return 0 if span is None else int(np.sum(lengths[span[0] : span[1]], dtype=np.int64))


def build_gpt_samples(
    data_path: Sequence[str],
    *,
    seq_length: int,
    num_samples: int | None,
    split: str,
    split_name: str,
    seed: int,
    cache_dir: str | None = None,
    alpha: float | None = None,
) -> GPTSamples | BlendedSamples:
    """GPT samples for a Megatron --data-path, as megatron-core's BlendedMegatronDatasetBuilder.

    One prefix: GPTSamples. Weighted prefixes: each dataset is asked for
    ceil(ceil(num_samples * w) * 1.005) samples, and the blend has sum(ceil(num_samples * w)).
    Prefixes without weights: weights are the datasets' one-epoch sample counts (Megatron), or,
    with `alpha`, proportional to split tokens ** alpha (mT5). The realised mix is logged and kept
    in `BlendedSamples.realised_weights`.
    """
    config = GPTSamplesConfig(seq_length=seq_length, seed=seed, split=split, cache_dir=cache_dir)
    split_index(split_name)
    prefixes, weights = parse_data_path(data_path)
    if num_samples is not None and num_samples < 0:
        raise UsageError(f"num_samples {num_samples}: expected an integer >= 0")
    if weights is None and alpha is not None and len(prefixes) > 1:
        tokens = [_split_tokens(p, split, split_name) for p in prefixes]
        weights = size_weights(tokens, alpha).tolist()
        logger.info("alpha %.2f: weights %s from split tokens %s", alpha, weights, tokens)
    if len(prefixes) == 1 and weights is None:
        return GPTSamples(
            prefixes[0], num_samples=num_samples, split_name=split_name, config=config
        )

    def make(prefix: str, n: int | None) -> GPTSamples:
        return GPTSamples(prefix, num_samples=n, split_name=split_name, config=config)

    if weights is not None:
        if num_samples is None:
            raise ConfigError(
                "a weighted {data_path} needs a sample count ({num_samples})",
                "data_path",
                "num_samples",
            )
        weights = normalize(weights)
        targets = [int(math.ceil(num_samples * w)) for w in weights]
        requests = [int(math.ceil(math.ceil(num_samples * w) * (1 + SURPLUS))) for w in weights]
        datasets = [make(p, n) for p, n in zip(prefixes, requests, strict=True)]
        blend = BlendedSamples(datasets, weights, sum(targets))
    else:
        datasets = [make(p, None) for p in prefixes]
        sizes = [len(d) for d in datasets]
        size = None if num_samples is None else min(num_samples, sum(sizes))
        blend = BlendedSamples(datasets, sizes, size)
    mix = ", ".join(
        f"{p}: {w:.4f} (asked {a:.4f})"
        for p, w, a in zip(prefixes, blend.realised_weights, _asked(blend), strict=True)
    )
    logger.info("blend of %d samples from %d datasets: %s", len(blend), len(datasets), mix)
    return blend


def _asked(blend: BlendedSamples) -> list[float]:
    return normalize(blend.weights)


def describe(samples: Any) -> dict[str, Any]:
    """A short JSON-able summary of GPTSamples or BlendedSamples, for logs and previews."""
    if isinstance(samples, BlendedSamples):
        return {
            "samples": len(samples),
            "datasets": [d.prefix for d in samples.datasets],
            "weights": normalize(samples.weights),
            "realised_weights": samples.realised_weights,
        }
    return {
        "samples": len(samples),
        "prefix": samples.prefix,
        "epochs": samples.num_epochs,
        "tokens_per_epoch": samples.tokens_per_epoch,
    }
