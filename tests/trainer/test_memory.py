"""The memory estimate of `train --dry-run` (trainer/training/memory.py; measure_peak in
memory_measure.py): its activation terms against the bytes autograd really saves, its total against
the measured peak RSS of CPU training steps, the memory flags (recompute, sequence parallelism, the
distributed optimizer) measured and as relations, and the dry-run CLI."""

from __future__ import annotations

import contextlib
import dataclasses
import re

import numpy as np
import pytest
import torch

from dataprep.cli import main
from tests.trainer.tp_testing import saved_tensor_bytes
from trainer.loss import cross_entropy
from trainer.models import build_model, config_from_preset
from trainer.models.gpt import GPTConfig
from trainer.models.gptj import GPTJConfig
from trainer.models.mt5 import MT5Config, shift_right
from trainer.parallel import shard_dims
from trainer.training.memory import (
    GB,
    MemoryInputs,
    estimate_memory,
    parameter_counts,
)
from trainer.training.memory_measure import measure_peak

V = 1000


def _saved_bytes(model, inputs, targets, *, bf16: bool) -> int:
    """Bytes of the unique non-parameter storages autograd saves for the backward of one step."""
    ac = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step():
        with ac:
            logits = model(*inputs)
        cross_entropy(logits.float(), targets, vocab_size=model.config.vocab_size)

    return saved_tensor_bytes(model, step)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("kind", ["gpt", "gptj", "mt5"])
def test_activation_terms_match_what_autograd_saves(kind, dropout, bf16):
    torch.manual_seed(0)
    B, T, C, dec = 2, 64, 128, 0
    if kind == "mt5":
        mc = MT5Config(d_model=C, d_kv=32, d_ff=256, num_layers=3, num_heads=4, vocab_size=V,
                       dropout_rate=dropout)  # fmt: skip
        dec = 16
        enc, labels = torch.randint(2, V, (B, T)), torch.randint(2, V, (B, dec))
        inputs, targets = (enc, shift_right(labels), torch.ones_like(enc)), labels
    else:
        cls = GPTConfig if kind == "gpt" else GPTJConfig
        extra = {} if kind == "gpt" else {"rotary_dim": 8}
        mc = cls(n_layer=3, n_head=4, n_embd=C, block_size=T, vocab_size=V, dropout=dropout,
                 attn_dropout=dropout, **extra)  # fmt: skip
        ids = torch.randint(0, V, (B, T + 1))
        inputs, targets = (ids[:, :-1],), ids[:, 1:]
    model = build_model(mc).train()
    got = _saved_bytes(model, inputs, targets, bf16=bf16)
    e = estimate_memory(MemoryInputs(mc, B, T, dec, bf16=bf16))
    # saved: everything but the logits themselves (held by the loop, not by autograd) and the
    # fp32 copy .float() makes under bf16 (alive only while the loss runs): the softmax buffer
    softmax = B * (dec or T) * mc.padded_vocab_size * 4
    est = e.layer_activations + e.weight_copies + softmax
    tolerance = 0.08 if kind == "gptj" else 0.02  # GPT-J's rotary is modelled roughly
    assert est == pytest.approx(got, rel=tolerance)


def _gpt(**kw) -> GPTConfig:
    return GPTConfig(n_layer=4, n_head=4, n_embd=256, block_size=256, vocab_size=8000, **kw)


MEASURED = {
    # GPT, 4 x 256, seq 256, micro batch 8, dropout 0.1 (the math attention path)
    "gpt-fp32": MemoryInputs(_gpt(), 8, 256),
    # the same without dropout (fused attention), bf16 autocast
    "gpt-bf16": MemoryInputs(_gpt(dropout=0.0, attn_dropout=0.0), 8, 256, bf16=True),
    "mt5-fp32": MemoryInputs(
        MT5Config(
            d_model=256,
            d_kv=32,
            d_ff=512,
            num_layers=3,
            num_heads=8,
            vocab_size=8000,
            dropout_rate=0.0,
        ),  # fmt: skip
        8,
        256,
        64,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MEASURED))
def test_estimate_is_within_20_percent_of_the_measured_peak(name):
    x = MEASURED[name]
    measured = measure_peak(x, steps=2)
    estimated = estimate_memory(x).total
    assert estimated == pytest.approx(measured, rel=0.2), (name, estimated, measured)


@pytest.mark.slow
@pytest.mark.distributed
def test_estimate_is_within_20_percent_of_the_measured_peak_at_tp2():
    mc = dataclasses.replace(_gpt(dropout=0.0, attn_dropout=0.0), padded_vocab_size=8192)
    x = MemoryInputs(mc, 8, 256, tensor_model_parallel_size=2)
    measured = measure_peak(x, steps=2)
    estimated = estimate_memory(x).total
    assert estimated == pytest.approx(measured, rel=0.2), (estimated, measured)


