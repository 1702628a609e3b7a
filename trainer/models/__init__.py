"""The trainer's models and the one registry of architectures.

Each architecture is a plain-PyTorch model with its config dataclass and presets (`gpt.py`,
`gptj.py`, `mt5.py`: no `torch.distributed`), its Hugging Face adapter beside it (`*_hf.py`) and
its parallel plans as data (`plans.py`, applied by trainer/parallel/). `ARCHITECTURES` ties them
together; checkpoints, HF / Megatron / NeMo conversion, the memory estimate and the preflight
checks look architectures up here. Each model keeps its config as `model.config`, and every config
stores both the tokenizer vocabulary (`vocab_size`) and the number of embedding rows
(`padded_vocab_size`, Megatron's padding: `common.pad_vocab_size`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dataprep.errors import UsageError
from trainer.models import gpt_hf, gptj_hf, mt5_hf, plans
from trainer.models.gpt import GPT, GPT_PRESETS, GPTConfig
from trainer.models.gptj import GPTJ, GPTJ_PRESETS, GPTJConfig
from trainer.models.hf_adapter import HFAdapter
from trainer.models.mt5 import MT5, MT5_PRESETS, MT5Config

ModelConfig = GPTConfig | GPTJConfig | MT5Config


@dataclass(frozen=True, kw_only=True)
class Architecture:
    name: str  # "gpt", "gptj", "mt5": the "model" key of a --model file
    model_type: str  # "GPT", "GPTJ", "MT5": the "model_type" of checkpoint metadata
    model: type
    config: type
    presets: dict[str, dict]
    task: str  # "gpt" (causal LM on GPT windows) or "mt5" (span corruption, encoder-decoder)
    tp_plan: dict[str, object]  # module-name pattern -> tensor-parallel style (models/plans.py)
    sequence_parallel_plan: dict[str, str] | None  # None = sequence parallelism not implemented
    recompute_units: dict[str, str]  # recompute granularity -> module-name pattern of its unit
    hf: HFAdapter  # weight names and configs in transformers


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            name="gpt",
            model_type="GPT",
            model=GPT,
            config=GPTConfig,
            presets=GPT_PRESETS,
            task="gpt",
            tp_plan=plans.GPT_PLAN,
            sequence_parallel_plan=plans.GPT_SEQUENCE_PARALLEL_PLAN,
            recompute_units=plans.GPT_RECOMPUTE_UNITS,
            hf=gpt_hf.HF,
        ),
        Architecture(
            name="gptj",
            model_type="GPTJ",
            model=GPTJ,
            config=GPTJConfig,
            presets=GPTJ_PRESETS,
            task="gpt",
            tp_plan=plans.GPTJ_PLAN,
            sequence_parallel_plan=plans.GPTJ_SEQUENCE_PARALLEL_PLAN,
            recompute_units=plans.GPTJ_RECOMPUTE_UNITS,
            hf=gptj_hf.HF,
        ),
        Architecture(
            name="mt5",
            model_type="MT5",
            model=MT5,
            config=MT5Config,
            presets=MT5_PRESETS,
            task="mt5",
            tp_plan=plans.MT5_PLAN,
            sequence_parallel_plan=plans.MT5_SEQUENCE_PARALLEL_PLAN,
            recompute_units=plans.MT5_RECOMPUTE_UNITS,
            hf=mt5_hf.HF,
        ),
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


def architecture_of_model_type(model_type: str) -> Architecture | None:
    """The architecture a checkpoint's metadata names ("GPT", "GPTJ", "MT5"), None if none."""
    return next((a for a in ARCHITECTURES.values() if a.model_type == model_type), None)


def architecture_of_hf(model_type: str) -> Architecture | None:
    """The architecture of a transformers `config.model_type` ("gpt2", "gptj", "mt5"), or None."""
    return next((a for a in ARCHITECTURES.values() if a.hf.model_type == model_type), None)


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
    "Architecture",
    "ModelConfig",
    "all_presets",
    "architecture_of",
    "architecture_of_hf",
    "architecture_of_model_type",
    "architecture_of_preset",
    "build_model",
    "config_from_preset",
]
