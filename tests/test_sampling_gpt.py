"""dataprep.sampling (GPT windows, splits, blends, cache) against the real megatron-core 0.16.1.

Fixtures are written with megatron-core's IndexedDatasetBuilder and read with our
IndexedDatasetReader; megatron-core's GPTDataset / BlendedDataset (CPU, via
BlendedMegatronDatasetBuilder) are the oracle for every index array and every sample window.
"""

from __future__ import annotations

import glob
import logging
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataprep.errors import DataprepError, UsageError
from dataprep.indexed import IndexedDatasetReader
from dataprep.sampling import (
    BlendedSamples,
    GPTSamples,
    GPTSamplesConfig,
    build_blending_indices,
    build_document_index,
    build_gpt_samples,
    build_sample_index,
    build_shuffle_index,
    parse_data_path,
    parse_split,
    size_weights,
    split_ranges,
)

mc = pytest.importorskip("megatron.core.datasets.gpt_dataset")
from megatron.core.datasets import helpers  # noqa: E402
from megatron.core.datasets.blended_megatron_dataset_builder import (  # noqa: E402
    BlendedMegatronDatasetBuilder,
)
from megatron.core.datasets.blended_megatron_dataset_config import (  # noqa: E402
    convert_split_vector_to_split_matrix,
    parse_and_normalize_split,
)
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder  # noqa: E402

SPLITS = ("train", "valid", "test")


class DuckTokenizer:  # the attributes GPTDataset reads of its tokenizer
    vocab_size = 5000
    eod = 0
    eos = 0
    pad = 1
    unique_identifiers = {"class": "DuckTokenizer", "vocab_size": 5000}


def write_dataset(prefix, lengths, seed):
    rng = np.random.default_rng(seed)
    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.uint16)
    for n in lengths:
        builder.add_document(rng.integers(2, 5000, n).astype(np.uint16), [int(n)])
    builder.finalize(str(prefix) + ".idx")
    return str(prefix)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt")
    rng = np.random.default_rng(0)
    # very short (1 token) to very long (3000) documents; many shorter than seq_length
    mixed = rng.choice(
        [1, 2, 3, 7, 30, 64, 65, 200, 3000],
        size=1200,
        p=[0.1, 0.1, 0.1, 0.1, 0.2, 0.1, 0.1, 0.15, 0.05],
    )
    return {
        "mixed": write_dataset(root / "mixed", mixed, 1),
        "small": write_dataset(root / "small", rng.integers(5, 60, 400), 2),
        "other": write_dataset(root / "other", rng.integers(1, 400, 500), 3),
        "root": root,
    }


def megatron_build(prefixes, weights, sizes, *, seq_length, seed, split, cache, **kw):
    cfg = mc.GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend=(list(prefixes), weights),
        split=split,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        tokenizer=DuckTokenizer(),
        path_to_cache=cache,
        mmap_bin_files=True,
        **kw,
    )
    return BlendedMegatronDatasetBuilder(mc.GPTDataset, sizes, lambda: True, cfg).build()


def megatron_cached(cache, split_name):
    """The arrays megatron-core saved in its cache for one split."""
    out = {}
    for name in ("document_index", "sample_index", "shuffle_index"):
        (path,) = glob.glob(os.path.join(cache, f"*-GPTDataset-{split_name}-{name}.npy"))
        out[name] = np.load(path)
    return out


def megatron_window(ds, k, extra):
    item = ds[k]
    tokens = item["tokens"].numpy()
    return np.concatenate([tokens, item["labels"].numpy()[-1:]]) if extra else tokens


def assert_same_as_megatron(ours, theirs, cached, *, extra=1, skip_last=False):
    for name in ("document_index", "sample_index", "shuffle_index"):
        a, b = getattr(ours, name), cached[name]
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert len(ours) == len(theirs)
    for k in range(len(ours)):
        if skip_last and int(ours.shuffle_index[k]) == len(ours) - 1:
            continue
        np.testing.assert_array_equal(ours[k], megatron_window(theirs, k, extra), err_msg=f"k={k}")


