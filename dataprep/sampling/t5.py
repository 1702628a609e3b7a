"""Canonical T5/mT5 span corruption in numpy (T5's `t5/data/preprocessors.py` `span_corruption`).

`random_spans_helper` picks how many raw tokens make one encoder input of a given length,
`span_counts` and `corrupted_lengths` give the counts and lengths a chunk makes,
`random_spans_noise_mask` draws T5's noise mask, `noise_spans_to_sentinels` replaces each span by
a sentinel and `span_corrupt` chains them. Sentinels descend from `vocab_size - 1` as in T5/mT5
(`canonical_sentinel_ids`: `<extra_id_0>` is the last id). t5_samples.py's `T5Samples` applies
them to a tokenized corpus.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dataprep.errors import UsageError

__all__ = [
    "canonical_sentinel_ids",
    "corrupted_lengths",
    "noise_spans_to_sentinels",
    "random_spans_helper",
    "random_spans_noise_mask",
    "span_corrupt",
    "span_counts",
]


def _check_density(noise_density: float, mean_noise_span_length: float) -> None:
    if not 0.0 <= noise_density < 1.0:
        raise UsageError(
            f"noise_density {noise_density} is outside [0, 1): it is the fraction of tokens "
            "to mask; T5 uses 0.15"
        )
    if not mean_noise_span_length > 0:
        raise UsageError(
            f"mean_noise_span_length {mean_noise_span_length} must be > 0; T5 uses 3.0"
        )


def span_counts(
    length: int, *, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """(num_noise_tokens, num_noise_spans) that `random_spans_noise_mask` uses for `length` tokens.

    num_noise = clip(round(length * noise_density), 1, length - 1)
    num_spans = clip(round(num_noise / mean_noise_span_length), 1, min(num_noise, num_clean))
    e.g. 568 tokens at (0.15, 3.0): round(85.2) = 85 noise tokens in round(28.33) = 28 spans.
    The upper clip on num_spans never binds at T5's settings; it prevents T5's zero-length segments
    (which would merge adjacent spans) when mean_noise_span_length < 1 or noise_density > 0.5.
    Python's round() rounds halves to even, like tf.round.
    """
    if noise_density == 0 or length <= 0:
        return 0, 0
    length = max(length, 2)  # T5 masks a 1-token input as if it had 2 tokens, then truncates
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_noise_span_length), 1)
    num_spans = min(num_spans, num_noise, length - num_noise)
    return num_noise, num_spans


def corrupted_lengths(
    tokens_length: int, *, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """(inputs_length, targets_length), EOS included, that `span_corrupt` makes of tokens_length.

    inputs = clean tokens + one sentinel per span + EOS;
    targets = noise tokens + one sentinel per span + EOS.
    568 tokens at (0.15, 3.0): 85 noise, 28 spans -> (483 + 28 + 1, 85 + 28 + 1) = (512, 114).
    """
    num_noise, num_spans = span_counts(
        tokens_length, noise_density=noise_density, mean_noise_span_length=mean_noise_span_length
    )
    return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def random_spans_helper(
    inputs_length: int, *, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """(tokens_length, targets_length) as T5's `random_spans_helper` (1 sentinel per span, 1 EOS).

    f(t) = (t - n + s + 1, n + s + 1) with n = round(t * density), s = round(n / mean);
    tokens_length is the largest t with f(t)[0] <= inputs_length, targets_length = f(t)[1].
    At (0.15, 3.0): 128 -> (141, 29), 256 -> (284, 58), 512 -> (568, 114), 1024 -> (1137, 229),
    2048 -> (2274, 456). This is T5's arithmetic exactly, which ignores the mask's clamps; for
    inputs_length below about 20 `T5Samples.lengths_for` shortens the chunk until it fits.
    """
    _check_density(noise_density, mean_noise_span_length)
    if inputs_length < 1:
        raise UsageError(f"inputs_length {inputs_length} must be >= 1")

    def f(t: int) -> tuple[int, int]:
        n = round(t * noise_density)
        s = round(n / mean_noise_span_length)
        return t - n + s + 1, n + s + 1

    t = inputs_length - 1
    while f(t + 1)[0] <= inputs_length:
        t += 1
    inputs_len, targets_length = f(t)
    if noise_density == 0.5 and targets_length > inputs_len:
        t -= 1
        targets_length -= 1
    return t, targets_length


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Split num_items into num_segments positive parts, uniformly over all such compositions."""
    # num_segments - 1 cut points among the num_items - 1 gaps between items
    first = np.arange(num_items - 1) < num_segments - 1
    rng.shuffle(first)
    seg_id = np.cumsum(np.concatenate([[0], first]))  # (num_items,) segment of each item
    return np.bincount(seg_id, minlength=num_segments)


