"""GPT and mT5 (trainer/models): the same function as HF GPT2LMHeadModel /
MT5ForConditionalGeneration (built from configs, no download) after export_hf, inits, configs, FLOP
counts."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from tp_testing import batch, build

from dataprep.errors import UsageError
from trainer.checkpoint.hf import build_hf_model
from trainer.models import build_model, config_from_preset
from trainer.models.gpt import GPT, GPTConfig
from trainer.models.mt5 import MT5, MT5Config, relative_position_bucket, shift_right

transformers = pytest.importorskip("transformers")
logging.getLogger("transformers").setLevel(logging.ERROR)


def _hf_gpt2(model: GPT):
    hf = build_hf_model(model.config, model.state_dict())
    assert type(hf).__name__ == "GPT2LMHeadModel"
    return hf


def _hf_mt5(model: MT5):
    hf = build_hf_model(model.config, model.state_dict())
    # transformers 5.x forces tie_word_embeddings=True in MT5Config (lm_head = shared); mT5 has an
    # untied head (HF mT5's tie_word_embeddings=False)
    assert hf.lm_head.weight is not hf.shared.weight
    return hf


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 2e-5), (torch.float64, 1e-10)])
def test_gpt_matches_hf_gpt2(dtype, atol):
    model = build("gpt", dtype=dtype).eval()
    hf = _hf_gpt2(model).to(dtype)
    ids = batch("gpt", 0)["inputs"][0]
    with torch.no_grad():
        ours = model(ids)
        theirs = hf(input_ids=ids).logits
    V = model.config.vocab_size
    assert ours.shape[-1] == model.config.padded_vocab_size and theirs.shape[-1] == V
    torch.testing.assert_close(ours[..., :V], theirs, rtol=0, atol=atol)


# HF mT5 computes the RMSNorm variance and the softmax in fp32 even for fp64 inputs, so fp64 agrees
# only to fp32 round-off (measured 1.6e-7 of the largest logit)
@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-5), (torch.float64, 1e-6)])
def test_mt5_matches_hf_mt5(dtype, atol):
    model = build("mt5", dtype=dtype).eval()
    hf = _hf_mt5(model).to(dtype)
    b = batch("mt5", 0)
    enc, dec, mask = b["inputs"]
    labels = b["targets"]
    assert torch.equal(dec, hf._shift_right(labels))
    with torch.no_grad():
        ours = model(enc, dec, mask)
        out = hf(input_ids=enc, attention_mask=mask, decoder_input_ids=dec, labels=labels)
    # the export cuts the padded rows (1024 -> the tokenizer's 1000); they take no part in our loss
    V = model.config.vocab_size
    assert out.logits.shape == (*ours.shape[:2], V)
    ours = ours[..., :V]
    torch.testing.assert_close(ours, out.logits, rtol=0, atol=atol * ours.abs().max().item())
    loss = torch.nn.functional.cross_entropy(
        ours.flatten(0, 1), labels.flatten(), ignore_index=-100
    )
    torch.testing.assert_close(loss, out.loss, rtol=1e-6, atol=0)


def test_relative_position_bucket_matches_hf():
    hf_bucket = transformers.models.mt5.modeling_mt5.MT5Attention._relative_position_bucket
    rel = torch.arange(-300, 301)[None, :]
    for bidirectional in (True, False):
        ours = relative_position_bucket(
            rel, bidirectional=bidirectional, num_buckets=32, max_distance=128
        )
        assert torch.equal(ours, hf_bucket(rel, bidirectional=bidirectional))


def test_shift_right_golden():
    labels = torch.tensor([[5, 6, 1, -100], [7, 1, -100, -100]])
    assert shift_right(labels).tolist() == [[0, 5, 6, 1], [0, 7, 1, 0]]


def test_gpt_init_follows_gpt2():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=64, vocab_size=4000))
    h = model.transformer.h[3]
    assert model.lm_head.weight is model.transformer.wte.weight
    assert abs(h.attn.q.weight.std().item() - 0.02) < 0.001
    assert abs(h.mlp.c_proj.weight.std().item() - 0.02 / 4) < 0.0003  # 1/sqrt(2 * 8) = 1/4
    assert abs(h.attn.c_proj.weight.std().item() - 0.02 / 4) < 0.0003
    assert torch.count_nonzero(h.attn.q.bias) == 0 and torch.all(h.ln_1.weight == 1)


def test_mt5_init_follows_hf_t5_except_the_head():
    torch.manual_seed(0)
    c = MT5Config(d_model=256, d_kv=32, d_ff=512, num_layers=2, num_heads=8, vocab_size=4000)
    model = MT5(c)
    att = model.encoder.block[1].layer[0].SelfAttention
    ff = model.decoder.block[0].layer[2].DenseReluDense
    expected = {
        att.q.weight: (256 * 32) ** -0.5,
        att.k.weight: 256**-0.5,
        att.o.weight: (8 * 32) ** -0.5,
        ff.wi_0.weight: 256**-0.5,
        ff.wo.weight: 512**-0.5,
        model.shared.weight[:4000]: 1.0,
        model.lm_head.weight[:4000]: 0.02,  # Megatron's init_method_std, not HF's 1.0
    }
    for w, std in expected.items():
        assert abs(w.std().item() / std - 1) < 0.05
    assert torch.count_nonzero(model.lm_head.weight[4000:]) == 0  # padded rows
    assert torch.count_nonzero(model.shared.weight[4000:]) == 0
    assert model.lm_head.weight is not model.shared.weight
    assert not hasattr(model.encoder.block[1].layer[0].SelfAttention, "relative_attention_bias")
    assert model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.shape == (
        32,
        8,
    )


def test_presets_and_vocab_padding():
    assert config_from_preset("gpt-125m").padded_vocab_size == 50304
    assert config_from_preset("gpt-125m", tp=2).padded_vocab_size == 50432
    assert config_from_preset("mt5-small", tp=2).padded_vocab_size == 250112
    assert config_from_preset("mt5-base").num_decoder_layers == 12
    xl = config_from_preset("mt5-xl")  # HF google/mt5-xl: 24 + 24 layers of 2048, 32 heads of 64
    assert (xl.d_model, xl.d_ff, xl.d_kv, xl.num_heads, xl.num_decoder_layers) == (
        2048, 5120, 64, 32, 24,
    ) and xl.padded_vocab_size == 250112  # fmt: skip
    tiny = build_model(config_from_preset("gpt-tiny", vocab_size=500))
    assert isinstance(tiny, GPT) and tiny.transformer.wte.weight.shape == (512, 128)
    with pytest.raises(UsageError, match="unknown model preset 'gpt-7b'"):
        config_from_preset("gpt-7b")
    with pytest.raises(UsageError, match="n_embd=100 is not divisible by n_head=3"):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(UsageError, match="padded_vocab_size=10 < vocab_size=1000"):
        MT5Config(vocab_size=1000, padded_vocab_size=10)


def test_gpt_sequence_longer_than_block_size_is_an_error():
    with pytest.raises(ValueError, match="sequence length 33 exceeds block_size=32"):
        build("gpt")(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("kind", ["gpt", "mt5"])
def test_flops_per_token_counts_every_matmul(kind):
    model = build(kind).eval()
    b = batch(kind, 0)
    # the math SDPA backend runs attention as matmuls, which the counter sees (CPU flash does not)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*b["inputs"])
    measured = 3 * counter.get_total_flops()  # training = forward + backward (2x)
    if kind == "gpt":
        B, T = b["inputs"][0].shape
        expected = model.flops_per_token(T) * B * T
    else:
        (B, S), T = b["inputs"][0].shape, b["inputs"][1].shape[1]
        expected = model.flops_per_token(S, T) * B * (S + T)
    assert measured == pytest.approx(expected, rel=1e-9)
