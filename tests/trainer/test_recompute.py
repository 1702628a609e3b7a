"""--recompute-granularity full|selective: the same losses and gradients as the plain run with
dropout on (so every recomputed mask must be the forward's, the per-rank TP dropout RNG included),
at TP=1 and TP=2, for GPT, GPT-J and mT5; and less activation memory kept for the backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.trainer.tp_testing import batch, build, run_distributed, saved_tensor_bytes
from tests.trainer.trainer_fixtures import markov_docs, write_dataset
from trainer import parallel
from trainer.loss import cross_entropy
from trainer.train import TrainConfig, run
from trainer.training.metrics import read_metrics

KINDS = ("gpt", "gptj", "mt5")
DROPOUT = {"gpt": dict(dropout=0.1, attn_dropout=0.1), "gptj": dict(dropout=0.1, attn_dropout=0.1),
           "mt5": dict(dropout_rate=0.1)}  # fmt: skip


def _steps(kind, granularity, *, tp_group=None, steps=3):
    """Losses and final gradients of `steps` AdamW steps with dropout, from seed 0."""
    model = build(kind, seed=0, **DROPOUT[kind])
    parallel.parallelize(model, tp_group, dropout_seed=5, recompute_granularity=granularity)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.manual_seed(11)  # the dropout outside the TP regions: the same on every TP rank
    losses, grads = [], {}
    for step in range(steps):
        b = batch(kind, step)
        loss = cross_entropy(model(*b["inputs"]), b["targets"], tp_group=tp_group,
                                      vocab_size=model.config.vocab_size)  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        optimizer.step()
        losses.append(loss.item())
    return losses, grads


def _assert_same(a, b, what):
    (la, ga), (lb, gb) = a, b
    assert np.allclose(la, lb, rtol=0, atol=1e-6), (what, la, lb)
    for name in ga:
        assert torch.allclose(ga[name], gb[name], rtol=0, atol=1e-6), (what, name)


@pytest.mark.parametrize("kind", KINDS)
def test_recompute_gives_the_plain_losses_and_gradients_with_dropout(kind):
    plain = _steps(kind, None)
    for granularity in ("full", "selective"):
        _assert_same(plain, _steps(kind, granularity), f"{kind} {granularity}")
    other = build(kind, seed=0, **DROPOUT[kind])  # the dropout really draws: another seed differs
    torch.manual_seed(12)
    b = batch(kind, 0)
    loss = cross_entropy(other.train()(*b["inputs"]), b["targets"],
                                  vocab_size=other.config.vocab_size)  # fmt: skip
    assert abs(loss.item() - plain[0][0]) > 1e-4


def _tp2_worker(rank, kind):
    import torch.distributed as dist

    group = dist.new_group([0, 1])
    plain = _steps(kind, None, tp_group=group)
    for granularity in ("full", "selective"):
        _assert_same(plain, _steps(kind, granularity, tp_group=group), f"{kind} {granularity}")


@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["gpt", "mt5"])
def test_recompute_at_tp2_replays_the_per_rank_dropout(kind, tmp_path):
    run_distributed(_tp2_worker, kind, tmp_path=tmp_path)


def test_recompute_keeps_less_for_the_backward():
    sizes = {}
    for granularity in (None, "selective", "full"):
        model = build("gpt", seed=0, n_layer=4, block_size=128, **DROPOUT["gpt"])
        parallel.parallelize(model, None, recompute_granularity=granularity)
        x = torch.randint(0, 1000, (4, 128))
        model.train()
        sizes[granularity] = saved_tensor_bytes(model, lambda m=model, x=x: m(x))
    assert sizes["full"] < sizes["selective"] < sizes[None], sizes
    # full keeps each block's input (B x T x C fp32) and what lies outside the blocks
    assert sizes["full"] < 0.25 * sizes[None], sizes


def test_recompute_leaves_inference_and_state_dicts_alone():
    model = build("gpt", seed=0).eval()
    keys = list(model.state_dict())
    x = torch.randint(0, 1000, (2, 16))
    with torch.no_grad():
        before = model(x)
        parallel.parallelize(model, None, recompute_granularity="full")
        after = model(x)
    assert torch.equal(before, after) and list(model.state_dict()) == keys


def test_an_unknown_granularity_is_refused():
    from dataprep.errors import UsageError

    with pytest.raises(UsageError, match="recompute"):
        parallel.apply_recompute(build("gpt"), "blocks")


@pytest.mark.slow
@pytest.mark.distributed
def test_train_with_recompute_at_tp2_has_the_plain_losses(tmp_path):
    prefix = write_dataset(tmp_path / "d", markov_docs(100, vocab=500, seed=4), vocab_size=512)
    curves = {}
    for granularity in (None, "full", "selective"):
        name = granularity or "plain"
        cfg = TrainConfig(data_path=(prefix,), model="gpt-tiny", seq_length=32, micro_batch_size=2,
                          train_iters=4, lr=3e-3, num_threads=1, progress=False, seed=3,
                          tensor_model_parallel_size=2, hidden_dropout=0.1, attention_dropout=0.1,
                          recompute_granularity=granularity,
                          metrics=str(tmp_path / f"{name}.jsonl"))  # fmt: skip
        assert run(cfg) == 0
        curves[name] = [r["loss"] for r in read_metrics(tmp_path / f"{name}.jsonl")]
    for name in ("full", "selective"):
        assert np.allclose(curves["plain"], curves[name], rtol=0, atol=1e-6), curves
