"""Hugging Face conversion of any of our models, through its architecture's `HFAdapter`.

    GPT  <-> GPT2LMHeadModel              q, k, v -> one Conv1D c_attn; every Linear -> Conv1D
    GPTJ <-> GPTJForCausalLM              the same names, nn.Linear on both sides
    MT5  <-> MT5ForConditionalGeneration  the same names; encoder/decoder embed_tokens = shared

The tables are beside each model (trainer/models/{gpt,gptj,mt5}_hf.py). Export cuts the padded
vocabulary rows to the tokenizer's size and import zero-pads them back.
"""

from __future__ import annotations

from typing import Any

import torch

from dataprep.errors import DataprepError
from trainer.models import ARCHITECTURES, architecture_of, architecture_of_hf

SUPPORTED = ", ".join(f"{a.hf.model_type} ({a.hf.hf_class})" for a in ARCHITECTURES.values())


def to_hf_state_dict(sd: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """A full (TP=1) state dict of ours -> HF keys and shapes, vocabulary cut to `vocab_size`."""
    return architecture_of(config).hf.to_hf(sd, config)


def from_hf_state_dict(hf: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """HF keys and shapes -> a full (TP=1) state dict of ours, vocabulary zero-padded to
    `padded_vocab_size`; the inverse of `to_hf_state_dict`."""
    return architecture_of(config).hf.from_hf(hf, config)


def hf_config(config: Any, *, eos_id: int | None = None, pad_id: int | None = None):
    """The transformers config object matching one of our model configs."""
    return architecture_of(config).hf.to_hf_config(config, eos_id=eos_id, pad_id=pad_id)


def config_from_hf(hf: Any) -> Any:
    """One of our model configs from a transformers config (gpt2, gptj, mt5)."""
    arch = architecture_of_hf(hf.model_type)
    if arch is None:
        raise DataprepError(f"unsupported HF model_type {hf.model_type!r}; supported: {SUPPORTED}")
    return arch.hf.from_hf_config(hf)


def build_hf_model(config: Any, sd: dict[str, torch.Tensor], **ids: int | None):
    """The transformers model for one of our configs, loaded from our full state dict."""
    import transformers

    adapter = architecture_of(config).hf
    model = getattr(transformers, adapter.hf_class)(hf_config(config, **ids))
    missing, unexpected = model.load_state_dict(to_hf_state_dict(sd, config), strict=False)
    # buffers HF rebuilds itself (GPT-J's rotary table) are not in our state dict
    rebuilt = ("embed_positions", "attn.bias", "masked_bias")
    missing = [k for k in missing if not k.endswith(rebuilt)]
    if missing or unexpected:
        raise RuntimeError(f"HF mapping out of date: missing {missing}, unexpected {unexpected}")
    return model.eval()
