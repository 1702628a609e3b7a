"""GPT-J decoder in plain PyTorch, the architecture of HF `GPTJForCausalLM`, top
down: rotary -> attention -> MLP -> Block -> GPTJConfig -> GPTJ.

Differences from GPT-2 (trainer/models/gpt.py): no position table; rotary position embeddings on the
first `rotary_dim` dims of every head, GPT-J's interleaved convention (dims 2i and 2i+1 form one
rotating pair, frequency 10000^(-2i/rotary_dim)); attention and MLP run in parallel from ONE
LayerNorm, `x + attn(ln_1(x)) + mlp(ln_1(x))`; q/k/v/out projections without bias; an untied
`lm_head` with bias. The vocabulary is padded as in gpt.py (zero rows, outside the loss).

No `torch.distributed` here: trainer/parallel/ shards q/k/v/fc_in by columns, out_proj/fc_out by
rows and lm_head by vocabulary rows; shapes use `-1` for the head count so a rank may hold only some
heads (rotary acts on each head alone).
"""

from __future__ import annotations

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
from trainer.models.gpt import cached_attention, past_length


def rotary_sin_cos(T: int, rotary_dim: int, *, offset: int = 0, device=None):
    """sin, cos of shape (T, rotary_dim), each frequency repeated for its pair of dims (HF GPT-J's
    `create_sinusoidal_positions` + `repeat_interleave`): position p, pair i -> p * 10000^(-2i/r).
    `offset` is the position of the first row (a KV-cached decoding step)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rotary_dim, 2, device=device) / rotary_dim))
    pos = torch.arange(offset, offset + T, device=device).float()
    angles = pos[:, None] * inv_freq[None, :]  # (T, r/2)
    return (
        angles.sin().repeat_interleave(2, dim=-1),
        angles.cos().repeat_interleave(2, dim=-1),
    )


def apply_rotary(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate every pair (x[2i], x[2i+1]) of the last dim of x (..., T, r) by its angle."""
    x1, x2 = x[..., ::2], x[..., 1::2]
    rotated = torch.stack((-x2, x1), dim=-1).flatten(-2)  # (-x1, x0, -x3, x2, ...)
    return x * cos + rotated * sin


class GPTJAttention(nn.Module):
    def __init__(self, config: GPTJConfig) -> None:
        super().__init__()
        C = config.n_embd
        self.head_dim = C // config.n_head
        self.rotary_dim = config.rotary_dim
        self.q_proj = nn.Linear(C, C, bias=False)
        self.k_proj = nn.Linear(C, C, bias=False)
        self.v_proj = nn.Linear(C, C, bias=False)
        self.out_proj = nn.Linear(C, C, bias=False)
        self.core = CoreAttention(config.attn_dropout, causal=True)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        r = self.rotary_dim
        offset = 0 if cache is None else past_length([cache])
        sin, cos = rotary_sin_cos(T, r, offset=offset, device=x.device)
        sin, cos = sin.to(q.dtype), cos.to(q.dtype)
        q = torch.cat([apply_rotary(q[..., :r], sin, cos), q[..., r:]], dim=-1)
        k = torch.cat([apply_rotary(k[..., :r], sin, cos), k[..., r:]], dim=-1)
        if cache is not None:  # inference (trainer/inference/generate.py): earlier keys/values
            return self.out_proj(cached_attention(q, k, v, cache))
        return self.out_proj(self.core(q, k, v))


class GPTJMLP(nn.Module):
    def __init__(self, config: GPTJConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(config.n_embd, config.n_inner)
        self.fc_out = nn.Linear(config.n_inner, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x), approximate="tanh"))  # HF "gelu_new"


