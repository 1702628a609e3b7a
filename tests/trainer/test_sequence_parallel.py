"""--sequence-parallel (TP=2): norms, dropouts and residual adds on half of the sequence each,
all-gather / reduce-scatter at the TP regions' borders; the losses and the gathered gradients are
those of the plain TP=2 run (dropout on), with recompute too; what it cannot do is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist

from dataprep.errors import UsageError
from tests.trainer.tp_testing import batch, build, gather_shard, run_distributed
from tests.trainer.trainer_fixtures import markov_docs, write_dataset, write_mt5_dataset
from trainer import parallel
from trainer.loss import cross_entropy
from trainer.train import TrainConfig, run
from trainer.training.metrics import read_metrics

DROPOUT = dict(dropout=0.1, attn_dropout=0.1)


def _steps(kind, group, *, sequence_parallel, recompute=None, steps=3):
    model = build(kind, seed=0, **(dict(dropout_rate=0.1) if kind == "mt5" else DROPOUT))
    parallel.parallelize(model, group, dropout_seed=5, sequence_parallel=sequence_parallel,
                         recompute_granularity=recompute)  # fmt: skip
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dims = parallel.shard_dims(model)
    torch.manual_seed(11)
    losses, grads = [], {}
    for step in range(steps):
        b = batch(kind, step)
        logits = model(*b["inputs"])
        assert logits.shape[1] == b["targets"].shape[1]  # the head sees the whole sequence
        loss = cross_entropy(logits, b["targets"], tp_group=group,
                                      vocab_size=model.config.vocab_size)  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parallel.finalize_grads(list(model.parameters()), tp_group=group)
        grads = {n: gather_shard(p.grad, dims.get(n), group) for n, p in model.named_parameters()}
        parallel.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        losses.append(loss.item())
    return model, losses, grads


def _worker(rank, kind):
    group = dist.new_group([0, 1])
    _, plain, plain_grads = _steps(kind, group, sequence_parallel=False)
    model, sp, sp_grads = _steps(kind, group, sequence_parallel=True)
    assert np.allclose(plain, sp, rtol=0, atol=1e-5), (plain, sp)
    for name, g in plain_grads.items():
        assert torch.allclose(g, sp_grads[name], rtol=0, atol=1e-5), name
    # the activations between the blocks really hold half of the sequence
    seen = []
    blocks = (
        [model.encoder.block[0], model.decoder.block[0]]
        if kind == "mt5"
        else [model.transformer.h[0]]
    )
    handles = [b.register_forward_hook(lambda m, a, o: seen.append(o.shape[1])) for b in blocks]
    with torch.no_grad():
        model(*batch(kind, 0)["inputs"])
    for handle in handles:
        handle.remove()
    b = batch(kind, 0)
    full = (
        [b["inputs"][0].shape[1], b["targets"].shape[1]]
        if kind == "mt5"
        else [b["targets"].shape[1]]
    )
    assert seen == [t // 2 for t in full]
    _, sp_full, _ = _steps(kind, group, sequence_parallel=True, recompute="full")
    assert np.allclose(plain, sp_full, rtol=0, atol=1e-5), (plain, sp_full)


@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["gpt", "gptj", "mt5"])
def test_sequence_parallel_is_the_plain_tp2_run(kind, tmp_path):
    run_distributed(_worker, kind, tmp_path=tmp_path)


def _dropout_worker(rank):
    """The sequence-parallel dropout keeps this rank's slice of the unsplit run's mask."""
    group = dist.new_group([0, 1])
    x = torch.randn(2, 8, 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    expected = torch.nn.functional.dropout(x, 0.5, True)
    torch.manual_seed(3)
    drop = parallel.SequenceParallelDropout(0.5, group, split_input=True).train()
    assert torch.equal(drop(x), expected.chunk(2, dim=1)[rank])


@pytest.mark.distributed
def test_the_sequence_parallel_dropout_is_the_unsplit_mask(tmp_path):
    run_distributed(_dropout_worker, tmp_path=tmp_path)


def test_sequence_parallel_needs_tp2_and_sequences_it_can_split(tmp_path):
    with pytest.raises(UsageError, match="tensor_model_parallel_size 2"):
        TrainConfig(data_path=("x",), sequence_parallel=True)
    prefix = write_dataset(tmp_path / "d", markov_docs(20, vocab=500, seed=4), vocab_size=512)
    mt5 = dict(model="mt5-tiny", encoder_seq_length=64)  # 14 targets: even
    for kw, message in (
        (dict(seq_length=33), "seq_length 33 is not a multiple of 2$"),
        (dict(mt5, encoder_seq_length=63), "encoder_seq_length 63 is not a multiple of 2$"),
        (dict(mt5, decoder_seq_length=15), "decoder_seq_length 15 is not a multiple of 2$"),
        (dict(mt5, encoder_seq_length=128),  # 29 targets
         r"decoder_seq_length 29 is not a multiple of 2 \(the span-corruption targets' length\); "
         "pass decoder_seq_length 30"),
    ):  # fmt: skip
        cfg = TrainConfig(data_path=(prefix,), tensor_model_parallel_size=2, sequence_parallel=True,
                          train_iters=1, progress=False, **kw)  # fmt: skip
        with pytest.raises(UsageError, match=message):
            run(cfg)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("model", ["gpt-tiny", "mt5-tiny"])
def test_train_with_sequence_parallel_has_the_plain_losses(model, tmp_path):
    if model == "gpt-tiny":
        prefix = write_dataset(tmp_path / "d", markov_docs(100, vocab=500, seed=4), vocab_size=512)
        lengths = dict(seq_length=32)
    else:
        prefix = write_mt5_dataset(tmp_path / "d", seed=4)
        lengths = dict(encoder_seq_length=64, make_vocab_size_divisible_by=256)
    curves = {}
    for name, sp in (("plain", False), ("sp", True)):
        cfg = TrainConfig(data_path=(prefix,), model=model, micro_batch_size=2, **lengths,
                          train_iters=5, lr=3e-3, num_threads=1, progress=False, seed=3,
                          tensor_model_parallel_size=2, hidden_dropout=0.1, attention_dropout=0.1,
                          sequence_parallel=sp,
                          metrics=str(tmp_path / f"{name}.jsonl"))  # fmt: skip
        assert run(cfg) == 0
        curves[name] = [r["loss"] for r in read_metrics(tmp_path / f"{name}.jsonl")]
    assert len(curves["sp"]) == 5
    assert np.allclose(curves["plain"], curves["sp"], rtol=0, atol=1e-5), curves
