"""GPT-2 decoder in plain PyTorch, nanoGPT-style, top down: attention -> MLP -> Block ->
GPTConfig -> GPT.

Architecture = HF `GPT2LMHeadModel`: learned positions, pre-LayerNorm blocks, tanh-GELU MLP (4x),
attention scaled by 1/sqrt(head_dim), causal, input and output embeddings tied. Differences that do
not change the function: q/k/v are three Linear layers (HF fuses them into one Conv1D `c_attn`;
the HF adapter in `gpt_hf.py` concatenates them) and the vocabulary is padded to
`padded_vocab_size` rows (Megatron's stored shape). The padded rows start at zero and their logits
are left out of the loss (`trainer.loss.cross_entropy(..., vocab_size=)`), so they stay zero and
the model computes the same function whatever the padding, hence whatever the TP size.

No `torch.distributed` here: `trainer/parallel/` shards the named Linear/Embedding layers. Every
shape below uses `-1` for the head count, so the same code runs on a rank that holds only some
heads.
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


def cached_attention(q, k, v, cache: dict) -> torch.Tensor:
    """Causal attention of T new positions over the cached ones plus themselves; updates `cache`
    ({"k", "v"}: (B, nh, P, hs), absent before the first call). Returns (B, T, nh * hs)."""
    if "k" in cache:
        k = torch.cat([cache["k"], k], dim=2)
        v = torch.cat([cache["v"], v], dim=2)
    cache["k"], cache["v"] = k, v
    T, S = q.shape[2], k.shape[2]
    if T == S:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    elif T == 1:  # one new position sees every key
        y = F.scaled_dot_product_attention(q, k, v)
    else:  # new position i (absolute S - T + i) sees keys 0 .. S - T + i
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return y.transpose(1, 2).reshape(q.shape[0], T, -1)


def past_length(cache: list[dict] | None) -> int:
    """Positions already held by a KV cache (0 for None or an empty one)."""
    if not cache or "k" not in cache[0]:
        return 0
    return cache[0]["k"].shape[2]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        C = config.n_embd
        self.head_dim = C // config.n_head
        self.q = nn.Linear(C, C, bias=config.bias)
        self.k = nn.Linear(C, C, bias=config.bias)
        self.v = nn.Linear(C, C, bias=config.bias)
        self.c_proj = nn.Linear(C, C, bias=config.bias)
        self.core = CoreAttention(config.attn_dropout, causal=True)

    def forward(
        self, x: torch.Tensor, cache: dict | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`mask` (B, 1, T, T) bool, True = may attend (causal and within a document), for
        packed windows (Megatron's --reset-attention-mask); None = plain causal."""
        B, T, _ = x.shape
        # q, k, v in one matmul over their stacked weights (as HF's c_attn, nanoGPT's): one GEMM
        # of 3C outputs beats three of C on CPU. Under TP each holds this rank's heads, in order.
        w = torch.cat([self.q.weight, self.k.weight, self.v.weight])
        b = None if self.q.bias is None else torch.cat([self.q.bias, self.k.bias, self.v.bias])
        q, k, v = F.linear(x, w, b).split(self.q.weight.shape[0], dim=-1)
        # (B, nh, T, hs); nh = the heads held by this module (all of them unless tensor-parallel)
        q = q.view(B, T, -1, self.head_dim).transpose(1, 2)
        k = k.view(B, T, -1, self.head_dim).transpose(1, 2)
        v = v.view(B, T, -1, self.head_dim).transpose(1, 2)
        if cache is not None:  # inference (trainer/inference/generate.py): earlier keys/values
            return self.c_proj(cached_attention(q, k, v, cache))
        return self.c_proj(self.core(q, k, v, mask))  # (B, T, nh * hs) -> (B, T, C)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # HF "gelu_new"


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.mlp = MLP(config)
        # Residual dropout lives here, outside attn/mlp, because under tensor parallelism attn and
        # mlp are the regions with a per-rank RNG and this dropout must be the same on every rank.
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, cache: dict | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if cache is None:
            x = x + self.drop(self.attn(self.ln_1(x), mask=mask))
        else:
            x = x + self.drop(self.attn(self.ln_1(x), cache=cache))
        x = x + self.drop(self.mlp(self.ln_2(x)))
        return x


GPT_PRESETS: dict[str, dict] = {
    # trains in seconds on one CPU core
    "gpt-tiny": dict(n_layer=2, n_head=4, n_embd=128, block_size=256),
    # GPT-2 small / medium, Megatron's 1.3B (24 x 2048, 16 heads of 128)
    "gpt-125m": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
    "gpt-350m": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024),
    "gpt-1.3b": dict(n_layer=24, n_head=16, n_embd=2048, block_size=2048),
}