class GPTJBlock(nn.Module):
    def __init__(self, config: GPTJConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPTJAttention(config)
        self.mlp = GPTJMLP(config)
        self.drop = nn.Dropout(config.dropout)  # residual dropout, outside the TP regions (gpt.py)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        h = self.ln_1(x)
        a = self.attn(h) if cache is None else self.attn(h, cache=cache)
        return x + self.drop(a) + self.drop(self.mlp(h))


GPTJ_PRESETS: dict[str, dict] = {
    # trains in seconds on one CPU core; rotary on a quarter of each head, as GPT-J-6B (64 of 256)
    "gptj-tiny": dict(n_layer=2, n_head=4, n_embd=128, rotary_dim=8, block_size=256),
    # Palmyra-small-sized (128M): 12 x 768, 12 heads of 64, rotary on all 64, 2048 positions
    "gptj-125m": dict(n_layer=12, n_head=12, n_embd=768, rotary_dim=64, block_size=2048),
    # EleutherAI GPT-J-6B: 28 x 4096, 16 heads of 256, rotary on 64
    "gptj-6b": dict(n_layer=28, n_head=16, n_embd=4096, rotary_dim=64, block_size=2048),
}


@dataclass(frozen=True, slots=True)
class GPTJConfig:
    n_layer: int = 28
    n_head: int = 16
    n_embd: int = 4096
    rotary_dim: int = 64  # dims of each head that rotate (even, <= head_dim); HF rotary_dim
    block_size: int = 2048  # longest sequence (HF n_positions); no table depends on it
    n_inner: int = 0  # MLP width; 0 = 4 * n_embd
    vocab_size: int = 50257  # tokenizer vocabulary; every target id is < vocab_size
    padded_vocab_size: int = 0  # embedding/head rows; 0 = pad_vocab_size(vocab_size, tp=1)
    dropout: float = 0.0  # residual and embedding dropout (HF resid_pdrop / embd_pdrop)
    attn_dropout: float = 0.0  # on the attention probabilities (HF attn_pdrop)
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "rotary_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"GPTJConfig.{field_placeholder(name)} must be >= 1, got {getattr(self, name)}",
                    *field_names(name),
                )
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"GPTJConfig: {{n_embd}}={self.n_embd} is not divisible by "
                f"{{n_head}}={self.n_head}; choose n_embd = n_head * head_dim",
                "n_embd",
                "n_head",
            )
        head_dim = self.n_embd // self.n_head
        if self.rotary_dim % 2 or self.rotary_dim > head_dim:
            raise ConfigError(
                f"GPTJConfig: {{rotary_dim}}={self.rotary_dim} must be even and at most the head "
                f"dimension {head_dim}",
                "rotary_dim",
            )
        if self.n_inner == 0:
            object.__setattr__(self, "n_inner", 4 * self.n_embd)
        if self.padded_vocab_size == 0:
            object.__setattr__(self, "padded_vocab_size", pad_vocab_size(self.vocab_size))
        if self.padded_vocab_size < self.vocab_size:
            raise ConfigError(
                f"GPTJConfig: {{padded_vocab_size}}={self.padded_vocab_size} < "
                f"vocab_size={self.vocab_size}; use pad_vocab_size(vocab_size, tp) or 0",
                "padded_vocab_size",
            )
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(
                    f"GPTJConfig.{{{name}}} must be in [0, 1), got {getattr(self, name)}", name
                )

    def tp_dims(self) -> dict[str, int]:
        """The sizes a tensor-parallel size must divide."""
        return {
            "n_head": self.n_head,
            "n_inner (MLP width)": self.n_inner,
            "padded_vocab_size": self.padded_vocab_size,
        }

    @classmethod
    def from_preset(cls, name: str, *, tp: int = 1, **overrides) -> GPTJConfig:
        """A preset with overrides; the vocabulary is padded to a multiple of 128 * tp."""
        if name not in GPTJ_PRESETS:
            raise UsageError(
                f"unknown GPT-J preset {name!r}; expected one of {sorted(GPTJ_PRESETS)}"
            )
        fields = {**GPTJ_PRESETS[name], **overrides}
        if not fields.get("padded_vocab_size"):
            fields["padded_vocab_size"] = pad_vocab_size(fields.get("vocab_size", 50257), tp)
        return cls(**fields)


class GPTJ(nn.Module):
    def __init__(self, config: GPTJConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=vocab_rows(nn.Embedding, config.padded_vocab_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([GPTJBlock(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
            )
        )
        self.lm_head = vocab_rows(nn.Linear, config.n_embd, config.padded_vocab_size)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """HF GPT-J: normal(0, 0.02) weights (initializer_range), zero biases, unit LayerNorms."""
        if module is self.transformer.wte:
            init_vocab_rows_(module.weight, self.config.vocab_size, std=0.02)
        elif module is self.lm_head:
            init_vocab_rows_(module.weight, self.config.vocab_size, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, cache: list[dict] | None = None) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, padded_vocab_size), or this rank's vocab shard.
        `cache`: a KV cache as in gpt.py GPT.forward (inference only)."""
        T = idx.shape[1] + past_length(cache)
        if T > self.config.block_size:
            raise ValueError(
                f"sequence length {T} exceeds block_size={self.config.block_size}; "
                "shorten the sequences or build the model with a larger block_size"
            )
        x = self.transformer.drop(self.transformer.wte(idx))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x) if cache is None else block(x, cache=cache[i])
        return self.lm_head(self.transformer.ln_f(x))

    def num_params(self, *, non_embedding: bool = False) -> int:
        """Parameters held by this process (a TP rank holds its shards)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token of the full model: 6 x matmul params + attention (gpt.py)."""
        c = self.config
        T = c.block_size if seq_len is None else seq_len
        per_layer = 4 * c.n_embd * c.n_embd + 2 * c.n_embd * c.n_inner
        matmul_params = c.n_layer * per_layer + c.padded_vocab_size * c.n_embd
        return 6.0 * matmul_params + 12.0 * c.n_layer * c.n_embd * T
