"""Checkpoints of tensor-parallel models: per-rank shards, resharding between TP sizes, HF export.

One file per TP rank, as Megatron-LM's `mp_rank_XX` layout but with names of our own. A
checkpoint is a directory written under a temporary name, then renamed, so it is complete or absent:

    metadata.json                 format, version, model type and config, tp, dp, step, shard_dims
    model_tp{r:02d}.pt            TP rank r: {"model": its state-dict shard, "optim": optimizer
                                  state keyed by parameter name, exp_avg/exp_avg_sq sharded like
                                  the parameter}
    extra_tp{r:02d}_dp{d:03d}.pt  the caller's `extra` dict from every rank (step, RNG states, ...)

`save_checkpoint(root, ..., step=s)` writes `root/iter_{s:07d}` and names it in `root/latest`.
Loading at the saved TP reads one shard; at another TP it concatenates all shards along
`shard_dims` (no process group needed) and each rank takes its chunks. The file names, reading
metadata.json and finding the checkpoint of a `--save` root live in layout.py; Hugging Face
export and import in trainer/checkpoint/hf.py.
The `.pt` files are pickles, read with `trainer.checkpoint.safe_pickle.load_pt` (weights_only:
tensors and plain containers only; a file asking for anything else is refused before it runs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from dataprep.errors import DataprepError
from trainer.checkpoint.layout import (
    FORMAT,
    LATEST,
    METADATA,
    VERSION,
    _extra_file,
    _load_extra,
    _model_file,
    load_config,
    read_metadata,
    resolve_checkpoint,
)
from trainer.checkpoint.safe_pickle import load_pt
from trainer.models import architecture_of
from trainer.parallel import load_full_state_dict, shard_dims, vocab_parallel_keys

log = logging.getLogger(__name__)

# config fields that may change between save and load (dropout; the padding follows the TP size)
RESUMABLE_FIELDS = {"dropout", "attn_dropout", "dropout_rate", "padded_vocab_size"}

__all__ = [
    "load_model",
    "load_checkpoint",
    "merge_checkpoint",
    "save_checkpoint",
]


def _tp_rank_size(tp_group: dist.ProcessGroup | None) -> tuple[int, int]:
    if tp_group is None:
        return 0, 1
    return dist.get_rank(tp_group), dist.get_world_size(tp_group)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ------------------------------------------------------------------------------------------------
# Optimizer state keyed by parameter names (torch numbers parameters by position)


def _optimizer_param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for group in optimizer.param_groups:
        missing = [tuple(p.shape) for p in group["params"] if id(p) not in names]
        if missing:
            raise ValueError(f"the optimizer holds parameters that are not in the model: {missing}")
        groups.append([names[id(p)] for p in group["params"]])
    return groups


def named_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """`optimizer.state_dict()` with parameter names instead of positions."""
    sd = optimizer.state_dict()
    flat = [n for group in _optimizer_param_names(model, optimizer) for n in group]
    return {
        "state": {flat[i]: s for i, s in sd["state"].items()},
        "param_groups": [
            {**{k: v for k, v in g.items() if k != "params"}, "params": [flat[i] for i in ps]}
            for g in sd["param_groups"]
            for ps in [g["params"]]
        ],
    }


def load_named_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, named: dict, *, where: str = "checkpoint"
) -> None:
    """Inverse of `named_optimizer_state`; the parameter groups must hold the same names."""
    groups = _optimizer_param_names(model, optimizer)
    saved = [g["params"] for g in named["param_groups"]]
    if [sorted(g) for g in groups] != [sorted(g) for g in saved]:
        raise DataprepError(
            f"{where}: the optimizer's parameter groups differ from the saved ones "
            f"({[len(g) for g in saved]} parameters per group saved, {[len(g) for g in groups]} "
            "now); build the optimizer with the same parameter grouping"
        )
    index = {n: i for i, n in enumerate(n for g in groups for n in g)}
    param_groups, offset = [], 0
    for g_saved, g_now in zip(named["param_groups"], groups, strict=True):
        hyper = {k: v for k, v in g_saved.items() if k != "params"}
        # positions in the *current* order: torch maps saved positions onto params positionally
        param_groups.append({**hyper, "params": list(range(offset, offset + len(g_now)))})
        offset += len(g_now)
    state = {index[n]: s for n, s in named["state"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


# ------------------------------------------------------------------------------------------------
# Save


def save_checkpoint(
    root: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    step: int,
    extra: dict | None = None,
    tp_group: dist.ProcessGroup | None = None,
    dp_rank: int = 0,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write `root/iter_{step:07d}` atomically and point `root/latest` at it; return its path.

    `info`: JSON facts kept in metadata.json (e.g. "tokenizer": the spec the data was built with,
    which `trainer.checkpoint.hf.export_hf` turns into the HF tokenizer).

    Collective: every rank calls it (with its `extra`, e.g. its RNG states). DP rank 0 of each TP
    rank writes the model/optimizer shard; global rank 0 writes the metadata and renames. The world
    is assumed to be TP x DP.
    """
    root = Path(root)
    final = root / f"iter_{step:07d}"
    tmp = root / f".{final.name}.partial"
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    tp_rank, tp = _tp_rank_size(tp_group)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    _barrier()
    optim = None
    if optimizer is not None and (dp_rank == 0 or getattr(optimizer, "collective_state_dict", 0)):
        optim = named_optimizer_state(model, optimizer)  # the distributed optimizer gathers
    if dp_rank == 0:
        torch.save({"model": model.state_dict(), "optim": optim}, tmp / _model_file(tp_rank))
    torch.save(extra or {}, tmp / _extra_file(tp_rank, dp_rank))
    _barrier()
    if rank == 0:
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "model_type": architecture_of(model).model_type,
            "config": dataclasses.asdict(model.config),
            "tp": tp,
            "dp": max(1, world // tp),
            "step": step,
            "has_optimizer": optimizer is not None,
            "shard_dims": shard_dims(model),
            "torch_version": torch.__version__,
            "info": info or {},
        }
        (tmp / METADATA).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        latest_tmp = root / f".{LATEST}.tmp"
        latest_tmp.write_text(final.name + "\n", encoding="utf-8")
        os.replace(latest_tmp, root / LATEST)
        log.info("saved checkpoint %s (TP=%d)", final, tp)
    _barrier()
    return final