CASES = [  # (dataset, seq_length, num_samples, split, split name, extra kwargs)
    ("mixed", 64, 100, "969,30,1", "train", {}),  # one epoch
    ("mixed", 64, 40, "969,30,1", "valid", {}),  # several epochs of a small split
    ("mixed", 16, 30, "90,5,5", "test", {}),
    ("small", 128, 150, "80,10,10", "train", {}),
    ("small", 5, 500, "80,10,10", "valid", {}),
    ("small", 33, 100, "1", "train", {}),
    ("other", 50, 3000, "98,2,0", "train", {}),
    ("mixed", 4096, 20, "1", "train", {}),  # seq_length longer than most documents
]


@pytest.mark.parametrize("name,seq_length,num_samples,split,split_name,kw", CASES)
def test_indices_and_windows_equal_megatron(
    data, tmp_path, name, seq_length, num_samples, split, split_name, kw
):
    prefix = data[name]
    sizes = [num_samples if s == split_name else 0 for s in SPLITS]
    cache = str(tmp_path / "megatron")
    built = megatron_build(
        [prefix], None, sizes, seq_length=seq_length, seed=1234, split=split, cache=cache
    )
    theirs = built[SPLITS.index(split_name)]
    config = GPTSamplesConfig(
        seq_length=seq_length, seed=1234, split=split, cache_dir=str(tmp_path / "ours")
    )
    ours = GPTSamples(prefix, num_samples=num_samples, split_name=split_name, config=config)
    assert len(ours) >= num_samples
    assert_same_as_megatron(ours, theirs, megatron_cached(cache, split_name))


def _samples_per_epoch(prefix, split, split_name, seq_length):
    lengths = IndexedDatasetReader(prefix).sequence_lengths
    beg, end = split_ranges(split, len(lengths))[SPLITS.index(split_name)]
    return (int(lengths[beg:end].sum()) - 1) // seq_length


@pytest.mark.parametrize(
    "fraction,separate", [(0.3, True), (0.79, True), (0.81, False), (0.95, False)]
)
def test_separate_final_epoch_both_sides_of_80_percent(data, tmp_path, fraction, separate):
    prefix, split, seq_length = data["other"], "90,10,0", 40
    per_epoch = _samples_per_epoch(prefix, split, "train", seq_length)
    num_samples = 2 * per_epoch + int(fraction * per_epoch)
    cache = str(tmp_path / "megatron")
    theirs = megatron_build(
        [prefix], None, [num_samples, 0, 0], seq_length=seq_length, seed=7, split=split, cache=cache
    )[0]
    config = GPTSamplesConfig(seq_length=seq_length, seed=7, split=split, cache_dir=None)
    ours = GPTSamples(
        IndexedDatasetReader(prefix), num_samples=num_samples, split_name="train", config=config
    )
    assert ours.num_epochs == 3
    assert ours.separate_final_epoch is separate
    assert_same_as_megatron(ours, theirs, megatron_cached(cache, "train"))


def test_no_extra_token_and_kept_partial_valid_sequence(data, tmp_path):
    prefix, split = data["small"], "70,30,0"
    for extra, drop in [(0, True), (1, False)]:
        cache = str(tmp_path / f"m{extra}")
        theirs = megatron_build(
            [prefix],
            None,
            [0, 77, 0],
            seq_length=24,
            seed=3,
            split=split,
            cache=cache,
            add_extra_token_to_sequence=bool(extra),
            drop_last_partial_validation_sequence=drop,
        )[1]
        config = GPTSamplesConfig(
            seq_length=24,
            seed=3,
            split=split,
            add_extra_token=extra,
            drop_last_partial_sequence=drop,
            cache_dir=str(tmp_path / "o"),
        )
        ours = GPTSamples(prefix, num_samples=77, split_name="valid", config=config)
        assert_same_as_megatron(
            ours, theirs, megatron_cached(cache, "valid"), extra=extra, skip_last=not drop
        )
        assert all(len(ours[k]) == 24 + extra for k in range(len(ours)))


