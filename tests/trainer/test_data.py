"""trainer/training/data.py: which samples each DP rank reads, T5 padding/masking, split/blend vs
megatron-core, and that the prefetching loader gives exactly the batches computed without it."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from trainer_fixtures import markov_docs, write_dataset

from dataprep.errors import DataConfigError, DataprepError
from trainer.training.batches import IGNORE_INDEX, collate_gpt, collate_t5, shift_right_np
from trainer.training.data import (
    BatchLoader,
    T5Source,
    blend_indices,
    micro_batch_indices,
    parse_data_path,
    split_bounds,
)

SENTINELS = list(range(999, 899, -1))  # <extra_id_0> = 999, descending, as mT5
EOS = 1


@pytest.mark.parametrize("dp_size,accum", [(1, 1), (2, 1), (2, 3), (4, 2)])
def test_dp_ranks_read_disjoint_slices_that_cover_the_global_batch(dp_size, accum):
    micro = 3
    gbs = micro * dp_size * accum
    for step in (0, 1, 7):
        per_rank = [
            micro_batch_indices(
                step, micro_batch_size=micro, global_batch_size=gbs, dp_rank=d, dp_size=dp_size
            )
            for d in range(dp_size)
        ]
        for mbs in per_rank:
            assert len(mbs) == accum and all(m.size == micro for m in mbs)
        flat = np.concatenate([np.concatenate(m) for m in per_rank])
        assert sorted(flat.tolist()) == list(range(step * gbs, (step + 1) * gbs))
        # Megatron's order: micro-step m of rank d starts at step*GBS + m*micro*DP + d*micro
        last = step * gbs + (accum - 1) * micro * dp_size + (dp_size - 1) * micro
        assert per_rank[-1][-1][0] == last


def test_global_batch_not_a_multiple_is_a_usage_error():
    with pytest.raises(ValueError, match="not a multiple"):
        micro_batch_indices(0, micro_batch_size=4, global_batch_size=10, dp_rank=0, dp_size=2)


def test_collate_gpt_shifts_labels():
    b = collate_gpt([np.arange(5), np.arange(10, 15)])
    assert b.tokens.tolist() == [[0, 1, 2, 3], [10, 11, 12, 13]]
    assert b.labels.tolist() == [[1, 2, 3, 4], [11, 12, 13, 14]]
    assert b.loss_mask.dtype == torch.float32 and bool((b.loss_mask == 1).all())
    assert b.tokens.dtype == torch.int64


class _Ex:
    def __init__(self, inputs, targets):
        self.inputs, self.targets = np.array(inputs), np.array(targets)


def test_collate_t5_pads_inputs_with_0_masked_and_labels_with_ignore():
    b = collate_t5(
        [_Ex([5, 999, 7, 1], [999, 6, 1]), _Ex([8, 1], [999, 9, 4, 1])],
        encoder_length=5,
        decoder_length=4,
    )
    assert b.encoder_ids.tolist() == [[5, 999, 7, 1, 0], [8, 1, 0, 0, 0]]
    assert b.encoder_mask.tolist() == [[True] * 4 + [False], [True, True, False, False, False]]
    assert b.labels.tolist() == [[999, 6, 1, IGNORE_INDEX], [999, 9, 4, 1]]
    # decoder input = labels shifted right behind decoder start 0, ignore -> pad 0 (HF _shift_right)
    assert b.decoder_input_ids.tolist() == [[0, 999, 6, 1], [0, 999, 9, 4]]
    with pytest.raises(DataConfigError, match="decoder_seq_length 4"):
        collate_t5([_Ex([5, 1], [999, 6, 7, 8, 1])], encoder_length=5, decoder_length=4)


def test_shift_right_matches_the_model_helper():
    from trainer.models.mt5 import shift_right

    labels = np.array([[5, 6, 1, IGNORE_INDEX], [7, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    assert shift_right_np(labels).tolist() == shift_right(torch.from_numpy(labels)).tolist()


@pytest.mark.parametrize("split", ["969,30,1", "98,2,0", "1", "50,50", "0.7,0.2,0.1"])
@pytest.mark.parametrize("n", [1, 10, 997])
def test_split_bounds_match_megatron_core(split, n):
    from megatron.core.datasets.blended_megatron_dataset_config import (
        convert_split_vector_to_split_matrix,
        parse_and_normalize_split,
    )

    matrix = convert_split_vector_to_split_matrix(parse_and_normalize_split(split))
    for i, bookends in enumerate(matrix):
        expected = (
            (0, 0)
            if bookends is None
            else (int(round(bookends[0] * n)), int(round(bookends[1] * n)))
        )
        got = split_bounds(split, n, i)
        assert got == expected or (bookends is None and got[0] == got[1])


def test_blend_indices_match_megatron_core_helper():
    from megatron.core.datasets import helpers_cpp

    weights = [0.5, 0.3, 0.2]
    size = 1000
    di, dsi = np.zeros(size, np.int16), np.zeros(size, np.int64)
    helpers_cpp.build_blending_indices(di, dsi, np.array(weights), len(weights), size, False)
    got_di, got_dsi = blend_indices(weights, size)
    assert np.array_equal(got_di, di) and np.array_equal(got_dsi, dsi)


def test_parse_data_path():
    assert parse_data_path(["a"]) == [(1.0, "a")]
    assert parse_data_path(["3", "a", "1", "b"]) == [(0.75, "a"), (0.25, "b")]
    with pytest.raises(ValueError, match="pairs"):
        parse_data_path(["a", "b"])


@pytest.fixture
def t5_prefix(tmp_path):
    docs = markov_docs(60, vocab=890, length=(30, 120), seed=1, eod=EOS)
    return write_dataset(
        tmp_path / "t5_text_document", docs, vocab_size=1000, spec="toy", eos_id=EOS
    )


def _t5_source(prefix, **kw):
    args = dict(
        encoder_length=32,
        decoder_length=12,
        num_samples=64,
        split="90,10,0",
        seed=5,
        sentinel_ids=SENTINELS,
        eos_id=EOS,
        noise_density=0.15,
        mean_noise_span_length=3.0,
    )
    args.update(kw)
    return T5Source([prefix], **args)


def test_t5_source_reads_only_the_train_split_and_is_deterministic(t5_prefix):
    from dataprep.indexed import IndexedDatasetReader

    src = _t5_source(t5_prefix)
    reader = IndexedDatasetReader(t5_prefix)
    train_docs = int(round(0.9 * reader.num_documents))
    train_tokens = sum(len(reader.get_document(d)) for d in range(train_docs))
    assert len(src) == train_tokens // src.datasets[0].tokens_length
    again = _t5_source(t5_prefix)
    for k in (0, 3, len(src) + 2):  # past the first epoch too
        a, b = src.get(k), again.get(k)
        assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.targets, b.targets)
        assert a.inputs.size <= 32 and a.targets.size <= 12 and a.inputs[-1] == EOS
    # every sample of one epoch appears once: the epoch order is a permutation
    seen = {src.get(k).index for k in range(len(src))}
    assert seen == set(range(len(src)))
    other_seed = _t5_source(t5_prefix, seed=6)
    assert [src.get(k).index for k in range(8)] != [other_seed.get(k).index for k in range(8)]


def test_t5_source_too_small_dataset_names_the_prefix(tmp_path):
    prefix = write_dataset(tmp_path / "tiny", [np.arange(2, 12)], vocab_size=1000)
    with pytest.raises(DataprepError, match="tiny.*fewer than"):
        _t5_source(prefix)


def test_loader_prefetch_gives_the_same_batches_as_direct_and_counts_waiting(t5_prefix):
    src = _t5_source(t5_prefix)
    kw = dict(micro_batch_size=2, global_batch_size=8, dp_rank=1, dp_size=2)
    loader = BatchLoader(src, start_step=3, end_step=7, **kw)
    got = list(loader)
    assert [s.step for s in got] == [3, 4, 5, 6]
    direct = BatchLoader(src, start_step=0, end_step=0, **kw)
    for s in got:
        want = direct.make_step(s.step)
        assert len(s.micro_batches) == 2
        for a, b in zip(s.micro_batches, want.micro_batches, strict=True):
            assert torch.equal(a.encoder_ids, b.encoder_ids) and torch.equal(a.labels, b.labels)


class _SlowSource:
    """A source whose every sample takes `delay` seconds: the loop must wait for the prefetch."""

    def __init__(self, source, delay: float) -> None:
        self.source, self.delay = source, delay

    def __len__(self) -> int:
        return len(self.source)

    def get(self, k: int):
        time.sleep(self.delay)
        return self.source.get(k)

    def collate(self, examples):
        return self.source.collate(examples)


def test_loader_counts_the_time_the_loop_waits_for_a_slow_source(t5_prefix):
    # 2 steps of 2 micro-batches x 2 samples on this DP rank, 0.05 s per sample: the first step
    # alone cannot be ready before 4 x 0.05 s, and the loop asks for it at once
    kw = dict(micro_batch_size=2, global_batch_size=8, dp_rank=1, dp_size=2)
    loader = BatchLoader(_SlowSource(_t5_source(t5_prefix), 0.05), start_step=0, end_step=2, **kw)
    steps = list(loader)
    assert [s.step for s in steps] == [0, 1]
    assert loader.wait_s >= 0.15


def test_loader_reraises_errors_from_the_prefetch_thread(t5_prefix):
    class Broken:
        def get(self, k):
            raise RuntimeError(f"cannot read sample {k}")

        def collate(self, items):
            return items

    loader = BatchLoader(
        Broken(), start_step=0, end_step=3, micro_batch_size=1, global_batch_size=1
    )
    with pytest.raises(RuntimeError, match="cannot read sample 0"):
        list(loader)