def random_spans_noise_mask(
    length: int, *, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """T5's noise mask: bool (length,), True = noise; starts clean and ends with a noise span.

    Counts come from `span_counts`; the noise and the clean token counts are each split into
    num_spans positive parts at random, and the parts alternate clean, noise, clean, noise, ...,
    so two noise spans never touch. Example (length 10, density 0.3, mean 1.5): 3 noise tokens in
    round(2.0) = 2 spans and 7 clean tokens in 2 runs; one draw is [0 0 1 1 0 0 0 0 0 1]
    (clean 2, noise 2, clean 5, noise 1).
    """
    _check_density(noise_density, mean_noise_span_length)
    if length < 0:
        raise UsageError(f"length {length} must be >= 0")
    if noise_density == 0 or length == 0:
        return np.zeros(length, dtype=bool)
    orig_length = length
    length = max(length, 2)
    num_noise, num_spans = span_counts(
        length, noise_density=noise_density, mean_noise_span_length=mean_noise_span_length
    )
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    clean_lengths = _random_segmentation(length - num_noise, num_spans, rng)
    interleaved = np.empty(2 * num_spans, dtype=np.int64)  # c0 n0 c1 n1 ...
    interleaved[0::2] = clean_lengths
    interleaved[1::2] = noise_lengths
    is_noise = np.zeros(2 * num_spans, dtype=bool)
    is_noise[1::2] = True
    return np.repeat(is_noise, interleaved)[:orig_length]


def _check_sentinels(sentinel_ids: Sequence[int]) -> np.ndarray:
    ids = np.asarray(sentinel_ids, dtype=np.int64).reshape(-1)
    if ids.size == 0:
        raise UsageError(
            "no sentinel ids given: T5 span corruption needs <extra_id_0>, <extra_id_1>, ..."
        )
    if np.unique(ids).size != ids.size:
        raise UsageError(f"sentinel ids are not distinct: {ids.tolist()[:10]}...")
    return ids


def noise_spans_to_sentinels(
    tokens: np.ndarray, noise_mask: np.ndarray, *, sentinel_ids: Sequence[int]
) -> np.ndarray:
    """Replace the k-th noise span by sentinel_ids[k] and drop its other tokens (int64 result).

    tokens [A B C D E F], mask [0 0 1 1 0 1], sentinels [X0 X1] -> [A B X0 E X1];
    with ~mask -> [X0 C D X1 F]. T5's `noise_span_to_unique_sentinel` (inputs) and, called with
    ~mask, `nonnoise_span_to_unique_sentinel` (targets). sentinel_ids[0] is `<extra_id_0>`,
    vocab_size - 1 in T5/mT5.
    """
    tokens = np.asarray(tokens)
    noise_mask = np.asarray(noise_mask, dtype=bool)
    if tokens.shape != noise_mask.shape or tokens.ndim != 1:
        raise ValueError(
            f"tokens {tokens.shape} and noise_mask {noise_mask.shape} must be equal 1-D shapes"
        )
    return _replace_spans(tokens, noise_mask, _check_sentinels(sentinel_ids))


def _replace_spans(tokens: np.ndarray, mask: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """noise_spans_to_sentinels without argument checks; ids is an int64 array."""
    first = mask.copy()  # first token of each span
    first[1:] &= ~mask[:-1]
    num_spans = int(np.count_nonzero(first))
    if num_spans > ids.size:
        raise UsageError(
            f"{num_spans} noise spans but only {ids.size} sentinel ids: use a shorter seq length, "
            "a lower noise density or a longer mean noise span length"
        )
    out = tokens.astype(np.int64)  # a copy
    out[first] = ids[:num_spans]  # spans in order get sentinels in order
    return out[~mask | first]  # drop the rest of each span


def span_corrupt(
    tokens: np.ndarray,
    *,
    sentinel_ids: Sequence[int],
    eos_id: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of canonical T5 span corruption, EOS appended to both (int64).

    [A B C D E F] -> inputs [A B X0 E X1 </s>], targets [X0 C D X1 F </s>].
    """
    tokens = np.asarray(tokens)
    mask = random_spans_noise_mask(
        tokens.size,
        noise_density=noise_density,
        mean_noise_span_length=mean_noise_span_length,
        rng=rng,
    )
    return _inputs_targets(tokens, mask, sentinel_ids, eos_id)


def _inputs_targets(
    tokens: np.ndarray, mask: np.ndarray, sentinel_ids: Sequence[int] | np.ndarray, eos_id: int
) -> tuple[np.ndarray, np.ndarray]:
    ids = sentinel_ids if isinstance(sentinel_ids, np.ndarray) else _check_sentinels(sentinel_ids)
    if tokens.shape != mask.shape or tokens.ndim != 1:
        raise ValueError(f"tokens {tokens.shape} and noise_mask {mask.shape} must be 1-D, equal")
    eos = np.array([eos_id], dtype=np.int64)
    inputs = _replace_spans(tokens, mask, ids)
    targets = _replace_spans(tokens, ~mask, ids)
    return np.concatenate([inputs, eos]), np.concatenate([targets, eos])


def canonical_sentinel_ids(vocab_size: int, num_sentinels: int = 100) -> list[int]:
    """T5/mT5 sentinels: [<extra_id_0>, <extra_id_1>, ...] = [vocab_size - 1, vocab_size - 2...]."""
    return list(range(vocab_size - 1, vocab_size - 1 - num_sentinels, -1))