def test_sample_index_equals_cpp_helper_on_random_inputs():
    rng = np.random.default_rng(5)
    for _ in range(200):
        sizes = rng.integers(0, 50, rng.integers(1, 40)).astype(np.int32)
        sizes[rng.integers(len(sizes))] += 1  # at least one token
        epochs = int(rng.integers(1, 4))
        doc_index = np.tile(np.arange(len(sizes), dtype=np.int32), epochs)
        rng.shuffle(doc_index)
        tpe = int(sizes.sum())
        extra = int(rng.integers(0, 2))
        seq_length = int(rng.integers(2, max(3, epochs * tpe)))
        drop = bool(rng.integers(0, 2))
        if epochs * tpe - extra < 1:
            continue
        # the C++ function itself (the Python wrapper also asserts offsets >= 0, which the C++
        # breaks for a trailing empty document when the partial sequence is kept)
        want = helpers.build_sample_idx_int32(
            sizes, doc_index, seq_length, epochs, tpe, drop, extra
        )
        got = build_sample_index(
            sizes,
            doc_index,
            seq_length=seq_length,
            num_epochs=epochs,
            tokens_per_epoch=tpe,
            drop_last_partial_sequence=drop,
            add_extra_token=extra,
        )
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_sample_index_golden():
    # lengths [3, 5], one epoch, seq_length 3: two samples; sample 0 = doc0[0:3] + doc1[0:1]
    got = build_sample_index(
        np.array([3, 5], np.int32),
        np.array([0, 1], np.int32),
        seq_length=3,
        num_epochs=1,
        tokens_per_epoch=8,
    )
    np.testing.assert_array_equal(got, [[0, 0], [1, 0], [1, 3]])


def test_document_and_shuffle_index_consume_one_random_state():
    rng = np.random.RandomState(1234)
    doc = build_document_index(np.arange(10, 20, dtype=np.int32), 3, rng, True)
    shuffle = build_shuffle_index(25, 28, rng)
    assert doc.dtype == np.int32 and shuffle.dtype == np.uint32
    assert sorted(doc[:20].tolist()) == sorted(list(range(10, 20)) * 2)  # first 2 epochs together
    assert sorted(doc[20:].tolist()) == list(range(10, 20))  # last epoch on its own
    assert sorted(shuffle[:25].tolist()) == list(range(25))
    assert sorted(shuffle[25:].tolist()) == [25, 26, 27]


class ArrayReader:
    """A dataset held in memory: the reader interface GPTSamples uses (sequence_lengths, get)."""

    def __init__(self, docs):
        self.docs = [np.asarray(d, dtype=np.int64) for d in docs]
        self.sequence_lengths = np.array([len(d) for d in docs], dtype=np.int32)

    def get(self, i, *, offset=0, length=None):
        stop = None if length is None else offset + length
        return self.docs[i][offset:stop]


@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=30),
    seq_length=st.integers(1, 50),
    num_samples=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
)
def test_windows_are_seq_length_plus_one_and_overlap_by_one(lengths, seq_length, num_samples, seed):
    if sum(lengths) < seq_length + 1:
        lengths = [*lengths, seq_length + 1]
    start = np.cumsum([0, *lengths])
    reader = ArrayReader([np.arange(a, b) for a, b in zip(start[:-1], start[1:], strict=True)])
    config = GPTSamplesConfig(seq_length=seq_length, seed=seed, split="1")
    samples = GPTSamples(reader, num_samples=num_samples, split_name="train", config=config)
    assert len(samples) >= num_samples
    flat = np.concatenate([reader.docs[d] for d in samples.document_index])
    unshuffle = np.argsort(samples.shuffle_index)
    windows = [samples[int(k)] for k in unshuffle]  # in sample_index order
    for j, w in enumerate(windows):
        assert len(w) == seq_length + 1
        np.testing.assert_array_equal(w, flat[j * seq_length : j * seq_length + seq_length + 1])
        if j:
            assert windows[j - 1][-1] == w[0]


