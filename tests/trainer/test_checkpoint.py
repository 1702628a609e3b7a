"""Checkpoints (trainer/checkpoint/store.py): same-TP exact resume, TP=1 <-> TP=2 resharding with
optimizer state, clear errors for checkpoints that do not fit the model."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
import torch.distributed as dist
from tp_testing import batch, build, gather_shard, run_distributed, train_step

from dataprep.errors import DataprepError
from trainer import checkpoint, parallel


def _adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)


def _gathered_logits(model, kind, step, group):
    with torch.no_grad():
        return gather_shard(model(*batch(kind, step)["inputs"]), -1, group)


def _reshard(rank: int, root: str) -> None:
    group = dist.group.WORLD
    for kind in ("gpt", "mt5"):
        # TP=1 reference: 2 steps, saved (both ranks hold the same model: a TP=1 x DP=2 layout)
        ref = build(kind, dtype=torch.float64)
        opt_ref = _adamw(ref)
        for step in range(2):
            train_step(ref, opt_ref, batch(kind, step))
        tp1 = checkpoint.save_checkpoint(
            f"{root}/{kind}_tp1", ref, opt_ref, step=2, extra={"rank": rank}, dp_rank=rank
        )
        with torch.no_grad():
            ref_logits = ref(*batch(kind, 9)["inputs"])
        ref_loss, _ = train_step(ref, opt_ref, batch(kind, 2))

        # TP=1 checkpoint -> TP=2 model (other seed, so loading must overwrite everything)
        model = parallel.apply_tensor_parallel(build(kind, seed=7, dtype=torch.float64), group)
        opt = _adamw(model)
        extra = checkpoint.load_checkpoint(tp1, model, opt, tp_group=group)
        assert extra == {"rank": 0}
        torch.testing.assert_close(_gathered_logits(model, kind, 9, group), ref_logits)
        loss, _ = train_step(model, opt, batch(kind, 2), tp_group=group)  # Adam state resharded
        assert abs(loss - ref_loss) < 1e-12
        torch.testing.assert_close(
            _gathered_logits(model, kind, 9, group),
            ref(*batch(kind, 9)["inputs"]).detach(),
            rtol=0,
            atol=1e-10,
        )

        # TP=2 checkpoint: same-TP reload is bit-exact, extras are per rank
        tp2 = checkpoint.save_checkpoint(
            f"{root}/{kind}_tp2", model, opt, step=3, extra={"tp_rank": rank}, tp_group=group
        )
        assert checkpoint.find_latest(f"{root}/{kind}_tp2") == str(tp2)
        again = parallel.apply_tensor_parallel(build(kind, seed=8, dtype=torch.float64), group)
        opt_again = _adamw(again)
        assert checkpoint.load_checkpoint(tp2, again, opt_again, tp_group=group) == {
            "tp_rank": rank
        }
        for (name, p), q in zip(model.named_parameters(), again.parameters(), strict=True):
            assert torch.equal(p, q), name
            for k, v in opt.state[p].items():
                assert torch.equal(v, opt_again.state[q][k]), (name, k)

        # TP=2 checkpoint -> TP=1 model: merged offline, equal to the online all-gather
        merged, _ = checkpoint.merge_checkpoint(tp2)
        full = parallel.full_state_dict(model, group)
        assert all(torch.equal(merged[k], full[k]) for k in full)
        plain = build(kind, seed=9, dtype=torch.float64)
        opt_plain = _adamw(plain)
        checkpoint.load_checkpoint(tp2, plain, opt_plain)
        with torch.no_grad():
            torch.testing.assert_close(
                plain(*batch(kind, 9)["inputs"]), _gathered_logits(model, kind, 9, group)
            )
        loss_plain, _ = train_step(plain, opt_plain, batch(kind, 3))
        loss_tp2, _ = train_step(model, opt, batch(kind, 3), tp_group=group)
        assert abs(loss_plain - loss_tp2) < 1e-12
        dist.barrier()


@pytest.mark.distributed
@pytest.mark.slow
def test_reshard_tp1_tp2_with_optimizer_state(tmp_path):
    run_distributed(_reshard, str(tmp_path), tmp_path=tmp_path)


# ------------------------------------------------------------------------------------------------
# single process


@pytest.fixture
def saved_gpt(tmp_path):
    model = build("gpt")
    opt = _adamw(model)
    train_step(model, opt, batch("gpt", 0))
    path = checkpoint.save_checkpoint(tmp_path / "ckpt", model, opt, step=1, extra={"step": 1})
    return model, opt, path


def test_round_trip_without_process_group(saved_gpt, tmp_path):
    model, opt, path = saved_gpt
    assert path.name == "iter_0000001" and (path.parent / "latest").read_text().strip() == path.name
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    meta = checkpoint.read_metadata(path)
    assert meta["tp"] == 1 and meta["extra"] == {"step": 1} and meta["model_type"] == "GPT"
    assert meta["shard_dims"]["transformer.h.0.attn.c_proj.weight"] == 1
    assert checkpoint.load_config(path) == model.config
    other = build("gpt", seed=3)
    other_opt = _adamw(other)
    assert checkpoint.load_checkpoint(path, other, other_opt) == {"step": 1}
    for p, q in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(p, q)
    b = batch("gpt", 1)
    assert train_step(model, opt, b)[0] == train_step(other, other_opt, b)[0]
    # dropout may differ when resuming
    checkpoint.load_checkpoint(path, build("gpt", dropout=0.1))


def test_checkpoint_that_does_not_fit_is_a_clear_error(saved_gpt, tmp_path):
    _, _, path = saved_gpt
    with pytest.raises(DataprepError, match=r"n_layer=2 \(checkpoint\) vs 3 \(this model\)"):
        checkpoint.load_checkpoint(path, build("gpt", n_layer=3))
    with pytest.raises(DataprepError, match="holds a GPT model but this model is a MT5"):
        checkpoint.load_checkpoint(path, build("mt5"))
    with pytest.raises(DataprepError, match="not a checkpoint directory"):
        checkpoint.load_checkpoint(tmp_path, build("gpt"))
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    (broken / "model_tp00.pt").unlink()
    with pytest.raises(DataprepError, match="missing model_tp00.pt"):
        checkpoint.load_checkpoint(broken, build("gpt"))
    meta = json.loads((broken / "metadata.json").read_text())
    (broken / "metadata.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(DataprepError, match="version 99, expected"):
        checkpoint.read_metadata(broken)
    model = build("gpt")
    grouped = torch.optim.AdamW([{"params": [model.transformer.wpe.weight]}, {"params": []}])
    with pytest.raises(DataprepError, match="parameter groups differ"):
        checkpoint.load_checkpoint(path, model, grouped)


def test_other_vocab_padding_keeps_real_rows(saved_gpt, caplog):
    model, _, path = saved_gpt
    wider = build("gpt", padded_vocab_size=1152)
    with caplog.at_level(logging.INFO, logger="trainer.checkpoint"):
        checkpoint.load_checkpoint(path, wider, _adamw(wider))
    assert "padded vocabulary 1024 -> 1152" in caplog.text
    w = wider.transformer.wte.weight
    assert (
        torch.equal(w[:1024], model.transformer.wte.weight) and torch.count_nonzero(w[1024:]) == 0
    )
    ids = batch("gpt", 0)["inputs"][0]
    with torch.no_grad():
        torch.testing.assert_close(wider(ids)[..., :1024], model(ids))
