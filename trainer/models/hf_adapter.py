"""How a model's weights are named and shaped in `transformers`: the `HFAdapter` each architecture
holds (its rules are in trainer/models/{gpt,gptj,mt5}_hf.py, beside the model).

An adapter is one table of rules read in both directions (torchtitan's `state_dict_adapter.py`):
`to_hf` maps a full (TP=1) state dict of ours to HF keys and shapes, cutting the padded vocabulary
rows to the tokenizer's size; `from_hf` is its inverse and zero-pads them back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from dataprep.errors import DataprepError

# How a tensor changes on the way to HF (and back):
COPY = "copy"  # the same tensor
VOCAB = "vocab"  # dim 0 is the vocabulary: padded rows cut on export, zero rows added on import
CONV1D = "conv1d"  # nn.Linear weight [out, in] <-> HF Conv1D weight [in, out]
QKV = "qkv"  # our q, k, v Linear weights <-> one Conv1D c_attn weight [in, 3 * out]
CAT = "cat"  # our q, k, v biases <-> one c_attn bias [3 * out]


@dataclass(frozen=True)
class Rule:
    ours: tuple[str, ...]  # our state-dict key(s); "{i}" = the layer number
    hf: str  # the transformers state-dict key
    how: str = COPY
    optional: bool = False  # ours may lack it (GPTConfig(bias=False)): export zeros, import drops


@dataclass(frozen=True)
class HFAdapter:
    model_type: str  # HF config.model_type
    hf_class: str  # the transformers model class
    auto: str  # the Auto class that loads it
    # config fields holding the number of layers "{i}" runs over; a second one counts the decoder's
    # layers (the rules whose HF key starts with "decoder")
    layers: tuple[str, ...]
    rules: tuple[Rule, ...]
    to_hf_config: Callable[..., Any]  # (our config, *, eos_id, pad_id) -> transformers config
    from_hf_config: Callable[[Any], Any]  # transformers config -> our config
    derived: dict[str, str] = field(default_factory=dict)  # HF key -> HF key it equals (tied)
    tied: dict[str, str] = field(default_factory=dict)  # our key -> our key it equals (tied)

    def layer_numbers(self, rule: Rule, config: Any) -> range | list[None]:
        """The layer numbers a rule expands to: none for a rule without {i}."""
        if "{i}" not in rule.hf:
            return [None]
        decoder = len(self.layers) > 1 and rule.hf.startswith("decoder")
        return range(getattr(config, self.layers[1] if decoder else self.layers[0]))

    def to_hf(self, sd: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
        """A full (TP=1) state dict of ours -> HF keys and shapes, vocabulary cut to
        `vocab_size`."""
        out: dict[str, torch.Tensor] = {}
        for rule in self.rules:
            for i in self.layer_numbers(rule, config):
                ours = [k.format(i=i) for k in rule.ours]
                hf = rule.hf.format(i=i)
                if rule.optional and any(k not in sd for k in ours):
                    like = sd[next(k for k in sd if k.endswith(".weight"))]
                    n = sum(sd[k.rpartition(".")[0] + ".weight"].shape[0] for k in ours)
                    out[hf] = like.new_zeros(n)  # bias=False -> HF zeros, the same function
                    continue
                ts = [sd[k].detach() for k in ours]
                if rule.how == VOCAB:
                    out[hf] = ts[0][: config.vocab_size].clone()
                elif rule.how == CONV1D:
                    out[hf] = ts[0].t().contiguous()
                elif rule.how == QKV:
                    out[hf] = torch.cat(ts).t().contiguous()
                elif rule.how == CAT:
                    out[hf] = torch.cat(ts)
                else:
                    out[hf] = ts[0].clone()
        for key, source in self.derived.items():
            out[key] = out[source]
        return out

    def from_hf(self, hf: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
        """HF keys and shapes -> a full (TP=1) state dict of ours, vocabulary zero-padded to
        `padded_vocab_size`; the inverse of `to_hf`."""
        sd: dict[str, torch.Tensor] = {}
        for rule in self.rules:
            for i in self.layer_numbers(rule, config):
                ours = [k.format(i=i) for k in rule.ours]
                key = rule.hf.format(i=i)
                if key not in hf:
                    raise DataprepError(
                        f"the HF weights have no {key!r} ({self.hf_class} expected)"
                    )
                t = hf[key].detach()
                if rule.how == VOCAB:
                    pad = t.new_zeros((config.padded_vocab_size - t.shape[0], *t.shape[1:]))
                    sd[ours[0]] = torch.cat([t, pad])
                elif rule.how == CONV1D:
                    sd[ours[0]] = t.t().contiguous()
                elif rule.how in (QKV, CAT):
                    parts = (t.t() if rule.how == QKV else t).chunk(len(ours))
                    for k, p in zip(ours, parts, strict=True):
                        sd[k] = p.contiguous()
                else:
                    sd[ours[0]] = t.clone()
        for key, source in self.tied.items():
            sd[key] = sd[source]
        return sd
