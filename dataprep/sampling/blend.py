"""Blends of GPT datasets: Megatron's --data-path forms, per-dataset requests and greedy blending.

As megatron-core's `get_blend_from_list`, `BlendedMegatronDatasetBuilder`, `BlendedDataset` and
`helpers.cpp:build_blending_indices`.
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
from dataprep.sampling.gpt import GPTSamples, GPTSamplesConfig, cached_arrays
from dataprep.sampling.split import split_index, split_ranges

logger = logging.getLogger(__name__)

SURPLUS = 0.005  # megatron-core mid_level_dataset_surplus: each dataset builds 0.5% extra samples
MAX_DATASETS = 32766  # dataset ids are int16


def normalize(weights: Sequence[float]) -> list[float]:
    """float64 `w / sum(w)` as Python floats, bit for bit as megatron-core's `normalize`."""
    w = np.asarray(weights, dtype=np.float64)
    return (w / np.sum(w)).tolist()


FAST_DATASETS = 16  # above this many datasets the greedy runs one step at a time in Python
_REPAIR = 64  # longest exact one-step-at-a-time repair inside a block before the block ends


def _best_periods(weights: list[float], cap: int) -> np.ndarray:
    """For each L in 1..cap, the P <= L whose `w * P` is nearest an integer vector (L1)."""
    p = np.arange(1, cap + 1, dtype=np.float64)
    dist = np.zeros(cap)
    for w in weights:
        f = w * p
        dist += np.abs(f - np.rint(f))
    record = np.ones(cap, dtype=bool)
    record[1:] = dist[1:] < np.minimum.accumulate(dist)[:-1]
    return np.maximum.accumulate(np.where(record, np.arange(cap), 0)) + 1


def _greedy_steps(
    weights: list[float], picks: np.ndarray, counts: list[int], start: int, stop: int
) -> None:
    """Greedy picks start..stop-1, one interpreted step each (`counts` is updated)."""
    others = range(1, len(weights))
    for i in range(start, stop):
        x = float(i) if i > 1 else 1.0
        best, best_error = 0, weights[0] * x - counts[0]
        for d in others:
            error = weights[d] * x - counts[d]
            if error > best_error:
                best, best_error = d, error
        picks[i] = best
        counts[best] += 1


