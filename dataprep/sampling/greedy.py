"""Megatron's greedy blending picks, fast and exact: `_greedy(weights, size)`, the int16 dataset
of each sample, and `_sample_numbers`, each pick's number within its dataset.

The rule is `helpers.cpp:build_blending_indices`: sample i comes from the dataset maximising
`fl(w_d * max(i, 1)) - count_d`, first dataset on ties. By the number of datasets and the
blend's length `_greedy` takes numpy blocks (picks guessed from an earlier period, checked,
repaired one step at a time), many short runs side by side, or Python steps, all with the same
picks. blend.py's `build_blending_indices` and `build_exhaustive_blending_indices` call them.
"""

from __future__ import annotations

import numpy as np

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