@dataclass(frozen=True, slots=True)
class GPTConfig:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024  # longest sequence (HF n_positions): rows of the position table
    vocab_size: int = 50257  # tokenizer vocabulary; every target id is < vocab_size
    padded_vocab_size: int = 0  # embedding/head rows; 0 = pad_vocab_size(vocab_size, tp=1)
    dropout: float = 0.1  # residual and embedding dropout (Megatron hidden_dropout)
    attn_dropout: float = 0.1  # on the attention probabilities
    layer_norm_epsilon: float = 1e-5
    bias: bool = True  # biases in Linear and LayerNorm (GPT-2: True)

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"GPTConfig.{field_placeholder(name)} must be >= 1, got {getattr(self, name)}",
                    *field_names(name),
                )
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"GPTConfig: {{n_embd}}={self.n_embd} is not divisible by "
                f"{{n_head}}={self.n_head}; choose n_embd = n_head * head_dim",
                "n_embd",
                "n_head",
            )
        if self.padded_vocab_size == 0:
            object.__setattr__(self, "padded_vocab_size", pad_vocab_size(self.vocab_size))
        if self.padded_vocab_size < self.vocab_size:
            raise ConfigError(
                f"GPTConfig: {{padded_vocab_size}}={self.padded_vocab_size} < "
                f"vocab_size={self.vocab_size}; "
                "use pad_vocab_size(vocab_size, tp) or 0 for the default",
                "padded_vocab_size",
            )
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(
                    f"GPTConfig.{{{name}}} must be in [0, 1), got {getattr(self, name)}", name
                )

    def tp_dims(self) -> dict[str, int]:
        """The sizes a tensor-parallel size must divide."""
        return {
            "n_head": self.n_head,
            "4 * n_embd (MLP width)": 4 * self.n_embd,
            "padded_vocab_size": self.padded_vocab_size,
        }

    @classmethod
    def from_preset(cls, name: str, *, tp: int = 1, **overrides) -> GPTConfig:
        """A preset with overrides; the vocabulary is padded to a multiple of 128 * tp."""
        if name not in GPT_PRESETS:
            raise UsageError(f"unknown GPT preset {name!r}; expected one of {sorted(GPT_PRESETS)}")
        fields = {**GPT_PRESETS[name], **overrides}
        if not fields.get("padded_vocab_size"):
            fields["padded_vocab_size"] = pad_vocab_size(fields.get("vocab_size", 50257), tp)
        return cls(**fields)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        C = config.n_embd
        self.transformer = nn.ModuleDict(
            dict(
                wte=vocab_rows(nn.Embedding, config.padded_vocab_size, C),
                wpe=nn.Embedding(config.block_size, C),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(C, eps=config.layer_norm_epsilon, bias=config.bias),
            )
        )
        self.lm_head = vocab_rows(nn.Linear, C, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as GPT-2

        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) (two residual adds per block)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if module is self.lm_head:
            return  # tied: initialised as transformer.wte
        if module is self.transformer.wte:
            init_vocab_rows_(module.weight, self.config.vocab_size, std=0.02)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self,
        idx: torch.Tensor,
        cache: list[dict] | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, padded_vocab_size), or this rank's vocab shard under
        TP. `cache` (inference only): one dict per layer, `[{} for _ in range(n_layer)]` at first;
        idx then holds only the positions after the cached ones, and the cache is extended.
        Packed windows (training): `position_ids` (B, T) instead of 0..T-1 (Megatron's
        --reset-position-ids); `segments` (B, T) document numbers, attention only within one
        (--reset-attention-mask), through SDPA with a block-diagonal causal mask."""
        B, T = idx.shape
        P = past_length(cache)
        if P + T > self.config.block_size:
            raise ValueError(
                f"sequence length {P + T} exceeds block_size={self.config.block_size}; "
                "shorten the sequences or build the model with a larger block_size"
            )
        if position_ids is not None:
            pos = position_ids
        else:
            pos = torch.arange(P, P + T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(
            self.transformer.wte(idx) + self.transformer.wpe(pos)
        )  # (B, T, C)
        mask = None
        if segments is not None:
            causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
            mask = (segments[:, :, None] == segments[:, None, :]) & causal  # (B, T, T)
            mask = mask[:, None]  # (B, 1, T, T): the same for every head
        for i, block in enumerate(self.transformer.h):
            x = block(x, mask=mask) if cache is None else block(x, cache=cache[i])
        x = self.transformer.ln_f(x)
        return self.lm_head(x)

    def num_params(self, *, non_embedding: bool = False) -> int:
        """Parameters held by this process (a TP rank holds its shards), tied weights counted
        once."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel() + self.transformer.wte.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training (forward + backward = 3 x forward) FLOPs per token of the full, unsharded model.

        6 * (matmul parameters: blocks + LM head) + 12 * n_layer * n_embd * seq_len for attention
        scores and values (the PaLM / nanoGPT estimate). MFU = flops_per_token * tokens/s / peak.
        """
        c = self.config
        T = c.block_size if seq_len is None else seq_len
        per_layer = 4 * c.n_embd * c.n_embd + 2 * 4 * c.n_embd * c.n_embd  # q,k,v,o + fc,proj
        matmul_params = c.n_layer * per_layer + c.padded_vocab_size * c.n_embd
        return 6.0 * matmul_params + 12.0 * c.n_layer * c.n_embd * T
