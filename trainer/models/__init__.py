"""Plain-PyTorch models for the trainer: GPT-2 (`gpt.py`), GPT-J (`gptj.py`), mT5 (`mt5.py`).

Models never import `torch.distributed`; `trainer/parallel.py` shards them. Each model keeps its
config as `model.config`, and every config stores both the tokenizer vocabulary (`vocab_size`) and
the number of embedding rows (`padded_vocab_size`, Megatron's padding rule below,
reference/formats.md §5).
"""

from __future__ import annotations

from dataclasses import dataclass

from dataprep.errors import UsageError
from trainer.models.common import init_vocab_rows_, pad_vocab_size, vocab_rows  # noqa: E402,F401

# The model modules import pad_vocab_size from here, so they are imported after it is defined.
from trainer.models.gpt import GPT, GPT_PRESETS, GPTConfig  # noqa: E402
from trainer.models.gptj import GPTJ, GPTJ_PRESETS, GPTJConfig  # noqa: E402
from trainer.models.mt5 import MT5, MT5_PRESETS, MT5Config, shift_right  # noqa: E402

ModelConfig = GPTConfig | GPTJConfig | MT5Config


@dataclass(frozen=True)
class Architecture:
    name: str  # "gpt", "gptj", "mt5": the "model" key of a --model file, checkpoint metadata
    model: type
    config: type
    presets: dict[str, dict]
    task: str  # "gpt" (causal LM on GPT windows) or "mt5" (span corruption, encoder-decoder)


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("gpt", GPT, GPTConfig, GPT_PRESETS, "gpt"),
        Architecture("gptj", GPTJ, GPTJConfig, GPTJ_PRESETS, "gpt"),
        Architecture("mt5", MT5, MT5Config, MT5_PRESETS, "mt5"),
    )
}
ARCHITECTURE_ALIASES = {"gpt2": "gpt", "gpt-j": "gptj", "t5": "mt5"}


def architecture_of(obj) -> Architecture:
    """The architecture of a model, a config, their class, or a name / alias."""
    if isinstance(obj, str):
        name = ARCHITECTURE_ALIASES.get(obj.lower(), obj.lower())
        if name not in ARCHITECTURES:
            raise UsageError(
                f"unknown model architecture {obj!r}; expected one of {sorted(ARCHITECTURES)}"
            )
        return ARCHITECTURES[name]
    cls = obj if isinstance(obj, type) else type(obj)
    for a in ARCHITECTURES.values():
        if issubclass(cls, (a.model, a.config)):
            return a
    raise TypeError(f"{cls.__name__} is not one of the trainer's models or configs")


def architecture_of_preset(name: str) -> Architecture | None:
    return next((a for a in ARCHITECTURES.values() if name in a.presets), None)


def all_presets() -> list[str]:
    return sorted(p for a in ARCHITECTURES.values() for p in a.presets)


def config_from_preset(name: str, *, tp: int = 1, **overrides) -> ModelConfig:
    """A config from a preset name (`gpt-tiny`, `gptj-tiny`, `mt5-small`, ...), vocab padded for
    `tp`."""
    arch = architecture_of_preset(name)
    if arch is None:
        raise UsageError(f"unknown model preset {name!r}; expected one of {all_presets()}")
    return arch.config.from_preset(name, tp=tp, **overrides)


def build_model(config: ModelConfig):
    """The (unsharded, freshly initialised) model for a config. Seed torch first for
    reproducibility."""
    return architecture_of(config).model(config)


__all__ = [
    "ARCHITECTURES",
    "GPT",
    "GPTConfig",
    "GPTJ",
    "GPTJConfig",
    "GPTJ_PRESETS",
    "GPT_PRESETS",
    "MT5",
    "MT5Config",
    "MT5_PRESETS",
    "ModelConfig",
    "all_presets",
    "architecture_of",
    "architecture_of_preset",
    "build_model",
    "config_from_preset",
    "init_vocab_rows_",
    "pad_vocab_size",
    "shift_right",
    "vocab_rows",
]