def test_cache_is_reused_and_keyed_by_configuration(data, tmp_path, caplog):
    prefix = data["small"]
    cache = str(tmp_path / "c")
    config = GPTSamplesConfig(seq_length=20, seed=1, split="1", cache_dir=cache)
    first = GPTSamples(prefix, num_samples=300, split_name="train", config=config)
    assert not first.from_cache
    files = sorted(os.listdir(cache))
    assert len(files) == 4 and not [f for f in files if ".tmp" in f]
    second = GPTSamples(prefix, num_samples=300, split_name="train", config=config)
    assert second.from_cache and isinstance(second.sample_index, np.memmap)
    np.testing.assert_array_equal(first.shuffle_index, second.shuffle_index)
    np.testing.assert_array_equal(first[5], second[5])
    other = GPTSamples(
        prefix,
        num_samples=300,
        split_name="train",
        config=GPTSamplesConfig(seq_length=20, seed=2, split="1", cache_dir=cache),
    )
    assert other.hash != first.hash and not other.from_cache
    os.utime(prefix + ".idx", ns=(1, 1))  # the dataset changed: the key changes
    third = GPTSamples(prefix, num_samples=300, split_name="train", config=config)
    assert third.hash != first.hash and not third.from_cache


def test_unwritable_cache_dir_warns_and_still_builds(data, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = GPTSamplesConfig(seq_length=20, seed=1, split="1", cache_dir=str(blocker / "cache"))
    with caplog.at_level(logging.WARNING):
        samples = GPTSamples(data["small"], num_samples=10, split_name="train", config=config)
    assert len(samples[0]) == 21
    assert "cannot write the index cache" in caplog.text


def test_default_cache_dir_is_beside_the_data(data):
    config = GPTSamplesConfig(seq_length=20, seed=9, split="1")
    samples = GPTSamples(data["small"], num_samples=10, split_name="train", config=config)
    assert samples.cache_dir == os.path.join(os.path.dirname(data["small"]), "dataprep-cache")
    assert any(f.startswith(samples.hash) for f in os.listdir(samples.cache_dir))


@pytest.mark.parametrize("split", ["969,30,1", "98,2,0", "1", "80/10/10", "0,1", "3,3,3", ".5,.5"])
def test_split_parsing_and_ranges_match_megatron(split):
    assert list(parse_split(split)) == parse_and_normalize_split(split)
    matrix = convert_split_vector_to_split_matrix(parse_and_normalize_split(split))
    for n in (1, 7, 1000, 12345):
        want = [None if b is None else (int(round(b[0] * n)), int(round(b[1] * n))) for b in matrix]
        assert split_ranges(split, n) == want


@pytest.mark.parametrize("split", ["", "a,b", "-1,2", "0,0,0", "1,2,3,4", "1,,2", "nan", "inf,1"])
def test_bad_split_is_a_usage_error(split):
    with pytest.raises(UsageError, match="split"):
        parse_split(split)


def test_validation_errors_are_one_line(data):
    with pytest.raises(UsageError, match="seq_length"):
        GPTSamplesConfig(seq_length=0, seed=1)
    with pytest.raises(UsageError, match="split"):
        GPTSamplesConfig(seq_length=8, seed=1, split="-1")
    config = GPTSamplesConfig(seq_length=5000, seed=1, split="969,30,1")
    with pytest.raises(
        DataprepError, match=r"in split 'valid'; one sample needs seq_length\+1 = 5001"
    ):
        GPTSamples(data["small"], num_samples=10, split_name="valid", config=config)
    with pytest.raises(UsageError, match="no share"):
        GPTSamples(
            data["small"],
            num_samples=10,
            split_name="test",
            config=GPTSamplesConfig(seq_length=8, seed=1, split="98,2,0"),
        )
    with pytest.raises(UsageError, match="split name"):
        GPTSamples(
            data["small"],
            num_samples=10,
            split_name="dev",
            config=GPTSamplesConfig(seq_length=8, seed=1),
        )


# ---------------------------------------------------------------------------------------- blends


def test_parse_data_path_forms(data):
    p, q = data["small"], data["other"]
    assert parse_data_path([p]) == ([p], None)
    assert parse_data_path(["0.3", p, "70", q]) == ([p, q], [0.3, 70.0])
    assert parse_data_path([p, q]) == ([p, q], None)
    assert parse_data_path([p, q, data["mixed"]]) == ([p, q, data["mixed"]], None)
    with pytest.raises(UsageError, match="weight"):
        parse_data_path(["-1", p, "2", q])
    with pytest.raises(UsageError, match="one weight per prefix"):
        parse_data_path(["0.5", p, q])
    with pytest.raises(UsageError, match="mixes"):
        parse_data_path(["0.5", p, q, "x"])


def test_size_weights_follow_n_to_the_alpha():
    w = size_weights([100, 10000], alpha=0.5)
    np.testing.assert_allclose(w, [10 / 110, 100 / 110])
    np.testing.assert_allclose(size_weights([5, 5, 0], alpha=0.3), [0.5, 0.5, 0])
    with pytest.raises(UsageError):
        size_weights([-1, 2])


def test_blending_indices_equal_cpp_helper():
    rng = np.random.default_rng(0)
    for num in (1, 2, 2, 3, 5):
        w = (rng.random(num) + 0.01).tolist()
        w = (np.array(w) / np.sum(w)).tolist()
        size = 5000
        want_d, want_s = np.zeros(size, np.int16), np.zeros(size, np.int64)
        helpers.build_blending_indices(want_d, want_s, w, num, size, False)
        got_d, got_s = build_blending_indices(w, size)
        np.testing.assert_array_equal(got_d, want_d)
        np.testing.assert_array_equal(got_s, want_s)
    # the docstring example
    assert build_blending_indices([0.7, 0.3], 10)[0].tolist() == [0, 1, 0, 0, 1, 0, 0, 1, 0, 0]


BLENDS = [
    (["small", "other"], [0.7, 0.3], 400),
    (["small", "other", "mixed"], [20.0, 30.0, 50.0], 900),
    (["small", "other"], None, 250),  # weights from the datasets' sizes
]


@pytest.mark.parametrize("names,weights,num_samples", BLENDS)
def test_blend_equals_megatron_blended_dataset(data, tmp_path, names, weights, num_samples):
    prefixes = [data[n] for n in names]
    split = "90,10,0"
    # path_to_cache None: BlendedDataset then needs no process group; its GPTDatasets cache under
    # <prefix>/cache (inside tmp)
    theirs = megatron_build(
        prefixes, weights, [num_samples, 0, 0], seq_length=32, seed=11, split=split, cache=None
    )[0]
    words = (
        prefixes
        if weights is None
        else [x for w, p in zip(weights, prefixes, strict=True) for x in (str(w), p)]
    )
    ours = build_gpt_samples(
        words,
        seq_length=32,
        num_samples=num_samples,
        split=split,
        split_name="train",
        seed=11,
        cache_dir=str(tmp_path / "ours"),
    )
    assert isinstance(ours, BlendedSamples)
    np.testing.assert_array_equal(ours.dataset_index, theirs.dataset_index)
    np.testing.assert_array_equal(ours.dataset_sample_index, theirs.dataset_sample_index)
    for d, m in zip(ours.datasets, theirs.datasets, strict=True):
        assert len(d) == len(m)
        np.testing.assert_array_equal(d.shuffle_index, m.shuffle_index)
    for i in range(len(ours)):
        np.testing.assert_array_equal(ours[i], megatron_window(theirs, i, 1), err_msg=f"i={i}")
    np.testing.assert_allclose(sum(ours.realised_weights), 1.0)


def test_exhaustive_blend_draws_every_sample_once(data):
    prefixes = [data["small"], data["other"]]
    ours = build_gpt_samples(
        prefixes, seq_length=32, num_samples=None, split="1", split_name="train", seed=1
    )
    assert len(ours) == sum(len(d) for d in ours.datasets)
    for d, ds in enumerate(ours.datasets):
        np.testing.assert_array_equal(
            np.sort(ours.dataset_sample_index[ours.dataset_index == d]), np.arange(len(ds))
        )


def test_blend_validation(data):
    samples = GPTSamples(
        data["small"],
        num_samples=10,
        split_name="train",
        config=GPTSamplesConfig(seq_length=8, seed=1, split="1"),
    )
    with pytest.raises(UsageError, match="weights for"):
        BlendedSamples([samples], [0.5, 0.5], 10)
    with pytest.raises(UsageError, match="> 0"):
        BlendedSamples([samples, samples], [1.0, -1.0], 10)
    with pytest.raises(DataprepError, match="has only"):
        BlendedSamples([samples], [1.0], len(samples) + 1)
    with pytest.raises(UsageError, match="num_samples"):
        build_gpt_samples(
            ["1", data["small"], "2", data["other"]],
            seq_length=8,
            num_samples=None,
            split="1",
            split_name="train",
            seed=1,
        )
