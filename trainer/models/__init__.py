"""Plain-PyTorch models for the trainer: GPT-2 (`gpt.py`) and HF-shaped mT5 (`mt5.py`).

Models never import `torch.distributed`; `trainer/parallel.py` shards them. Each model keeps its
config as `model.config`, and every config stores both the tokenizer vocabulary (`vocab_size`) and
the number of embedding rows (`padded_vocab_size`, Megatron's padding rule below,
reference/formats.md §5).
"""

from __future__ import annotations

from dataprep.errors import UsageError


def pad_vocab_size(vocab_size: int, tp: int = 1, divisible_by: int = 128) -> int:
    """Megatron's `_vocab_size_with_padding`: round up to a multiple of `divisible_by * tp`.

    Example: GPT-2 50257 -> 50304 (tp 1), 50432 (tp 2); mT5 250100 -> 250112 (tp 1 and 2), 250368
    (tp 4).
    """
    if vocab_size < 1 or tp < 1 or divisible_by < 1:
        raise UsageError(
            f"pad_vocab_size needs positive numbers, got vocab_size={vocab_size}, tp={tp}, "
            f"divisible_by={divisible_by}"
        )
    multiple = divisible_by * tp
    return -(-vocab_size // multiple) * multiple


# The model modules import pad_vocab_size from here, so they are imported after it is defined.
from trainer.models.gpt import GPT, GPT_PRESETS, GPTConfig  # noqa: E402
from trainer.models.mt5 import MT5, MT5_PRESETS, MT5Config, shift_right  # noqa: E402

ModelConfig = GPTConfig | MT5Config


def config_from_preset(name: str, *, tp: int = 1, **overrides) -> GPTConfig | MT5Config:
    """A config from a preset name (`gpt-tiny`, `gpt-125m`, ..., `mt5-small`), vocab padded for
    `tp`."""
    if name in GPT_PRESETS:
        return GPTConfig.from_preset(name, tp=tp, **overrides)
    if name in MT5_PRESETS:
        return MT5Config.from_preset(name, tp=tp, **overrides)
    raise UsageError(
        f"unknown model preset {name!r}; expected one of "
        f"{sorted(GPT_PRESETS) + sorted(MT5_PRESETS)}"
    )


def build_model(config: GPTConfig | MT5Config):
    """The (unsharded, freshly initialised) model for a config. Seed torch first for
    reproducibility."""
    if isinstance(config, GPTConfig):
        return GPT(config)
    if isinstance(config, MT5Config):
        return MT5(config)
    raise TypeError(f"build_model expects a GPTConfig or MT5Config, got {type(config).__name__}")


__all__ = [
    "GPT",
    "GPTConfig",
    "GPT_PRESETS",
    "MT5",
    "MT5Config",
    "MT5_PRESETS",
    "ModelConfig",
    "build_model",
    "config_from_preset",
    "pad_vocab_size",
    "shift_right",
]
