"""--use-distributed-optimizer (ZeRO-1 over DP): the losses of the plain DP run, 1/DP of the AdamW
moments per rank, and checkpoints that resume exactly and at another DP and TP (with or without
the flag), because they hold the same full AdamW state as without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist

from tests.trainer.tp_testing import build, run_distributed
from tests.trainer.trainer_fixtures import markov_docs, write_dataset
from trainer import parallel
from trainer.checkpoint import merge_checkpoint
from trainer.train import TrainConfig, run
from trainer.training.distributed_optimizer import DistributedAdamW
from trainer.training.metrics import read_metrics

pytestmark = [pytest.mark.distributed]


def _groups(model):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]


def _worker(rank):
    group = dist.new_group([0, 1])
    torch.manual_seed(0)
    plain, sharded = build("gpt", seed=0), build("gpt", seed=0)
    ref = torch.optim.AdamW(_groups(plain), lr=1e-2)
    opt = DistributedAdamW(_groups(sharded), group, lr=1e-2)
    for step in range(4):
        for m in (plain, sharded):  # the same gradients, shared unevenly by the DP ranks
            g = torch.Generator().manual_seed(step)
            for p in m.parameters():
                full = torch.randn(p.shape, generator=g)
                p.grad = full * 0.5 if m is plain else full * (0.25 + 0.5 * rank)
        for p in plain.parameters():
            p.grad.mul_(2)  # plain: the DP all-reduce of (0.25 + 0.75) x full
        ref_norm = parallel.clip_grad_norm_(list(plain.parameters()), 1.0)
        opt.reduce_gradients()
        norm = parallel.clip_grad_norm_(opt.grad_views(), 1.0, dp_group=group)
        assert torch.allclose(norm.double(), ref_norm.double(), rtol=1e-6), (norm, ref_norm)
        ref.step()
        opt.step()
        opt.zero_grad()
        for (name, a), b in zip(plain.named_parameters(), sharded.parameters(), strict=True):
            assert torch.allclose(a, b, rtol=0, atol=1e-7), (step, name)
    # each rank holds half of the moments (plus at most the padding of the last range)
    full_bytes = sum(2 * p.numel() * 4 for p in plain.parameters())
    assert full_bytes / 2 - 8 <= opt.state_bytes() <= full_bytes / 2 + 8, opt.state_bytes()
    # its state_dict is torch AdamW's, and loads back into either optimizer
    sd, ref_sd = opt.state_dict(), ref.state_dict()
    assert sd["state"].keys() == ref_sd["state"].keys()
    for i, entry in ref_sd["state"].items():
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(sd["state"][i][k], entry[k], rtol=1e-6, atol=1e-9), (i, k)
        assert float(sd["state"][i]["step"]) == float(entry["step"])
    again = DistributedAdamW(_groups(sharded), group, lr=1e-2)
    again.load_state_dict(ref_sd)
    assert abs(again.state_bytes() - opt.state_bytes()) == 0


def test_sharded_adamw_is_adamw_with_half_the_moments_per_rank(tmp_path):
    run_distributed(_worker, tmp_path=tmp_path)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    d = tmp_path_factory.mktemp("zero")
    return write_dataset(
        d / "z_text_document", markov_docs(120, vocab=100, seed=3), vocab_size=1000
    )


def _config(prefix, tmp_path, name, **kw):
    base = dict(data_path=(prefix,), model="gpt-tiny", seq_length=32, micro_batch_size=2,
                global_batch_size=4, train_iters=8, lr=3e-3, num_threads=1, progress=False,
                hidden_dropout=0.0, attention_dropout=0.0, seed=5,
                metrics=str(tmp_path / f"{name}.jsonl"))  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _losses(cfg):
    return [r["loss"] for r in read_metrics(cfg.metrics)]


@pytest.mark.slow
def test_train_with_the_distributed_optimizer_resumes_exactly_and_at_other_layouts(
    prefix, tmp_path
):
    ckpt = str(tmp_path / "ckpt")
    plain = _config(prefix, tmp_path, "plain", nproc_per_node=2)
    zero = _config(prefix, tmp_path, "zero", nproc_per_node=2, use_distributed_optimizer=True,
                   save=ckpt, save_interval=4)  # fmt: skip
    assert run(plain) == 0 and run(zero) == 0
    assert np.allclose(_losses(plain), _losses(zero), rtol=0, atol=1e-5)
    at4 = ckpt + "/iter_0000004"
    # the checkpoint holds the full AdamW state, as a plain run's does
    _, optim = merge_checkpoint(at4)
    assert {k for e in optim["state"].values() for k in e} == {"step", "exp_avg", "exp_avg_sq"}
    resumed = _config(prefix, tmp_path, "resumed", nproc_per_node=2,
                      use_distributed_optimizer=True, load=at4)  # fmt: skip
    assert run(resumed) == 0
    assert _losses(resumed) == _losses(zero)[4:]  # exact at the same layout
    for name, kw in (("dp1", {}), ("tp2", dict(tensor_model_parallel_size=2))):
        other = _config(prefix, tmp_path, name, load=at4, **kw)
        assert run(other) == 0
        assert np.allclose(_losses(other), _losses(zero)[4:], rtol=0, atol=1e-5), name