# ------------------------------------------------------------------------------------------------
# Load


def load_model(
    path: str | os.PathLike, *, tp_group: dist.ProcessGroup | None = None, dtype=None
) -> nn.Module:
    """The model of a checkpoint saved at any TP, for inference: built from its config, sharded over
    `tp_group` (None = TP 1, the whole model in this process), weights loaded, in eval mode.
    `path` may be a `--save` root (its latest iteration)."""
    from trainer.parallel import apply_tensor_parallel

    path = resolve_checkpoint(path)
    config = load_config(path)
    model = architecture_of(config).model(config)
    if tp_group is not None:
        apply_tensor_parallel(model, tp_group)
    load_checkpoint(path, model, None, tp_group=tp_group)
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def _check_compatible(meta: dict, model: nn.Module, path: Path) -> None:
    here = architecture_of(model).model_type
    if meta["model_type"] != here:
        raise DataprepError(
            f"{path}: the checkpoint holds a {meta['model_type']} model but this model is a "
            f"{here}; "
            f"build the model from trainer.checkpoint.load_config({str(path)!r})"
        )
    saved, now = meta["config"], dataclasses.asdict(model.config)
    diffs = [
        f"{k}={saved.get(k)!r} (checkpoint) vs {now.get(k)!r} (this model)"
        for k in sorted(set(saved) | set(now))
        if k not in RESUMABLE_FIELDS and saved.get(k) != now.get(k)
    ]
    if diffs:
        raise DataprepError(
            f"{path}: the checkpoint's {here} config differs: {'; '.join(diffs)}; build the model "
            f"from trainer.checkpoint.load_config({str(path)!r})"
        )


