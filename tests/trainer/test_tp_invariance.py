"""One model whatever the TP size: with the default padding (128 x TP rows) TP=1, 2 and 4 give the
same per-step losses, and a checkpoint saved at one TP resumes at another with the losses of the
uninterrupted run. The vocabularies are chosen so that the default padding differs at every TP size
(GPT 1100 -> 1152 / 1280 / 1536 rows; mt5-toy 8000 -> 8064 / 8192 / 8192)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from trainer_fixtures import markov_docs, write_dataset, write_mt5_dataset

from trainer.models import build_model
from trainer.models.common import pad_vocab_size
from trainer.models.gpt import GPTConfig
from trainer.models.mt5 import MT5Config
from trainer.train import TrainConfig, run
from trainer.training.metrics import read_metrics

GPT_VOCAB = 1100
TOL = 1e-5

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


@pytest.fixture(scope="module")
def gpt_prefix(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt_inv")
    docs = markov_docs(120, vocab=100, seed=5)  # ids < 100 of 1100: learnable in 10 steps
    return write_dataset(d / "gpt_text_document", docs, vocab_size=GPT_VOCAB)


@pytest.fixture(scope="module")
def mt5_prefix(tmp_path_factory):
    return write_mt5_dataset(tmp_path_factory.mktemp("mt5_inv") / "mc4_text_document", seed=6)


def _config(prefix, out, kind, **kw) -> TrainConfig:
    base = dict(
        data_path=(prefix,),
        train_iters=10,
        lr=1e-3,  # a stable run: a loss spike would amplify fp32 round-off past 1e-5
        lr_warmup_iters=2,
        micro_batch_size=2,
        global_batch_size=4,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        seed=7,
        num_threads=1,
        progress=False,
        metrics=str(out / "metrics.jsonl"),
    )
    if kind == "gpt":
        base.update(model="gpt-tiny", seq_length=32)
    else:
        base.update(model="mt5-tiny", encoder_seq_length=32)
    base.update(kw)
    return TrainConfig(**base)


def _losses(config: TrainConfig) -> np.ndarray:
    assert run(config) == 0
    return np.array([r["loss"] for r in read_metrics(config.metrics)])


def test_default_padding_differs_per_tp_but_not_the_initialisation():
    assert [pad_vocab_size(GPT_VOCAB, tp) for tp in (1, 2, 4)] == [1152, 1280, 1536]
    models = []
    for rows in (1152, 1536):
        torch.manual_seed(0)
        models.append(
            build_model(
                GPTConfig(
                    n_layer=1,
                    n_head=2,
                    n_embd=16,
                    block_size=8,
                    vocab_size=GPT_VOCAB,
                    padded_vocab_size=rows,
                )
            )
        )
    a, b = (dict(m.named_parameters()) for m in models)
    assert torch.equal(
        a["transformer.wte.weight"][:GPT_VOCAB], b["transformer.wte.weight"][:GPT_VOCAB]
    )
    assert torch.count_nonzero(b["transformer.wte.weight"][GPT_VOCAB:]) == 0
    for name in a:  # every later parameter too: the padding draws no random numbers
        if name != "transformer.wte.weight":
            assert torch.equal(a[name], b[name]), name
    for rows in (8064, 8192):
        torch.manual_seed(0)
        m = build_model(
            MT5Config(
                d_model=16,
                d_kv=8,
                d_ff=32,
                num_layers=1,
                num_heads=2,
                vocab_size=8000,
                padded_vocab_size=rows,
            )
        )
        assert torch.count_nonzero(m.lm_head.weight[8000:]) == 0
        assert torch.count_nonzero(m.shared.weight[8000:]) == 0


def test_gpt_tp1_tp2_tp4_same_losses_and_checkpoints_resume_at_any_tp(gpt_prefix, tmp_path):
    ckpt = tmp_path / "ckpt2"
    runs = {}
    for tp in (1, 2, 4):
        extra = dict(save=str(ckpt), save_interval=5) if tp == 2 else {}
        runs[tp] = _losses(
            _config(gpt_prefix, tmp_path / f"tp{tp}", "gpt", tensor_model_parallel_size=tp, **extra)
        )
    assert len(runs[1]) == 10
    assert runs[1][-1] < runs[1][0] - 0.5  # it learns: the comparison is not between constants
    for tp in (2, 4):
        assert np.abs(runs[tp] - runs[1]).max() <= TOL, (tp, np.abs(runs[tp] - runs[1]).max())
    at5 = str(ckpt / "iter_0000005")
    for tp in (1, 4):  # a TP=2 checkpoint resumed at TP=1 and TP=4
        resumed = _losses(
            _config(gpt_prefix, tmp_path / f"r{tp}", "gpt", tensor_model_parallel_size=tp, load=at5)
        )
        assert len(resumed) == 5
        assert np.abs(resumed - runs[2][5:]).max() <= TOL, (tp, resumed, runs[2][5:])


def test_mt5_tp1_tp2_tp4_same_losses_and_tp1_checkpoint_resumes_at_tp2(mt5_prefix, tmp_path):
    ckpt = tmp_path / "ckpt1"
    runs = {}
    for tp in (1, 2, 4):
        extra = dict(save=str(ckpt), save_interval=5) if tp == 1 else {}
        runs[tp] = _losses(
            _config(mt5_prefix, tmp_path / f"tp{tp}", "mt5", tensor_model_parallel_size=tp, **extra)
        )
    assert runs[1][-1] < runs[1][0] - 0.5
    for tp in (2, 4):
        assert np.abs(runs[tp] - runs[1]).max() <= TOL, (tp, np.abs(runs[tp] - runs[1]).max())
    resumed = _losses(
        _config(
            mt5_prefix,
            tmp_path / "r2",
            "mt5",
            tensor_model_parallel_size=2,
            load=str(ckpt / "iter_0000005"),
        )
    )
    assert np.abs(resumed - runs[1][5:]).max() <= TOL, (resumed, runs[1][5:])


def test_mt5_first_loss_is_near_ln_v(mt5_prefix, tmp_path):
    losses = _losses(_config(mt5_prefix, tmp_path, "mt5", train_iters=1))
    assert abs(losses[0] - np.log(8000)) < 1.0, losses[0]  # HF's std-1 head gave ~40 nats


def test_gptj_tp2_equals_tp1_and_resumes_across_tp(gpt_prefix, tmp_path):
    ckpt = tmp_path / "ckptj"
    tp1 = _losses(_config(gpt_prefix, tmp_path / "j1", "gpt", model="gptj-tiny",
                          save=str(ckpt), save_interval=5))  # fmt: skip
    tp2 = _losses(_config(gpt_prefix, tmp_path / "j2", "gpt", model="gptj-tiny",
                          tensor_model_parallel_size=2))  # fmt: skip
    assert tp1[-1] < tp1[0] - 0.5
    assert np.abs(tp2 - tp1).max() <= TOL, np.abs(tp2 - tp1).max()
    at5 = str(ckpt / "iter_0000005")
    resumed = _losses(_config(gpt_prefix, tmp_path / "jr", "gpt", model="gptj-tiny",
                              tensor_model_parallel_size=2, load=at5))  # fmt: skip
    assert np.abs(resumed - tp1[5:]).max() <= TOL
