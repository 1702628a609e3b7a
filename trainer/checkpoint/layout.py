"""The directory layout of a checkpoint: file names, metadata.json, and finding one on disk.

A checkpoint directory holds metadata.json, `model_tp{r:02d}.pt` and `extra_tp{r:02d}_dp{d:03d}.pt`
(store.py writes and loads them). `read_metadata` checks the format and model type, `find_latest`
and `resolve_checkpoint` turn a `--save` root or an `iter_*` directory into the checkpoint to use,
`load_config` rebuilds its model config and `tokenizer_spec` is the one rule for which tokenizer a
checkpoint uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError
from trainer.checkpoint.safe_pickle import load_pt
from trainer.models import ARCHITECTURES, ModelConfig, architecture_of_model_type

FORMAT = "dataprep-trainer-checkpoint"
VERSION = 1
METADATA = "metadata.json"
LATEST = "latest"

__all__ = [
    "find_latest",
    "load_config",
    "read_metadata",
    "resolve_checkpoint",
    "tokenizer_spec",
]


def _model_file(tp_rank: int) -> str:
    return f"model_tp{tp_rank:02d}.pt"


def _extra_file(tp_rank: int, dp_rank: int) -> str:
    return f"extra_tp{tp_rank:02d}_dp{dp_rank:03d}.pt"


def find_latest(root: str | os.PathLike) -> str | None:
    """The checkpoint to resume from: `root` itself if it is one, else the one `root/latest` names,
    else the highest complete `iter_*`; None if there is none."""
    root = Path(root)
    if (root / METADATA).is_file():
        return str(root)
    latest = root / LATEST
    if latest.is_file():
        path = root / latest.read_text(encoding="utf-8").strip()
        if not (path / METADATA).is_file():
            raise DataprepError(
                f"{latest} names {path.name}, which is not a complete checkpoint (no {METADATA}); "
                f"delete {latest} to fall back to the newest complete iter_* directory"
            )
        return str(path)
    done = sorted(p for p in root.glob("iter_*") if (p / METADATA).is_file())
    return str(done[-1]) if done else None


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """metadata.json of a checkpoint directory, plus "extra": the `extra` dict saved by rank 0."""
    path = Path(path)
    meta_path = path / METADATA
    if not meta_path.is_file():
        raise DataprepError(
            f"{path}: not a checkpoint directory (no {METADATA}); pass a directory written by "
            "save_checkpoint, e.g. <save>/iter_0000100"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataprepError(f"{meta_path}: cannot read checkpoint metadata: {e}") from e
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DataprepError(
            f"{meta_path}: format {meta.get('format')!r} version {meta.get('version')!r}, expected "
            f"{FORMAT!r} version {VERSION}"
        )
    if architecture_of_model_type(meta.get("model_type")) is None:
        known = sorted(a.model_type for a in ARCHITECTURES.values())
        raise DataprepError(
            f"{meta_path}: unknown model_type {meta.get('model_type')!r}, expected one of {known}"
        )
    extra_path = path / _extra_file(0, 0)
    meta["extra"] = _load_extra(extra_path)
    return meta


def tokenizer_spec(meta: dict, override: str | None = None) -> str | None:
    """The tokenizer of a checkpoint (`meta` from read_metadata), the one rule every reader uses:
    `override` (the user's choice) if given, else the spec recorded when it was saved, else the
    run's tokenizer setting, else the build manifest of its first data prefix; None if none says.
    """
    if override:
        return override
    spec = (meta.get("info") or {}).get("tokenizer")
    if spec:
        return spec
    train_config = (meta.get("extra") or {}).get("train_config") or {}
    if train_config.get("tokenizer"):
        return train_config["tokenizer"]
    from dataprep.manifest import load_manifest

    words = train_config.get("data_path") or []
    prefixes = [w for w in words if not _is_number(w)]
    m = load_manifest(prefixes[0]) if prefixes else None
    return ((m or {}).get("tokenizer") or {}).get("spec")


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def load_config(path: str | os.PathLike) -> ModelConfig:
    """The model config a checkpoint was saved with (build the model from it to load exactly)."""
    meta = read_metadata(path)
    return architecture_of_model_type(meta["model_type"]).config(**meta["config"])


def resolve_checkpoint(path: str | os.PathLike, *, what: str = "checkpoint") -> str:
    """A checkpoint directory from a path that is one or a `--save` root (its latest iteration);
    a one-line DataprepError naming what was found otherwise."""
    p = Path(path)
    if not p.exists():
        raise DataprepError(f"{what} {p}: no such directory")
    if not p.is_dir():
        raise DataprepError(
            f"{what} {p}: a file, expected a checkpoint directory written by `dataprep train`"
        )
    found = find_latest(p)
    if found is None:
        names = sorted(c.name + ("/" if c.is_dir() else "") for c in p.iterdir())
        seen = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "") if names else "nothing"
        kind = ""
        if (p / "config.json").is_file():
            kind = " (a Hugging Face folder? `dataprep import-hf` turns one into a checkpoint)"
        elif (p / "latest_checkpointed_iteration.txt").is_file() or any(
            n.startswith("mp_rank_") for n in names
        ):
            kind = " (a Megatron-LM checkpoint: not readable here)"
        raise DataprepError(
            f"{what} {p}: found {seen}{kind}; no {METADATA} here and no iter_* checkpoint inside: "
            "expected a directory written by `dataprep train` (the save root or one iter_NNNNNNN)"
        )
    return found


def _load_extra(path: Path) -> dict:
    """The trainer state saved beside the shards (step, RNG states, config), loaded as safely as
    the shards (weights_only; NumPy arrays of older checkpoints allowed)."""
    return load_pt(path, what="checkpoint state") if path.is_file() else {}
