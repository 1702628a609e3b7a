"""Megatron's packed-data flags in training (--eod-mask-loss, --reset-position-ids,
--reset-attention-mask): a document inside a packed window gets the logits it gets alone, the
loss skips the targets after an EOD, and a run with the flags gives the same losses at TP=2 as at
TP=1 (and other losses than without them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.trainer.trainer_fixtures import markov_docs, write_dataset
from trainer.models import build_model
from trainer.models.gpt import GPTConfig
from trainer.train import TrainConfig, run
from trainer.training.batches import PackedData, collate_gpt
from trainer.training.metrics import read_metrics

EOD = 99


def test_a_document_in_a_packed_window_gets_its_lone_logits():
    torch.manual_seed(0)
    model = build_model(GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=100,
                                  dropout=0.0, attn_dropout=0.0)).eval()  # fmt: skip
    docs = [list(range(3, 13)), list(range(20, 27)), list(range(40, 55))]
    window = np.array(docs[0] + [EOD] + docs[1] + [EOD] + docs[2] + [7])  # seq_length + 1 ids
    batch = collate_gpt([window], PackedData(EOD, True, True, True))
    with torch.no_grad():
        packed = model(batch.tokens, position_ids=batch.position_ids, segments=batch.segments)
        start = 0
        for doc in docs:
            n = len(doc) + 1 if doc is not docs[-1] else len(doc)  # the EOD input is the doc's
            alone = model(batch.tokens[:, start : start + n])
            assert (packed[0, start : start + n] - alone[0]).abs().max() < 1e-5
            start += n
        plain = model(batch.tokens)  # without the flags the later documents see the earlier
    assert (plain[0, 12:] - packed[0, 12:]).abs().max() > 1e-3
    # --eod-mask-loss: no loss on the target that follows an EOD input
    assert batch.loss_mask[0].tolist() == [0.0 if t == EOD else 1.0 for t in window[:-1]]
    targets = batch.targets()[0]
    assert (targets[batch.tokens[0] == EOD] == -100).all()
    assert batch.position_ids[0].tolist()[: len(docs[0]) + 2] == [*range(len(docs[0]) + 1), 0]


@pytest.fixture(scope="module")
def packed_prefix(tmp_path_factory):
    d = tmp_path_factory.mktemp("packed")
    docs = markov_docs(200, vocab=EOD, length=(5, 30), seed=3, eod=EOD)  # short: many per window
    return write_dataset(d / "p_text_document", docs, vocab_size=100, eos_id=EOD)


def _losses(prefix, tmp_path, name, **kw) -> list[float]:
    cfg = TrainConfig(data_path=(prefix,), model=str(_model(tmp_path)), seq_length=48,
                      micro_batch_size=2, train_iters=6, lr=3e-3, num_threads=1, progress=False,
                      hidden_dropout=0.0, attention_dropout=0.0, seed=7,
                      metrics=str(tmp_path / f"{name}.jsonl"), **kw)  # fmt: skip
    assert run(cfg) == 0
    return [r["loss"] for r in read_metrics(tmp_path / f"{name}.jsonl")]


def _model(tmp_path):
    import json

    path = tmp_path / "gpt.json"
    path.write_text(json.dumps({"preset": "gpt-tiny", "vocab_size": 100, "block_size": 64}))
    return path


@pytest.mark.slow
@pytest.mark.distributed
def test_packed_training_is_the_same_at_tp2_and_differs_from_plain(packed_prefix, tmp_path):
    flags = dict(eod_mask_loss=True, reset_position_ids=True, reset_attention_mask=True)
    tp1 = _losses(packed_prefix, tmp_path, "tp1", **flags)
    tp2 = _losses(packed_prefix, tmp_path, "tp2", tensor_model_parallel_size=2, **flags)
    plain = _losses(packed_prefix, tmp_path, "plain")
    assert np.allclose(tp1, tp2, rtol=0, atol=1e-5), (tp1, tp2)
    assert abs(tp1[0] - plain[0]) > 1e-4
