"""mT5 encoder-decoder in plain PyTorch, the HF `MT5ForConditionalGeneration` architecture exactly,
with HF's module names so export is a renaming-free copy:

RMSNorm (weight only, variance in fp32), gated-GELU(tanh) FFN `wo(dropout(gelu(wi_0 x) * wi_1 x))`,
no biases, no 1/sqrt(d_kv) score scaling (folded into the init of q), a relative-position bias table
only in the first self-attention layer of each stack and reused by every layer, cross-attention
without position bias, one token embedding `shared` for encoder and decoder, an UNTIED `lm_head` and
no d_model**-0.5 rescale of the decoder output. The vocabulary is padded to `padded_vocab_size` rows
(Megatron's padding, `common.pad_vocab_size`).

No `torch.distributed` here; shapes use `-1` for the head count so a tensor-parallel rank can hold
only some heads (and only its columns of the relative-bias table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from dataprep.errors import ConfigError, UsageError
from trainer.models.attention import CoreAttention
from trainer.models.common import (
    field_names,
    field_placeholder,
    init_vocab_rows_,
    pad_vocab_size,
    vocab_rows,
)


class MT5LayerNorm(nn.Module):
    """RMSNorm: x * rsqrt(mean(x**2) + eps) * w, no mean subtraction, no bias; statistics in >=
    fp32."""

    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(self.weight.dtype)


def relative_position_bucket(
    relative_position: torch.Tensor, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """T5's bucket of `key_pos - query_pos`: exact for small distances, log-spaced up to
    max_distance.

    Bidirectional: half the buckets for keys after the query. E.g. (32 buckets, 128): -1 -> 1, +1 ->
    17,
    -20 -> 10, -200 -> 15 (the last bucket of the "before" half), +300 -> 31.
    """
    bucket = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket += (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = -torch.clamp(relative_position, max=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # distance >= max_exact: log-spaced over [max_exact, max_distance); clamp(min=1) avoids log(0)
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(
        max_distance / max_exact
    )
    large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    large = torch.clamp(large, max=num_buckets - 1)
    return bucket + torch.where(is_small, distance, large)


class MT5Attention(nn.Module):
    def __init__(self, config: MT5Config, *, has_relative_attention_bias: bool = False) -> None:
        super().__init__()
        inner = config.num_heads * config.d_kv
        self.d_kv = config.d_kv
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        if has_relative_attention_bias:
            # (num_buckets, heads); read by the stack, which computes the bias once for all layers
            self.relative_attention_bias = nn.Embedding(
                config.relative_attention_num_buckets, config.num_heads
            )
        self.core = CoreAttention(config.dropout_rate, causal=False, scale=1.0)

    def forward(
        self, x: torch.Tensor, kv: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, T, d) attends to kv (B, S, d) (kv = x for self-attention); bias broadcasts to
        (B, nh, T, S) and carries the position bias and the additive masks."""
        kv = x if kv is None else kv
        B, T, _ = x.shape
        S = kv.shape[1]
        q = self.q(x).view(B, T, -1, self.d_kv).transpose(1, 2)  # (B, nh, T, d_kv)
        k = self.k(kv).view(B, S, -1, self.d_kv).transpose(1, 2)  # (B, nh, S, d_kv)
        v = self.v(kv).view(B, S, -1, self.d_kv).transpose(1, 2)
        return self.o(self.core(q, k, v, bias))


class MT5DenseGatedActDense(nn.Module):
    def __init__(self, config: MT5Config) -> None:
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x)  # (B, T, d_ff)
        return self.wo(self.dropout(h))


class MT5LayerSelfAttention(nn.Module):
    def __init__(self, config: MT5Config, *, has_relative_attention_bias: bool) -> None:
        super().__init__()
        self.SelfAttention = MT5Attention(
            config, has_relative_attention_bias=has_relative_attention_bias
        )
        self.layer_norm = MT5LayerNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return x + self.dropout(self.SelfAttention(self.layer_norm(x), bias=bias))


class MT5LayerCrossAttention(nn.Module):
    def __init__(self, config: MT5Config) -> None:
        super().__init__()
        self.EncDecAttention = MT5Attention(config)
        self.layer_norm = MT5LayerNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return x + self.dropout(self.EncDecAttention(self.layer_norm(x), kv=kv, bias=bias))


class MT5LayerFF(nn.Module):
    def __init__(self, config: MT5Config) -> None:
        super().__init__()
        self.DenseReluDense = MT5DenseGatedActDense(config)
        self.layer_norm = MT5LayerNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.DenseReluDense(self.layer_norm(x)))