def test_flag_relations():
    mc = config_from_preset("gpt-350m", tp=2)
    base = dict(micro_batch_size=4, seq_length=1024, tensor_model_parallel_size=2)
    none = estimate_memory(MemoryInputs(mc, **base))
    sel = estimate_memory(MemoryInputs(mc, **base, recompute_granularity="selective"))
    full = estimate_memory(MemoryInputs(mc, **base, recompute_granularity="full"))
    assert full.layer_activations < sel.layer_activations < none.layer_activations
    # selective drops exactly the attention core's probabilities and fp32 q/k/v copies
    sp = estimate_memory(MemoryInputs(mc, **base, sequence_parallel=True))
    assert sp.layer_activations < none.layer_activations
    assert sp.weights == none.weights and sp.logits == none.logits
    dist_opt = estimate_memory(
        MemoryInputs(mc, **base, data_parallel_size=4, use_distributed_optimizer=True)
    )
    assert dist_opt.optimizer * 4 == none.optimizer
    assert dist_opt.weights == none.weights and dist_opt.gradients == none.gradients
    bf16 = estimate_memory(MemoryInputs(mc, **base, bf16=True))
    assert bf16.weights == none.weights and bf16.weight_copies > 0
    tp1 = estimate_memory(MemoryInputs(config_from_preset("gpt-350m"), 4, 1024))
    sharded, replicated = parameter_counts(config_from_preset("gpt-350m"))
    assert tp1.parameters_per_rank == sharded + replicated
    assert none.parameters_per_rank < tp1.parameters_per_rank


def _meta_counts(config, tp: int) -> tuple[int, int]:
    """(all parameters, parameters on one TP rank) of the model built on the meta device, split by
    trainer/models/plans.py's own shard plan."""
    with torch.device("meta"):
        model = build_model(config)
    dims = shard_dims(model)
    total = per_rank = 0
    for name, p in model.named_parameters():  # tied weights once
        total += p.numel()
        per_rank += p.numel() // tp if dims[name] is not None else p.numel()
    return total, per_rank