def _greedy_blocks(
    weights: list[float], picks: np.ndarray, counts: list[int], start: int, stop: int
) -> int:
    """Greedy picks start..stop-1, guessed a block at a time and checked in numpy (exact); returns
    how many steps had to be repaired one at a time (the cost that grows with irregular weights).

    Guess: the picks P steps earlier, repeated, for the P <= start whose `w * P` is nearest an
    integer vector (the error state then differs by a small constant, so the picks mostly
    repeat). Check: each step's errors `fl(w_d * x) - count_d` from the guessed counts, first
    maximum. Where the check disagrees the counts before that step are still right, so the true
    pick is known; the following steps are redone one at a time until the counts agree with the
    guess again (usually one swapped pair), after which the checked picks are right again.
    """
    D = len(weights)
    w = [float(v) for v in weights]
    i = min(stop, max(start, 4 * D))
    _greedy_steps(w, picks, counts, start, i)
    repaired = 0
    if i >= stop:
        return repaired
    period = _best_periods(w, min(stop, 1 << 16))
    dims = range(D)
    n = 1024
    while i < stop:
        p = int(period[min(i, len(period)) - 1])
        p *= max(1, min(4096 // p, i // p))  # np.resize is slow for a short source
        n = min(n, stop - i)
        g = np.resize(picks[i - p : i], n)
        x = np.arange(i, i + n, dtype=np.float64)
        before = np.empty((D, n), dtype=np.int32)  # counts before each step, if g is right
        best = np.zeros(n, dtype=picks.dtype)
        top = x  # replaced at d == 0
        for d in dims:
            hit = g == d
            c = before[d]
            np.cumsum(hit, dtype=np.int32, out=c)
            c -= hit
            c += counts[d]
            e = x * w[d]
            e -= c
            if d == 0:
                top = e
            else:
                np.copyto(best, d, where=e > top)  # strict: the first maximum wins
                np.maximum(top, e, out=top)
        wrong = np.flatnonzero(best != g).tolist()
        end, resume = n, 0
        for t in wrong:
            if t < resume:
                continue
            cnt = before[:, t].tolist()
            gs = g[t : t + _REPAIR + 1].tolist()
            off = [0] * D  # true counts - guessed counts
            k, pick, unequal = t, int(best[t]), 0
            while True:
                best[k] = pick
                cnt[pick] += 1
                gk = gs[k - t]
                if pick != gk:
                    off[pick] += 1
                    off[gk] -= 1
                    unequal = sum(1 for v in off if v)
                k += 1
                if unequal == 0:
                    resume = k
                    break
                if k >= n or k - t >= _REPAIR:
                    end = k
                    break
                xk = float(i + k)
                pick, top_error = 0, w[0] * xk - cnt[0]
                for d in range(1, D):
                    error = w[d] * xk - cnt[d]
                    if error > top_error:
                        pick, top_error = d, error
            repaired += k - t
            if resume <= t:
                break
        picks[i : i + end] = best[:end]
        if end == n and not wrong:
            for d in dims:
                counts[d] = int(before[d, -1]) + int(g[-1] == d)
        else:
            used = np.bincount(best[:end], minlength=D)
            for d in dims:
                counts[d] += int(used[d])
        i += end
        n = min(2 * end, 1 << 17) if end == n else max(2 * end, 1024)
    return repaired


PERIODIC_DATASETS = 8  # up to this many datasets, weights with a short period use blocks
SHORT_PERIOD = 4096  # longest period of w * P (near an integer vector) that counts as short
SEGMENT = 1024  # steps per segment of the parallel greedy
WARMUP = 128  # steps a segment runs from a guessed state before its picks are used


def _segment_steps(w: np.ndarray, x: np.ndarray, c: np.ndarray, steps: int) -> np.ndarray:
    """`steps` greedy steps of K independent runs at once: run k at step x[k] with counts c[k].

    Returns the picks (steps, K); `x` and `c` (float64, exact integers) are advanced in place.
    Each step is megatron's `argmax_d(fl(w_d * x) - count_d)`, first maximum, x >= 1.
    """
    K, D = c.shape
    out = np.empty((steps, K), dtype=np.int16)
    e = np.empty((K, D))
    flat = c.reshape(-1)
    base = np.arange(K) * D
    col = x[:, None]
    for t in range(steps):
        np.multiply(col, w, out=e)
        e -= c
        p = e.argmax(axis=1)
        flat[base + p] += 1.0
        out[t] = p
        x += 1.0
    return out


def _guessed_states(w: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Plausible greedy counts (float64 (K, D)) at each step: rounded `w * step`, summing to
    step."""
    D = len(w)
    ideal = steps[:, None] * w
    c = np.floor(ideal + 0.5)
    short = steps - c.sum(axis=1)  # > 0: give the most-behind datasets one more
    rank = np.argsort(np.argsort(c - ideal, axis=1, kind="stable"), axis=1, kind="stable")
    c += rank < short[:, None]
    c -= rank >= D + short[:, None]
    return c


def _has_short_period(weights: list[float]) -> bool:
    """Whether w * P is an integer vector (to 1e-9) for some P <= SHORT_PERIOD: 1:2:3 is (P = 6),
    sizes drawn from real datasets practically never are."""
    scaled = np.arange(1, SHORT_PERIOD + 1, dtype=np.float64)[:, None] * np.asarray(weights)
    return bool((np.abs(scaled - np.rint(scaled)).max(axis=1) < 1e-9).any())


def _greedy_segments(
    weights: list[float], picks: np.ndarray, counts: list[int], start: int, stop: int
) -> None:
    """Greedy picks start..stop-1 (start >= 1), as many short runs side by side (exact).

    Segment k starts at start + k * SEGMENT from a guessed state (the exact one for k = 0) and
    runs WARMUP + SEGMENT steps; its last SEGMENT picks are used. The greedy forgets its state
    quickly: once two runs share a state at one step they agree from there on, so segment k's
    picks are right if its state after the warm-up equals the end state of segment k - 1 (and
    that one is right). Segments where that fails (a rare dataset near its pick can keep a wrong
    guess for 1 / w steps) are rerun from their predecessor's end state; if many fail (weights
    with a short exact period keep their phase), the numpy blocks take over.
    """
    w = np.asarray(weights, dtype=np.float64)
    K = max(1, -(-(stop - start - WARMUP) // SEGMENT))
    first = start + np.arange(K, dtype=np.int64) * SEGMENT
    c = _guessed_states(w, first.astype(np.float64))
    c[0] = counts
    x = first.astype(np.float64)
    warm = _segment_steps(w, x, c, WARMUP)
    begin = c.copy()  # state where each segment's used picks begin
    body = _segment_steps(w, x, c, SEGMENT)
    picks[start : start + WARMUP] = warm[:, 0][: stop - start]
    lo = start + WARMUP
    used = body.T.reshape(-1)[: stop - lo]
    picks[lo : lo + len(used)] = used
    for _ in range(3):
        valid = np.ones(K, dtype=bool)
        valid[1:] = np.all(begin[1:] == c[:-1], axis=1)
        if valid.all():
            return
        bad = np.flatnonzero(~valid)
        if len(bad) > K // 8 + 2:
            break
        # rerun every unverified segment from its predecessor's current end state
        rx = (lo + bad * SEGMENT).astype(np.float64)
        rc = c[bad - 1].copy()
        begin[bad] = rc
        redo = _segment_steps(w, rx, rc, SEGMENT)
        c[bad] = rc
        for j, k in enumerate(bad.tolist()):
            a = lo + k * SEGMENT
            b = min(a + SEGMENT, stop)
            picks[a:b] = redo[: b - a, j]
    valid = np.ones(K, dtype=bool)
    valid[1:] = np.all(begin[1:] == c[:-1], axis=1)
    k = int(np.argmin(np.logical_and.accumulate(valid)))
    if valid.all():
        return
    a = lo + k * SEGMENT  # segments before k are right; finish from there in blocks
    _greedy_blocks(weights, picks, [int(v) for v in c[k - 1]], a, stop)


def _greedy(weights: list[float], size: int) -> np.ndarray:
    """Megatron's greedy picks (int16): side-by-side segments for 5+ datasets and long blends,
    numpy blocks for fewer datasets (or short blends of up to FAST_DATASETS), else Python steps.
    """
    picks = np.zeros(size, dtype=np.int16)
    counts = [0] * len(weights)
    if len(weights) == 1:
        return picks
    if len(weights) >= 3 and size >= 8 * (SEGMENT + WARMUP):
        # Blocks are quickest when an earlier state lies close to the current one, so that the
        # copied picks stay right for long: always for 3 datasets (a 2-D state), and for up to
        # PERIODIC_DATASETS when the picks repeat with a short exact period (1:2:3, equal
        # weights). Otherwise they keep stopping for repairs, while segments cost about the same
        # whatever the weights.
        if len(weights) == 3 or (len(weights) <= PERIODIC_DATASETS and _has_short_period(weights)):
            _greedy_blocks(weights, picks, counts, 0, size)
        else:
            _greedy_steps(weights, picks, counts, 0, 1)
            _greedy_segments(weights, picks, counts, 1, size)
    elif len(weights) <= FAST_DATASETS:
        _greedy_blocks(weights, picks, counts, 0, size)
    else:  # about 0.3 us per sample and dataset
        _greedy_steps(weights, picks, counts, 0, size)
    return picks


def _sample_numbers(dataset_index: np.ndarray, num_datasets: int) -> np.ndarray:
    """For each position, how many earlier positions picked the same dataset (int64)."""
    out = np.empty(len(dataset_index), dtype=np.int64)
    if num_datasets <= 8:  # one pass per dataset; beyond ~8 the stable (radix) sort is quicker
        for d in range(num_datasets):
            where = np.flatnonzero(dataset_index == d)
            out[where] = np.arange(len(where))
        return out
    order = np.argsort(dataset_index, kind="stable")
    firsts = np.searchsorted(dataset_index[order], np.arange(num_datasets))
    out[order] = np.arange(len(order), dtype=np.int64) - firsts[dataset_index[order]]
    return out


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
