"""Canonical T5 span corruption: helper lengths, mask properties, sentinels, golden, statistics."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dataprep.errors import DataprepError, UsageError
from dataprep.sampling.t5 import (
    canonical_sentinel_ids,
    corrupted_lengths,
    noise_spans_to_sentinels,
    random_spans_helper,
    random_spans_noise_mask,
    span_corrupt,
    span_counts,
)
from dataprep.sampling.t5_samples import T5Samples, sentinel_ids_of

VOCAB = 1000
SENTINELS = canonical_sentinel_ids(VOCAB)  # 999, 998, ..., 900
EOS = 1


def spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def reassemble(inputs: np.ndarray, targets: np.ndarray, sentinel_ids) -> list[int]:
    """Undo span corruption: clean run k of the inputs, then the noise after sentinel k."""
    sset = set(sentinel_ids)

    def split(ids):
        runs, cur = [], []
        for i in ids[:-1]:  # drop EOS
            if int(i) in sset:
                runs.append(cur)
                cur = []
            else:
                cur.append(int(i))
        runs.append(cur)
        return runs

    clean, noise = split(inputs), split(targets)
    assert noise[0] == []  # targets start with a sentinel
    out = []
    for c, n in zip(clean, noise[1:] + [[]], strict=True):
        out += c + n
    return out


@pytest.mark.parametrize(
    "inputs_length, expected",
    [
        (128, (141, 29)),
        (256, (284, 58)),
        (512, (568, 114)),
        (568, (630, 126)),
        (1024, (1137, 229)),
        (2048, (2274, 456)),
    ],
)
def test_random_spans_helper_matches_t5(inputs_length, expected):
    assert random_spans_helper(inputs_length) == expected
    tokens_length, targets_length = expected
    # the exact lengths a full chunk gives agree with T5's arithmetic at these sizes
    assert corrupted_lengths(tokens_length) == (inputs_length, targets_length)


def test_random_spans_helper_density_half():
    # T5 lowers tokens_length by one at density 0.5 when the targets come out longer than the inputs
    t, tgt = random_spans_helper(512, noise_density=0.5, mean_noise_span_length=3.0)
    inputs, targets = corrupted_lengths(t, noise_density=0.5)
    assert inputs <= 512 and targets == tgt and tgt <= inputs


@given(
    length=st.integers(1, 3000),
    density=st.floats(0.01, 0.95),
    mean=st.floats(0.5, 20.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_mask_properties(length, density, mean, seed):
    mask = random_spans_noise_mask(
        length, noise_density=density, mean_noise_span_length=mean, rng=np.random.default_rng(seed)
    )
    assert mask.shape == (length,) and mask.dtype == bool
    if length == 1:
        assert not mask[0]  # T5 masks [clean, noise] and truncates to 1
        return
    num_noise = min(max(round(length * density), 1), length - 1)
    assert mask.sum() == num_noise
    runs = spans(mask)
    expected_spans = max(round(num_noise / mean), 1)
    if expected_spans <= min(num_noise, length - num_noise):  # the length permits T5's count
        assert len(runs) == expected_spans
    assert not mask[0] and mask[-1]  # starts clean, ends with noise
    for (_, end), (start, _) in zip(runs, runs[1:], strict=False):
        assert start > end  # a clean token between any two spans


@given(length=st.integers(2, 600), seed=st.integers(0, 2**32 - 1), density=st.floats(0.02, 0.6))
def test_inputs_and_targets_interleave_back(length, seed, density):
    assume(span_counts(length, noise_density=density, mean_noise_span_length=3.0)[1] <= 100)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, VOCAB - 100, size=length)
    inputs, targets = span_corrupt(
        tokens, sentinel_ids=SENTINELS, eos_id=EOS, noise_density=density, rng=rng
    )
    assert inputs[-1] == EOS and targets[-1] == EOS
    assert reassemble(inputs, targets, SENTINELS) == tokens.tolist()
    used_in = inputs[np.isin(inputs, SENTINELS)]
    used_tg = targets[np.isin(targets, SENTINELS)]
    assert used_in.tolist() == used_tg.tolist() == SENTINELS[: used_in.size]
    assert np.all(np.diff(used_in) == -1)  # distinct and descending from vocab_size - 1
    assert targets[0] == VOCAB - 1  # <extra_id_0> opens the targets


def test_golden_mask_and_corruption():
    # length 32, density 0.25, mean 3: round(8.0) = 8 noise tokens in round(2.67) = 3 spans, 24
    # clean tokens in 3 runs; clean first, noise last. Checked by hand: runs clean 8, noise 6,
    # clean 7, noise 1, clean 9, noise 1 (8 + 7 + 9 = 24 clean, 6 + 1 + 1 = 8 noise).
    mask = random_spans_noise_mask(
        32, noise_density=0.25, mean_noise_span_length=3.0, rng=np.random.default_rng(0)
    )
    expected = np.array(
        [
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
            1,
            1,
            1,
            1,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(mask, expected)
    inputs, targets = span_corrupt(
        np.arange(100, 132),
        sentinel_ids=SENTINELS,
        eos_id=EOS,
        noise_density=0.25,
        rng=np.random.default_rng(0),
    )
    assert inputs.tolist() == [
        100,
        101,
        102,
        103,
        104,
        105,
        106,
        107,
        999,
        114,
        115,
        116,
        117,
        118,
        119,
        120,
        998,
        122,
        123,
        124,
        125,
        126,
        127,
        128,
        129,
        130,
        997,
        1,
    ]
    assert targets.tolist() == [999, 108, 109, 110, 111, 112, 113, 998, 121, 997, 131, 1]


def test_golden_single_span_sample():
    # encoder length 16 -> 17 raw tokens, round(2.55) = 3 noise tokens in 1 span, which must end the
    # chunk: no randomness left. Sample 1 is tokens 17..33 of the corpus.
    samples = T5Samples(np.arange(10, 110), sentinel_ids=SENTINELS, eos_id=EOS, inputs_length=16)
    assert (samples.tokens_length, samples.targets_length, len(samples)) == (17, 5, 5)
    ex = samples[1]
    assert ex.tokens.tolist() == list(range(27, 44))
    assert ex.inputs.tolist() == list(range(27, 41)) + [999, 1]
    assert ex.targets.tolist() == [999, 41, 42, 43, 1]
    assert ex.sentinels.tolist() == [999] and ex.num_spans == 1


def test_noise_spans_to_sentinels_doc_example():
    tokens = np.array([10, 11, 12, 13, 14, 15])  # A B C D E F
    mask = np.array([0, 0, 1, 1, 0, 1], dtype=bool)
    assert noise_spans_to_sentinels(tokens, mask, sentinel_ids=[99, 98]).tolist() == [
        10,
        11,
        99,
        14,
        98,
    ]
    assert noise_spans_to_sentinels(tokens, ~mask, sentinel_ids=[99, 98]).tolist() == [
        99,
        12,
        13,
        98,
        15,
    ]


def test_density_statistics_over_seeds():
    # the count is fixed per length; the achieved density over many lengths and seeds is the target
    for density in (0.15, 0.3, 0.5):
        fractions = []
        for seed in range(200):
            length = 100 + seed
            m = random_spans_noise_mask(
                length,
                noise_density=density,
                mean_noise_span_length=3.0,
                rng=np.random.default_rng(seed),
            )
            fractions.append(m.mean())
        assert abs(np.mean(fractions) - density) < 0.005
    # span lengths average to the requested mean
    lengths = []
    for seed in range(200):
        m = random_spans_noise_mask(
            568, noise_density=0.15, mean_noise_span_length=3.0, rng=np.random.default_rng(seed)
        )
        lengths += [e - s for s, e in spans(m)]
    assert abs(np.mean(lengths) - 85 / 28) < 1e-9  # 85 noise tokens in 28 spans, every seed
    # and the spans are spread out: every position is noise in some seed, none in all
    hits = sum(
        random_spans_noise_mask(
            64, noise_density=0.15, mean_noise_span_length=3.0, rng=np.random.default_rng(s)
        ).astype(int)
        for s in range(400)
    )
    assert hits[0] == 0 and hits[-1] == 400 and np.all(hits[1:-1] > 0) and np.all(hits[1:-1] < 400)


def test_zero_density_and_tiny_lengths():
    rng = np.random.default_rng(0)
    assert not random_spans_noise_mask(
        10, noise_density=0.0, mean_noise_span_length=3.0, rng=rng
    ).any()
    assert (
        random_spans_noise_mask(0, noise_density=0.15, mean_noise_span_length=3.0, rng=rng).size
        == 0
    )
    assert random_spans_noise_mask(
        2, noise_density=0.15, mean_noise_span_length=3.0, rng=rng
    ).tolist() == [False, True]


@pytest.mark.parametrize(
    "kwargs", [dict(noise_density=1.0), dict(noise_density=-0.1), dict(mean_noise_span_length=0.0)]
)
def test_bad_parameters(kwargs):
    args = dict(noise_density=0.15, mean_noise_span_length=3.0) | kwargs
    with pytest.raises(UsageError):
        random_spans_noise_mask(10, rng=np.random.default_rng(0), **args)
    with pytest.raises(UsageError):
        T5Samples(np.arange(1000), sentinel_ids=SENTINELS, eos_id=EOS, inputs_length=16, **args)


def test_more_spans_than_sentinels():
    with pytest.raises(UsageError, match="28 noise spans .* 10 sentinels"):
        T5Samples(np.arange(1000), sentinel_ids=SENTINELS[:10], eos_id=EOS)
    with pytest.raises(UsageError, match="3 noise spans but only 2 sentinel"):
        noise_spans_to_sentinels(
            np.arange(6), np.array([0, 1, 0, 1, 0, 1], bool), sentinel_ids=[9, 8]
        )
    # 2048 -> 2274 tokens -> 114 spans: more than mT5's 100 sentinels
    with pytest.raises(UsageError, match="114 noise spans"):
        T5Samples(np.arange(5000), sentinel_ids=SENTINELS, eos_id=EOS, inputs_length=2048)


def test_too_short_dataset_and_seq_length():
    with pytest.raises(DataprepError, match="567 tokens, fewer than the 568"):
        T5Samples(np.arange(567), sentinel_ids=SENTINELS, eos_id=EOS)
    with pytest.raises(UsageError, match="cannot hold one target"):
        T5Samples(np.arange(100), sentinel_ids=SENTINELS, eos_id=EOS, inputs_length=2)
    samples = T5Samples(np.arange(100), sentinel_ids=SENTINELS, eos_id=EOS, inputs_length=3)
    ex = samples[0]
    assert ex.inputs.size == 3 and ex.targets.size == 3  # [clean, X0, EOS] and [X0, noise, EOS]


def test_tokenizer_without_sentinels():
    class NoSentinels:
        name = "gpt2"
        sentinel_ids: list[int] = []
        eos_id = 50256

    with pytest.raises(UsageError, match="gpt2 has no sentinel"):
        sentinel_ids_of(NoSentinels())


@pytest.fixture(scope="module")
def corpus():
    return np.random.default_rng(7).integers(2, VOCAB - 100, size=568 * 20 + 300).astype(np.uint16)


def test_full_chunks_have_exact_lengths(corpus):
    samples = T5Samples(corpus, sentinel_ids=SENTINELS, eos_id=EOS, inputs_length=512)
    assert len(samples) == 20  # the last 300 tokens are dropped
    for k in range(len(samples)):
        ex = samples[k]
        assert ex.inputs.size == 512 and ex.targets.size == 114
        assert ex.noise_mask.sum() == 85 and ex.num_spans == 28
        np.testing.assert_array_equal(ex.tokens, corpus[k * 568 : (k + 1) * 568])
        assert reassemble(ex.inputs, ex.targets, SENTINELS) == ex.tokens.tolist()
    with pytest.raises(IndexError):
        samples[20]
    assert samples[-1].index == 19


def test_determinism_and_access_order(corpus):
    a = T5Samples(corpus, sentinel_ids=SENTINELS, eos_id=EOS, seed=5)
    b = T5Samples(corpus, sentinel_ids=SENTINELS, eos_id=EOS, seed=5)
    forward = [a[k] for k in range(len(a))]
    backward = {k: b[k] for k in reversed(range(len(b)))}
    for k, ex in enumerate(forward):
        np.testing.assert_array_equal(ex.inputs, backward[k].inputs)
        np.testing.assert_array_equal(ex.targets, backward[k].targets)
    np.testing.assert_array_equal(a[3].noise_mask, a[3].noise_mask)  # recomputed alone: same
    # sample k uses default_rng([seed, k]): the same mask as drawing it directly
    direct = random_spans_noise_mask(
        568, noise_density=0.15, mean_noise_span_length=3.0, rng=np.random.default_rng([5, 3])
    )
    np.testing.assert_array_equal(a[3].noise_mask, direct)
    # other seeds and other samples differ
    c = T5Samples(corpus, sentinel_ids=SENTINELS, eos_id=EOS, seed=6)
    assert not np.array_equal(a[3].noise_mask, c[3].noise_mask)
    assert not np.array_equal(a[3].noise_mask, a[4].noise_mask)
