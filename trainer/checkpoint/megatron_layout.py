"""Megatron-LM's legacy GPT weights <-> HF GPT-2's: the layer table and the fused QKV row orders.

`LAYER_OPS` maps each layer's Megatron op to its HF GPT-2 op and how it splits over TP;
`states_to_hf` merges the flat `language_model` keys of every (tp, pp) rank into one HF GPT-2
state dict (QKV rows read in the order of the file's `checkpoint_version`), and `megatron_shards`
splits an HF GPT-2 state dict into TP ranks (checkpoint_version 3.0). Used by
`trainer.checkpoint.megatron` and, for Megatron-GPT `.nemo` archives, `trainer.checkpoint.nemo_gpt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dataprep.errors import ConfigError, DataConfigError, DataprepError

# per layer: Megatron op -> (HF GPT-2 op, how): column-parallel rows split over TP (dim 0),
# row-parallel weights split along dim 1; "qkv" is the fused attention input
LAYER_OPS = {
    "input_layernorm": ("ln_1", None),
    "attention.query_key_value": ("attn.c_attn", "qkv"),
    "attention.dense": ("attn.c_proj", "row"),
    "post_attention_layernorm": ("ln_2", None),
    "mlp.dense_h_to_4h": ("mlp.c_fc", "column"),
    "mlp.dense_4h_to_h": ("mlp.c_proj", "row"),
}


@dataclass
class MegatronShape:
    """The shape of a Megatron GPT: from the checkpoint's `args`, else Megatron's flags."""

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    max_position_embeddings: int


def _qkv_to_parts(t: torch.Tensor, version: float, heads: int) -> list[torch.Tensor]:
    """One rank's fused QKV weight [3 * heads * hd, ...] (or bias) -> [q, k, v], each
    [heads * hd, ...], from the row order of `version`."""
    rest = t.shape[1:]
    hd = t.shape[0] // (3 * heads)
    if version == 0:
        x = t.view(3, heads, hd, *rest)
        return [x[j].reshape(heads * hd, *rest) for j in range(3)]
    if version == 1.0:
        x = t.view(heads, hd, 3, *rest)
        return [x[:, :, j].reshape(heads * hd, *rest) for j in range(3)]
    x = t.view(heads, 3, hd, *rest)
    return [x[:, j].reshape(heads * hd, *rest) for j in range(3)]


def _parts_to_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """[q, k, v] of one rank -> the fused rows of checkpoint_version >= 2: [heads, 3, hd]."""
    rest = q.shape[1:]
    hd = q.shape[0] // heads
    x = torch.stack([t.view(heads, hd, *rest) for t in (q, k, v)], dim=1)
    return x.reshape(3 * heads * hd, *rest)


def states_to_hf(where: str, states: dict[tuple[int, int], dict[str, torch.Tensor]], *,
                 version: float, shape: MegatronShape,
                 vocab_size: int) -> tuple[dict[str, torch.Tensor], int]:  # fmt: skip
    """Megatron's flat `language_model` keys of every (tp, pp) rank -> one HF GPT-2 state dict
    (`vocab_size` rows) and the number of embedding rows the ranks held."""
    tp = 1 + max(r[0] for r in states)
    pp = 1 + max(r[1] for r in states)
    keys = [k for s in states.values() for k in s]
    heads = shape.num_attention_heads
    if heads % tp:
        raise DataprepError(f"{where}: {heads} attention heads do not split over TP={tp}")
    stack = "transformer" if any(k.startswith("transformer.") for k in keys) else "encoder"
    per_stage = shape.num_layers // pp
    hf: dict[str, torch.Tensor] = {}

    def ranks_of(key: str, p: int) -> list[torch.Tensor]:
        try:
            return [states[(t, p)][key] for t in range(tp)]
        except KeyError:
            raise DataprepError(f"{where}: {key} missing in pipeline stage {p}") from None

    words = torch.cat(ranks_of("embedding.word_embeddings.weight", 0), dim=0)
    if words.shape[0] < vocab_size:
        raise DataConfigError(
            f"{ConfigError.quote(where)}: {words.shape[0]} embedding rows, fewer than the "
            f"tokenizer's {vocab_size} ids; pass the {{tokenizer}} the model was trained with",
            "tokenizer",
        )
    hf["transformer.wte.weight"] = words[:vocab_size].float().clone()
    positions = states[(0, 0)]["embedding.position_embeddings.weight"]
    if positions.shape != (shape.max_position_embeddings, shape.hidden_size):
        raise DataprepError(
            f"{where}: position embeddings {tuple(positions.shape)}, expected "
            f"({shape.max_position_embeddings}, {shape.hidden_size}) from the shape"
        )
    hf["transformer.wpe.weight"] = positions.float().clone()
    for p in range(pp):
        for local in range(per_stage):
            i = p * per_stage + local
            for op, (hf_op, how) in LAYER_OPS.items():
                for kind in ("weight", "bias"):
                    key = f"{stack}.layers.{local}.{op}.{kind}"
                    if key not in states[(0, p)]:
                        alt = key.replace(".attention.", ".self_attention.")
                        key = alt if alt in states[(0, p)] else key
                    ts = [t.float() for t in ranks_of(key, p)]
                    out = f"transformer.h.{i}.{hf_op}.{kind}"
                    if how == "qkv":
                        parts = [_qkv_to_parts(t, version, heads // tp) for t in ts]
                        q, k, v = (torch.cat([r[j] for r in parts]) for j in range(3))
                        full = torch.cat([q, k, v])
                        hf[out] = full.t().contiguous() if kind == "weight" else full
                    elif how == "column":
                        full = torch.cat(ts)
                        hf[out] = full.t().contiguous() if kind == "weight" else full
                    elif how == "row":
                        hf[out] = torch.cat(ts, dim=1).t().contiguous() if kind == "weight" \
                            else ts[0].clone()  # fmt: skip
                    else:
                        hf[out] = ts[0].clone()
    for kind in ("weight", "bias"):
        hf[f"transformer.ln_f.{kind}"] = ranks_of(f"{stack}.final_layernorm.{kind}", pp - 1)[
            0
        ].float()
    return hf, int(words.shape[0])


def megatron_shards(
    config: Any, hf: dict[str, torch.Tensor], tp: int, *, legacy_qkv: bool = False
) -> tuple[list[dict[str, torch.Tensor]], int]:
    """An HF GPT-2 state dict -> per TP rank, Megatron's flat `language_model` keys
    (`embedding.*`, `encoder.layers.{i}.*`, `encoder.final_layernorm.*`) with the fused QKV of
    checkpoint_version 3 (`[heads, 3, hd]`; `legacy_qkv`: `[3, heads, hd]`), and the padded rows."""
    from trainer.models.common import pad_vocab_size

    V, padded = config.vocab_size, pad_vocab_size(config.vocab_size, tp)
    words = torch.zeros(padded, config.n_embd)
    words[:V] = hf["transformer.wte.weight"]
    heads = config.n_head // tp
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(tp)]
    for r in range(tp):
        shards[r]["embedding.word_embeddings.weight"] = words.chunk(tp)[r].clone()
        shards[r]["embedding.position_embeddings.weight"] = hf["transformer.wpe.weight"].clone()
    for i in range(config.n_layer):
        h = f"transformer.h.{i}."
        for op, (hf_op, how) in LAYER_OPS.items():
            op = op.replace("attention.", "self_attention.")
            for kind_ in ("weight", "bias"):
                t = hf[f"{h}{hf_op}.{kind_}"]
                t = t.t().contiguous() if kind_ == "weight" and how else t  # Conv1D -> Linear
                key = f"encoder.layers.{i}.{op}.{kind_}"
                for r in range(tp):
                    if how == "qkv":
                        q, k, v = (x.chunk(tp)[r] for x in t.chunk(3))
                        shards[r][key] = (torch.cat([q, k, v]) if legacy_qkv
                                          else _parts_to_qkv(q, k, v, heads)).clone()  # fmt: skip
                    elif how == "column":
                        shards[r][key] = t.chunk(tp)[r].clone()
                    elif how == "row" and kind_ == "weight":
                        shards[r][key] = t.chunk(tp, dim=1)[r].clone()
                    else:
                        shards[r][key] = t.clone()
    for r in range(tp):  # after the layers, in Megatron's order (readers walk it in order)
        for kind_ in ("weight", "bias"):
            shards[r][f"encoder.final_layernorm.{kind_}"] = hf[f"transformer.ln_f.{kind_}"].clone()
    return shards, padded