def _load_shard(path: Path, tp_rank: int) -> dict:
    file = path / _model_file(tp_rank)
    if not file.is_file():
        raise DataprepError(
            f"{path}: missing {file.name}; the checkpoint is incomplete (a TP rank's shard was not "
            "written or was deleted)"
        )
    return load_pt(file, what="checkpoint shard")


# ------------------------------------------------------------------------------------------------
# Merge and load


def merge_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(full model state dict, full optimizer state by name or None) of any checkpoint, in one
    process without torch.distributed: shards concatenated along their shard_dims."""
    path = Path(path)
    meta = read_metadata(path)
    dims = meta["shard_dims"]
    shards = [_load_shard(path, r) for r in range(meta["tp"])]
    model_sd = {}
    for key, value in shards[0]["model"].items():
        d = dims.get(key)
        model_sd[key] = value if d is None else torch.cat([s["model"][key] for s in shards], dim=d)
    optim = shards[0]["optim"]
    if optim is None:
        return model_sd, None
    state = {}
    for name, entry in optim["state"].items():
        d = dims.get(name)
        state[name] = {
            k: (
                torch.cat([s["optim"]["state"][name][k] for s in shards], dim=d)
                if d is not None and torch.is_tensor(v) and v.dim() > 0
                else v
            )
            for k, v in entry.items()
        }
    return model_sd, {"state": state, "param_groups": optim["param_groups"]}


def _resize_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] >= rows:
        return t[:rows]
    return torch.cat([t, t.new_zeros((rows - t.shape[0], *t.shape[1:]))])


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    tp_group: dist.ProcessGroup | None = None,
    dp_rank: int = 0,
) -> dict:
    """Load model (and optimizer) state saved at any TP into this (sharded) model; return this
    rank's `extra` (that of TP rank 0 / DP rank 0 when the layout changed).

    Same TP and padding: bit-exact. Another TP: shards merged then re-chunked, also exact. If the
    padded vocabulary differs (it follows 128 * TP), the padded rows are cut or zero-filled; they
    take no part in the loss (`trainer.loss.cross_entropy(vocab_size=)`), so the model is the same.
    """
    path = Path(path)
    meta = read_metadata(path)
    _check_compatible(meta, model, path)
    if optimizer is not None and not meta.get("has_optimizer"):
        raise DataprepError(f"{path}: the checkpoint has no optimizer state; pass optimizer=None")
    tp_rank, tp = _tp_rank_size(tp_group)
    saved_rows, rows = meta["config"]["padded_vocab_size"], model.config.padded_vocab_size
    if meta["tp"] == tp and saved_rows == rows:
        shard = _load_shard(path, tp_rank)
        model.load_state_dict(shard["model"])
        if optimizer is not None:
            load_named_optimizer_state(model, optimizer, shard["optim"], where=str(path))
    else:
        model_sd, optim = merge_checkpoint(path)
        if saved_rows != rows:
            log.info(
                "%s: padded vocabulary %d -> %d rows (the padded rows take no part in the loss, "
                "so the model is unchanged)",
                path,
                saved_rows,
                rows,
            )
            for key in vocab_parallel_keys(model):
                model_sd[key] = _resize_rows(model_sd[key], rows)
                if optim is not None and key in optim["state"]:
                    for k, v in optim["state"][key].items():
                        if torch.is_tensor(v) and v.dim() > 0:
                            optim["state"][key][k] = _resize_rows(v, rows)
        load_full_state_dict(model, model_sd, tp_group)
        if optimizer is not None:
            dims = shard_dims(model)
            for name, entry in optim["state"].items():
                d = dims.get(name)
                if d is None or tp == 1:
                    continue
                for k, v in entry.items():
                    if torch.is_tensor(v) and v.dim() > 0:
                        entry[k] = v.chunk(tp, dim=d)[tp_rank].clone()
            load_named_optimizer_state(model, optimizer, optim, where=str(path))
    same_layout = meta["tp"] == tp
    extra_path = path / _extra_file(tp_rank if same_layout else 0, dp_rank)
    if not extra_path.is_file():
        extra_path = path / _extra_file(0, 0)
    return _load_extra(extra_path)
