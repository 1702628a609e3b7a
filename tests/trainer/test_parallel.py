"""Tensor parallelism (trainer/parallel.py): TP=2 over 2 gloo ranks against the plain TP=1 model,
and TP=1 without any process group."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tp_testing import batch, build, gather_shard, run_distributed, train_step

from dataprep.errors import UsageError
from trainer import parallel
from trainer.loss import cross_entropy
from trainer.models.common import pad_vocab_size

# fp32 / fp64 tolerances: loss (relative to max(1, |loss|)); gradient (atol, rtol vs the largest
# entry of that parameter's gradient); parameters after 10 AdamW steps (fp64 only: Adam amplifies
# fp32 noise). Measured fp32: GPT grads <= 5.5e-7 abs; mT5 at HF init (loss ~27, std-1 head) up to
# 3.4e-5 abs = 9e-5 of the largest entry; fp64 both <= 1e-14.
TOLERANCES = {
    torch.float32: (2e-6, (1e-6, 3e-4), None),
    torch.float64: (1e-12, (1e-12, 1e-10), 1e-10),
}


def _tp_equivalence(rank: int, kind: str) -> None:
    group = dist.group.WORLD
    for dtype, (loss_tol, grad_tol, param_tol) in TOLERANCES.items():
        ref = build(kind, dtype=dtype)
        model = parallel.apply_tensor_parallel(build(kind, dtype=dtype), group)
        dims = parallel.shard_dims(model)
        # every TP=2 tensor is a bit-identical chunk of the TP=1 tensor built from the same seed
        for key, value in model.state_dict().items():
            full, d = ref.state_dict()[key], dims[key]
            assert torch.equal(value, full if d is None else full.chunk(2, d)[rank]), key
        assert any(d is not None for d in dims.values())

        opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-3, weight_decay=0.1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        for step in range(10):
            b = batch(kind, step)
            loss_ref, grads_ref = train_step(ref, opt_ref, b)
            loss, grads = train_step(model, opt, b, tp_group=group)
            assert abs(loss - loss_ref) <= loss_tol * max(1.0, abs(loss_ref)), (
                f"{kind} {dtype} step {step}: loss {loss} vs TP=1 {loss_ref}"
            )
            for name, g in grads.items():
                full_g = gather_shard(g, dims[name], group)
                g_ref = grads_ref[name]
                err = (full_g - g_ref).abs().max().item()
                bound = grad_tol[0] + grad_tol[1] * g_ref.abs().max().item()
                assert err <= bound, f"{kind} {dtype} step {step} grad {name}: {err} > {bound}"
        full = parallel.full_state_dict(model, group)
        assert full.keys() == ref.state_dict().keys()
        if param_tol is not None:
            for key, value in ref.state_dict().items():
                assert torch.allclose(full[key], value, rtol=0, atol=param_tol), key

    if kind == "gpt":
        # TP must divide the heads / the padded vocabulary: a clear error before any collective
        with pytest.raises(UsageError, match=r"tensor parallel size 2 does not divide n_head=3"):
            parallel.apply_tensor_parallel(build("gpt", n_head=3, n_embd=48), group)
        with pytest.raises(
            UsageError, match=r"padded_vocab_size=1001.*pad_vocab_size\(1000, tp=2\)"
        ):
            parallel.apply_tensor_parallel(build("gpt", padded_vocab_size=1001), group)
        _dropout_rng(rank, group)


def _dropout_rng(rank: int, group) -> None:
    """Dropout outside TP regions draws the same masks on both ranks (replicated activations stay
    identical); inside attention/MLP each rank has its own generator."""
    model = build("gpt", dropout=0.2, attn_dropout=0.2)
    parallel.apply_tensor_parallel(model, group, dropout_seed=5)
    model.train()
    seen = {}
    model.transformer.ln_f.register_forward_hook(lambda m, a, out: seen.update(h=out.detach()))
    torch.manual_seed(123)
    model(batch("gpt", 0)["inputs"][0])
    hidden = [torch.empty_like(seen["h"]) for _ in range(2)]
    dist.all_gather(hidden, seen["h"], group=group)
    assert torch.equal(hidden[0], hidden[1])
    state = parallel.get_rng_state(model)
    global_states = [torch.empty_like(state["torch"]) for _ in range(2)]
    dist.all_gather(global_states, state["torch"], group=group)
    assert torch.equal(global_states[0], global_states[1])
    tp_states = [torch.empty_like(state["tp"]["cpu"]) for _ in range(2)]
    dist.all_gather(tp_states, state["tp"]["cpu"], group=group)
    assert not torch.equal(tp_states[0], tp_states[1])
    # the per-rank stream advances: a second forward draws other attention masks
    model(batch("gpt", 0)["inputs"][0])
    assert not torch.equal(parallel.get_rng_state(model)["tp"]["cpu"], state["tp"]["cpu"])


@pytest.mark.distributed
@pytest.mark.slow
def test_gpt_tp2_matches_tp1(tmp_path):
    run_distributed(_tp_equivalence, "gpt", tmp_path=tmp_path)


@pytest.mark.distributed
@pytest.mark.slow
def test_gptj_tp2_matches_tp1(tmp_path):
    run_distributed(_tp_equivalence, "gptj", tmp_path=tmp_path)


@pytest.mark.distributed
@pytest.mark.slow
def test_mt5_tp2_matches_tp1(tmp_path):
    run_distributed(_tp_equivalence, "mt5", tmp_path=tmp_path)


# ------------------------------------------------------------------------------------------------
# TP = 1, in this process, no process group


@pytest.mark.parametrize("kind", ["gpt", "gptj", "mt5"])
def test_tp1_runs_without_process_group(kind):
    assert not dist.is_initialized()
    model = build(kind)
    assert parallel.apply_tensor_parallel(model, None) is model
    reference = build(kind)
    b = batch(kind, 0)

    logits = model(*b["inputs"])
    loss = cross_entropy(logits, b["targets"])
    expected = F.cross_entropy(logits.flatten(0, 1), b["targets"].flatten(), ignore_index=-100)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    ref_loss = F.cross_entropy(
        reference(*b["inputs"]).flatten(0, 1), b["targets"].flatten(), ignore_index=-100
    )
    ref_loss.backward()
    norm = parallel.clip_grad_norm_(model.parameters(), 0.1)
    ref_norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.1)
    torch.testing.assert_close(norm, ref_norm)
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)

    full = parallel.full_state_dict(model, None)
    other = build(kind, seed=1)
    parallel.load_full_state_dict(other, full, None)
    for key, value in other.state_dict().items():
        assert torch.equal(value, full[key]), key


def test_cross_entropy_all_ignored_is_zero():
    logits = torch.randn(2, 3, 16, requires_grad=True)
    loss = cross_entropy(logits, torch.full((2, 3), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_shard_dims_follow_the_plans():
    gpt = parallel.shard_dims(build("gpt"))
    assert gpt["transformer.wte.weight"] == 0 and gpt["lm_head.weight"] == 0
    assert gpt["transformer.h.1.attn.q.weight"] == 0 and gpt["transformer.h.1.attn.q.bias"] == 0
    assert gpt["transformer.h.1.attn.c_proj.weight"] == 1
    assert gpt["transformer.h.1.attn.c_proj.bias"] is None
    assert (
        gpt["transformer.h.0.mlp.c_fc.weight"] == 0
        and gpt["transformer.h.0.mlp.c_proj.weight"] == 1
    )
    assert gpt["transformer.wpe.weight"] is None and gpt["transformer.ln_f.weight"] is None
    mt5 = parallel.shard_dims(build("mt5"))
    assert mt5["shared.weight"] == 0 and mt5["lm_head.weight"] == 0
    assert mt5["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] == 1
    assert mt5["decoder.block.1.layer.1.EncDecAttention.k.weight"] == 0
    assert mt5["decoder.block.1.layer.1.EncDecAttention.o.weight"] == 1
    assert mt5["encoder.block.1.layer.1.DenseReluDense.wi_1.weight"] == 0
    assert mt5["decoder.block.1.layer.2.DenseReluDense.wo.weight"] == 1
    assert mt5["encoder.final_layer_norm.weight"] is None
    sharded = {k for k, d in mt5.items() if d is not None}
    assert len(sharded) == 2 + 2 + 2 * (4 + 3) + 2 * (4 + 4 + 3)  # vocab, tables, enc, dec


def test_check_tensor_parallel_names_the_fields():
    with pytest.raises(
        UsageError, match=r"size 3 does not divide n_head=4, .*padded_vocab_size=1024"
    ):
        parallel.check_tensor_parallel(build("gpt"), 3)
    with pytest.raises(UsageError, match=r"does not divide d_ff=130"):
        parallel.check_tensor_parallel(build("mt5", d_ff=130), 4)
    parallel.check_tensor_parallel(build("mt5"), 4)  # 4 heads, d_ff 128, 1024 rows: fine


@pytest.mark.parametrize(
    ("vocab", "expected"),
    [(50257, [50304, 50432, 50688, 51200]), (250100, [250112, 250112, 250368, 250880])],
)
def test_pad_vocab_size_megatron_rule(vocab, expected):
    # values from Megatron-LM's _vocab_size_with_padding (megatron/training/tokenizer)
    assert [pad_vocab_size(vocab, tp) for tp in (1, 2, 4, 8)] == expected