class MT5Block(nn.Module):
    def __init__(self, config: MT5Config, *, is_decoder: bool, has_relative_attention_bias: bool):
        super().__init__()
        self.is_decoder = is_decoder
        layers = [
            MT5LayerSelfAttention(config, has_relative_attention_bias=has_relative_attention_bias)
        ]
        if is_decoder:
            layers.append(MT5LayerCrossAttention(config))
        layers.append(MT5LayerFF(config))
        self.layer = nn.ModuleList(layers)

    def forward(self, x, bias, encoder_hidden=None, cross_bias=None) -> torch.Tensor:
        x = self.layer[0](x, bias)
        if self.is_decoder:
            x = self.layer[1](x, encoder_hidden, cross_bias)
        return self.layer[-1](x)


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, S) with 1 = attend, 0 = padding -> (B, 1, 1, S) additive: 0 or dtype's minimum (as
    HF)."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class MT5Stack(nn.Module):
    def __init__(self, config: MT5Config, *, is_decoder: bool) -> None:
        super().__init__()
        self.config = config
        self.is_decoder = is_decoder
        n = config.num_decoder_layers if is_decoder else config.num_layers
        self.block = nn.ModuleList(
            [
                MT5Block(config, is_decoder=is_decoder, has_relative_attention_bias=(i == 0))
                for i in range(n)
            ]
        )
        self.final_layer_norm = MT5LayerNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)  # of the embedded tokens
        self.final_dropout = nn.Dropout(config.dropout_rate)  # of the output (HF reuses `dropout`)

    def position_bias(self, T: int, S: int, device: torch.device) -> torch.Tensor:
        """(1, nh, T, S) from block 0's table; the decoder's is causal, the encoder's
        bidirectional."""
        table = self.block[0].layer[0].SelfAttention.relative_attention_bias
        rel = torch.arange(S, device=device)[None, :] - torch.arange(T, device=device)[:, None]
        buckets = relative_position_bucket(
            rel,
            bidirectional=not self.is_decoder,
            num_buckets=self.config.relative_attention_num_buckets,
            max_distance=self.config.relative_attention_max_distance,
        )
        return table(buckets).permute(2, 0, 1).unsqueeze(0)  # (T, S, nh) -> (1, nh, T, S)

    def forward(
        self,
        x: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden: torch.Tensor | None = None,
        encoder_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embedded tokens (B, T, d) -> final-normed hidden states (B, T, d)."""
        T = x.shape[1]
        bias = self.position_bias(T, T, x.device).to(x.dtype)
        if self.is_decoder:
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            bias = bias.masked_fill(causal, torch.finfo(x.dtype).min)
        if attention_mask is not None:
            bias = bias + _additive_mask(attention_mask, x.dtype)
        cross_bias = None
        if encoder_mask is not None:
            cross_bias = _additive_mask(encoder_mask, x.dtype)
        x = self.dropout(x)
        for block in self.block:
            x = block(x, bias, encoder_hidden, cross_bias)
        return self.final_dropout(self.final_layer_norm(x))


MT5_PRESETS: dict[str, dict] = {
    # trains in seconds on one CPU core
    "mt5-tiny": dict(d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4),
    # HF google/mt5-small and google/mt5-base
    "mt5-small": dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6),
    "mt5-base": dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12),
    # HF google/mt5-xl (3.7B): 24 + 24 layers of 2048, 32 heads of 64, gated-GELU FFN of 5120
    "mt5-xl": dict(d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32),
}


@dataclass(frozen=True, slots=True)
class MT5Config:
    vocab_size: int = 250100  # tokenizer vocabulary incl. the 100 sentinels 250000..250099
    padded_vocab_size: int = 0  # embedding/head rows; 0 = pad_vocab_size(vocab_size, tp=1) (250112)
    d_model: int = 512
    d_kv: int = 64  # per-head width; inner attention width is num_heads * d_kv
    d_ff: int = 1024
    num_layers: int = 8  # encoder layers
    num_decoder_layers: int = 0  # 0 = num_layers
    num_heads: int = 6
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    pad_token_id: int = 0
    decoder_start_token_id: int = 0
    eos_token_id: int = 1

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"MT5Config.{field_placeholder(name)} must be >= 1, got {getattr(self, name)}",
                    *field_names(name),
                )
        if self.num_decoder_layers == 0:
            object.__setattr__(self, "num_decoder_layers", self.num_layers)
        if self.padded_vocab_size == 0:
            object.__setattr__(self, "padded_vocab_size", pad_vocab_size(self.vocab_size))
        if self.padded_vocab_size < self.vocab_size:
            raise ConfigError(
                f"MT5Config: {{padded_vocab_size}}={self.padded_vocab_size} < "
                f"vocab_size={self.vocab_size}; "
                "use pad_vocab_size(vocab_size, tp) or 0 for the default",
                "padded_vocab_size",
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(
                f"MT5Config.{{dropout_rate}} must be in [0, 1), got {self.dropout_rate}",
                "dropout_rate",
            )

    def tp_dims(self) -> dict[str, int]:
        """The sizes a tensor-parallel size must divide."""
        return {
            "num_heads": self.num_heads,
            "d_ff": self.d_ff,
            "padded_vocab_size": self.padded_vocab_size,
        }

    @classmethod
    def from_preset(cls, name: str, *, tp: int = 1, **overrides) -> MT5Config:
        """A preset with overrides; the vocabulary is padded to a multiple of 128 * tp."""
        if name not in MT5_PRESETS:
            raise UsageError(f"unknown mT5 preset {name!r}; expected one of {sorted(MT5_PRESETS)}")
        fields = {**MT5_PRESETS[name], **overrides}
        if not fields.get("padded_vocab_size"):
            fields["padded_vocab_size"] = pad_vocab_size(fields.get("vocab_size", 250100), tp)
        return cls(**fields)


def shift_right(labels: torch.Tensor, decoder_start: int = 0, ignore: int = -100) -> torch.Tensor:
    """Decoder inputs from labels (HF `_shift_right`): prepend `decoder_start`, drop the last label,
    and replace `ignore` by 0 (pad). E.g. [[5, 6, 1, -100]] -> [[0, 5, 6, 1]]."""
    out = labels.new_full(labels.shape, decoder_start)
    out[..., 1:] = labels[..., :-1]
    return out.masked_fill(out == ignore, 0)


# The untied head: HF's T5 init draws it with std 1.0 (initializer_factor), which with RMSNormed
# decoder states of norm ~sqrt(d_model) gives logits of std ~sqrt(d_model) and a first loss of ~40
# nats for mt5-tiny (ln V = 9.0). Megatron/NeMo initialise every weight with init_method_std 0.02,
# so the first loss is ~ln V; we follow them for the head (README "Training" gives both figures).
LM_HEAD_INIT_STD = 0.02


class MT5(nn.Module):
    def __init__(self, config: MT5Config) -> None:
        super().__init__()
        self.config = config
        self.shared = vocab_rows(nn.Embedding, config.padded_vocab_size, config.d_model)
        self.encoder = MT5Stack(config, is_decoder=False)
        self.decoder = MT5Stack(config, is_decoder=True)
        self.lm_head = vocab_rows(nn.Linear, config.d_model, config.padded_vocab_size, bias=False)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """HF T5 `_init_weights` with initializer_factor 1.0, except the head (LM_HEAD_INIT_STD)."""
        c = self.config
        if isinstance(module, MT5LayerNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, MT5):
            init_vocab_rows_(module.shared.weight, c.vocab_size, std=1.0)
            init_vocab_rows_(module.lm_head.weight, c.vocab_size, std=LM_HEAD_INIT_STD)
        elif isinstance(module, MT5DenseGatedActDense):
            nn.init.normal_(module.wi_0.weight, std=c.d_model**-0.5)
            nn.init.normal_(module.wi_1.weight, std=c.d_model**-0.5)
            nn.init.normal_(module.wo.weight, std=c.d_ff**-0.5)
        elif isinstance(module, MT5Attention):
            nn.init.normal_(module.q.weight, std=(c.d_model * c.d_kv) ** -0.5)
            nn.init.normal_(module.k.weight, std=c.d_model**-0.5)
            nn.init.normal_(module.v.weight, std=c.d_model**-0.5)
            nn.init.normal_(module.o.weight, std=(c.num_heads * c.d_kv) ** -0.5)
            if hasattr(module, "relative_attention_bias"):
                nn.init.normal_(module.relative_attention_bias.weight, std=c.d_model**-0.5)

    def forward(
        self,
        encoder_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        encoder_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """encoder_ids (B, S), decoder_input_ids (B, T), encoder_mask (B, S) 1 = token / 0 = padding
        -> logits (B, T, padded_vocab_size), or this rank's vocab shard under TP."""
        enc = self.encoder(self.shared(encoder_ids), attention_mask=encoder_mask)
        dec = self.decoder(
            self.shared(decoder_input_ids), encoder_hidden=enc, encoder_mask=encoder_mask
        )
        return self.lm_head(dec)

    def num_params(self) -> int:
        """Parameters held by this process (a TP rank holds its shards)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, enc_len: int = 512, dec_len: int = 114) -> float:
        """Training (3 x forward) FLOPs of one (enc_len, dec_len) example divided by enc_len +
        dec_len, so MFU = flops_per_token * (encoder + decoder tokens)/s / peak. Counts every matmul
        (2 FLOPs per multiply-add), attention at full length, the encoder k/v projection in every
        cross-attention."""
        c = self.config
        d, inner, S, T = c.d_model, c.num_heads * c.d_kv, enc_len, dec_len
        ffn = 2 * 3 * d * c.d_ff
        enc_tok = c.num_layers * (2 * 4 * d * inner + ffn + 2 * 2 * S * inner)
        dec_tok = c.num_decoder_layers * (
            2 * 4 * d * inner + 2 * 2 * d * inner + ffn + 2 * 2 * T * inner + 2 * 2 * S * inner
        )
        dec_tok += 2 * d * c.padded_vocab_size
        cross_kv = c.num_decoder_layers * 2 * 2 * d * inner  # per encoder token
        forward = S * (enc_tok + cross_kv) + T * dec_tok
        return 3.0 * forward / (S + T)