def _dry_run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["train", *argv, "--dry-run"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _gib(out: str, row: str) -> float:
    return float(
        re.search(rf"^\s+{re.escape(row)}.*?\s([\d,]+\.\d\d)$", out, re.M)[1].replace(",", "")
    )


@pytest.mark.parametrize(
    "argv, preset, tp",
    [(["--model", "gpt-1.3b"], "gpt-1.3b", 1),
     (["--model", "mt5-xl", "--tensor-model-parallel-size", "2"], "mt5-xl", 2)],
)  # fmt: skip
def test_dry_run_prints_the_model_and_its_bytes(capsys, argv, preset, tp):
    code, out, _ = _dry_run(capsys, *argv)
    total, per_rank = _meta_counts(config_from_preset(preset, tp=tp), tp)
    assert f"parameters: {total:,} " in out and f"{per_rank:,} on each rank" in out
    assert f"TP={tp} x DP=1" in out
    weights, grads, optim = (_gib(out, r) for r in ("weights", "gradients", "AdamW states"))
    assert weights == pytest.approx(4 * per_rank / GB, abs=0.01)
    assert grads == weights and optim == pytest.approx(2 * weights, abs=0.01)
    parts = sum(_gib(out, r) for r in ("blocks,", "logits", "weight copies"))
    assert _gib(out, "activations") == pytest.approx(parts, abs=0.02)
    total_gib = _gib(out, "total")
    assert total_gib == pytest.approx(weights + grads + optim + _gib(out, "activations"), abs=0.03)
    assert out.strip().splitlines()[-1].startswith("fits" if total_gib <= 80 else "does not fit")
    assert code == (0 if total_gib <= 80 else 1)
    if preset == "gpt-1.3b":  # 1.3B: 24 x 2048 blocks, the 50304-row tied embedding, 2048 positions
        assert 1.31e9 < total < 1.32e9 and "sequence length 2048" in out
    else:  # HF google/mt5-xl is 3.7B; TP 2 halves all but its RMSNorm weights
        assert 3.7e9 < total < 3.8e9 and "encoder length 512, decoder length 114" in out


def test_dry_run_verdict_and_flags(capsys, tmp_path):
    code, out, _ = _dry_run(capsys, "--model", "gpt-tiny", "--gpu-memory", "0.001")
    assert code == 1 and out.strip().splitlines()[-1].startswith("does not fit: ")
    code, out, _ = _dry_run(capsys, "--model", "gpt-tiny", "--bf16", "--recompute-granularity",
                         "full", "--nproc-per-node", "4", "--tensor-model-parallel-size", "2",
                         "--sequence-parallel", "--use-distributed-optimizer")  # fmt: skip
    assert code == 0 and "TP=2 x DP=2 = 4 rank(s)" in out
    assert "bf16 autocast, recompute full, sequence parallel on, distributed optimizer on" in out


def test_dry_run_errors_are_one_line(capsys):
    assert main(["train", "--model", "gpt-tiny"]) == 2  # no --data-path without --dry-run
    assert "--data-path is required (except with --dry-run)" in capsys.readouterr().err
    for argv, message in (
        (["--gpu-memory", "0"], "--gpu-memory must be > 0"),
        (["--tensor-model-parallel-size", "3"], "does not divide"),
        (["--nproc-per-node", "3", "--tensor-model-parallel-size", "2"], "not divisible"),
        (
            [
                "--model",
                "mt5-tiny",
                "--tensor-model-parallel-size",
                "2",
                "--sequence-parallel",
                "--encoder-seq-length",
                "128",
            ],
            "--decoder-seq-length 29 is not a multiple of 2 (the span-corruption targets' length);"
            " pass --decoder-seq-length 30",
        ),
    ):
        code, _, err = _dry_run(capsys, "--model", "gpt-tiny", *argv)
        assert code == 2 and message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


def test_dry_run_takes_the_vocabulary_of_the_dataset(capsys, tmp_path):
    from tests.trainer.trainer_fixtures import write_dataset

    prefix = tmp_path / "d_text_document"
    write_dataset(prefix, [np.array([1, 2, 3, 4] * 50)], vocab_size=5000)
    code, out, _ = _dry_run(capsys, "--data-path", str(prefix), "--model", "gpt-tiny")
    assert code == 0 and "padded vocabulary 5,120 rows" in out
    assert not list(tmp_path.glob("**/cache"))  # no sample index was built


# the memory flags, measured: GPT 4 x 256, micro batch 8 x 256, dropout 0.1 (the math attention)
_FLAGGED = GPTConfig(n_layer=4, n_head=8, n_embd=256, block_size=256, vocab_size=8000,
                     dropout=0.1, attn_dropout=0.1)  # fmt: skip


@pytest.mark.slow
def test_recompute_lowers_the_measured_peak_and_the_estimate_follows():
    measured, estimated = {}, {}
    for granularity in (None, "selective", "full"):
        x = MemoryInputs(_FLAGGED, 8, 256, recompute_granularity=granularity)
        measured[granularity] = measure_peak(x, steps=2)
        estimated[granularity] = estimate_memory(x).total
    assert measured["full"] < measured["selective"] < 0.8 * measured[None], measured
    for g in measured:
        assert estimated[g] == pytest.approx(measured[g], rel=0.2), (g, estimated, measured)


@pytest.mark.slow
@pytest.mark.distributed
def test_sequence_parallel_and_the_distributed_optimizer_measured():
    mc2 = dataclasses.replace(_FLAGGED, padded_vocab_size=8192)
    mt5 = MT5Config(d_model=256, d_kv=32, d_ff=512, num_layers=3, num_heads=8, vocab_size=8000,
                    padded_vocab_size=8192, dropout_rate=0.1)  # fmt: skip
    runs = {
        "tp2": MemoryInputs(mc2, 8, 256, tensor_model_parallel_size=2),
        "tp2 sp": MemoryInputs(mc2, 8, 256, tensor_model_parallel_size=2, sequence_parallel=True),
        "mt5 tp2": MemoryInputs(mt5, 8, 256, 64, tensor_model_parallel_size=2),
        "mt5 tp2 sp": MemoryInputs(mt5, 8, 256, 64, tensor_model_parallel_size=2,
                                   sequence_parallel=True),
        "dp2": MemoryInputs(_FLAGGED, 8, 256, data_parallel_size=2),
        "dp2 zero": MemoryInputs(_FLAGGED, 8, 256, data_parallel_size=2,
                                 use_distributed_optimizer=True),
    }  # fmt: skip
    measured = {k: measure_peak(x, steps=2) for k, x in runs.items()}
    estimated = {k: estimate_memory(x) for k, x in runs.items()}
    assert measured["tp2 sp"] < measured["tp2"], measured
    assert measured["mt5 tp2 sp"] < measured["mt5 tp2"], measured
    # the moments: 8 bytes per parameter, half of them per rank at DP=2
    saved = measured["dp2"] - measured["dp2 zero"]
    moments = estimated["dp2"].optimizer - estimated["dp2 zero"].optimizer
    assert moments == pytest.approx(estimated["dp2"].optimizer / 2, rel=0.01)
    assert saved == pytest.approx(moments, rel=0.35), (saved, moments)
    for k in runs:
        assert estimated[k].total == pytest.approx(measured[k], rel=0.2), (k, estimated, measured)
