"""Greedy blending indices against megatron-core 0.16.1's C++ helpers, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from dataprep.sampling.blend import (
    build_blending_indices,
    build_exhaustive_blending_indices,
    normalize,
)

pytest.importorskip("megatron.core.datasets.gpt_dataset")
from megatron.core.datasets import helpers  # noqa: E402


def megatron_blend(weights, size):
    d, s = np.zeros(size, np.int16), np.zeros(size, np.int64)
    helpers.build_blending_indices(d, s, weights, len(weights), size, False)
    return d, s


def megatron_exhaustive(sizes):
    total = int(sum(sizes))
    d, s = np.zeros(total, np.int16), np.zeros(total, np.int64)
    helpers.build_exhaustive_blending_indices(d, s, np.asarray(sizes, np.int64), len(sizes))
    return d, s


RNG = np.random.default_rng(7)
WEIGHTS = [
    [1, 2, 3],
    [0.3, 0.7],
    [1, 1],
    [1, 1, 1],
    [1, 1, 2],  # exact ties between datasets 0 and 1
    [1, 2, 3, 4, 5],
    [1] * 10,
    *[RNG.dirichlet(np.ones(n)).tolist() for n in (2, 2, 3, 3, 3, 5, 5, 10)],
    [0.001, 0.999],
    [0.98, 0.01, 0.01],
]


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda w: f"{len(w)}x{w[0]:.3g}")
@pytest.mark.parametrize("size", [0, 1, 2, 3, 1000, 200_000])
def test_blending_indices_equal_megatron(weights, size):
    w = normalize(weights)
    want_d, want_s = megatron_blend(w, size)
    got_d, got_s = build_blending_indices(w, size)
    assert got_d.dtype == np.int16 and got_s.dtype == np.int64
    np.testing.assert_array_equal(got_d, want_d)
    np.testing.assert_array_equal(got_s, want_s)


def test_blending_indices_many_datasets_equal_megatron():
    w = normalize(RNG.dirichlet(np.ones(20)).tolist())  # the one-step-at-a-time path
    want = megatron_blend(w, 5000)
    got = build_blending_indices(w, 5000)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


MANY = [
    RNG.dirichlet(np.ones(22)).tolist(),  # the Pile's 22 components
    RNG.dirichlet(np.ones(32)).tolist(),
    RNG.dirichlet(np.full(8, 0.2)).tolist(),  # very unequal: rare datasets, segment reruns
    [1] * 22,  # exact ties everywhere
    [1, 1, 2, 2, 3, 3] * 4 + [5, 5],  # 26 datasets, ties between pairs
    list(range(1, 33)),
]


@pytest.mark.parametrize("weights", MANY, ids=lambda w: f"{len(w)}x{w[0]:.3g}")
@pytest.mark.parametrize("size", [0, 1, 2, 3, 9000, 100_003])
def test_blending_indices_22_32_datasets_equal_megatron(weights, size):
    w = normalize(weights)
    want = megatron_blend(w, size)
    got = build_blending_indices(w, size)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "sizes",
    [
        [1, 1],
        [3, 5],
        [100, 200, 300],
        [7, 1, 50],
        [1, 100_000],
        RNG.integers(1, 50_000, 3).tolist(),
        RNG.integers(1, 30_000, 5).tolist(),
        RNG.integers(1, 10_000, 10).tolist(),
    ],
)
def test_exhaustive_blending_indices_equal_megatron(sizes):
    want_d, want_s = megatron_exhaustive(sizes)
    got_d, got_s = build_exhaustive_blending_indices(sizes)
    np.testing.assert_array_equal(got_d, want_d)
    np.testing.assert_array_equal(got_s, want_s)
