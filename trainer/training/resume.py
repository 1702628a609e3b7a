"""What a training run saves and restores around trainer/checkpoint/: the step, every rank's RNG
states and the train config beside the model and optimizer; which checkpoint `--load` means; and
whether its architecture matches this run's (a different TP size is fine, another model is not).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from dataprep.errors import ConfigError, DataConfigError
from trainer.config import TrainConfig
from trainer.training.rng import rng_state, set_rng_state

log = logging.getLogger(__name__)


def find_checkpoint(load: str | None) -> str | None:
    if load is None:
        return None
    from trainer import checkpoint

    if not os.path.isdir(load):
        raise ConfigError(f"{{load}} {ConfigError.quote(load)}: no such directory", "load")
    found = checkpoint.find_latest(load)
    if found is None:
        log.warning("--load %s holds no checkpoint; starting from scratch", load)
    return found


def run_model_config(config: TrainConfig, vocab_size: int | None) -> tuple[str, Any, str | None]:
    """(task, model config, checkpoint to resume or None) of a run. Without --model, a --load
    checkpoint's own architecture is used (an imported HF model, say); with it, the two must agree.
    """
    from trainer.config import resolve_model_config
    from trainer.models import architecture_of

    resume = find_checkpoint(config.load)
    if resume is None or config.model is not None:
        kind, mc = resolve_model_config(config, vocab_size=vocab_size)
        if resume is not None:
            mc = checkpoint_model_config(resume, kind, mc, config)
        return kind, mc, resume
    from trainer import checkpoint

    mc = checkpoint.load_config(resume)
    if vocab_size is not None and mc.vocab_size != vocab_size:
        raise DataConfigError(
            f"{{load}} {ConfigError.quote(resume)}: the checkpoint's model has a "
            f"{mc.vocab_size}-id vocabulary but {{data_path}} was built with a {vocab_size}-id "
            "tokenizer; train it on data of its own tokenizer",
            "load",
            "data_path",
        )
    fields = {f.name for f in dataclasses.fields(mc)}
    changes: dict[str, Any] = {}
    if config.hidden_dropout is not None:
        changes["dropout_rate" if "dropout_rate" in fields else "dropout"] = config.hidden_dropout
    if config.attention_dropout is not None and "attn_dropout" in fields:
        changes["attn_dropout"] = config.attention_dropout
    mc = dataclasses.replace(mc, **changes)
    log.info("--model not given: using the checkpoint's %s", type(mc).__name__)
    return architecture_of(mc).task, mc, resume


def checkpoint_model_config(path: str, kind: str, mc: Any, config: TrainConfig) -> Any:
    """This run's model config adjusted to a checkpoint: same architecture required (else a clear
    error); its padded vocabulary is kept when the TP size divides it, so resharding is exact."""
    from trainer import checkpoint
    from trainer.checkpoint.store import RESUMABLE_FIELDS
    from trainer.models import architecture_of

    meta = checkpoint.read_metadata(path)
    saved_type, now_type = meta["model_type"], architecture_of(mc).model_type
    saved, now = meta["config"], dataclasses.asdict(mc)
    ignore = RESUMABLE_FIELDS
    keys = set(saved) | set(now)
    diff = sorted(k for k in keys if k not in ignore and saved.get(k) != now.get(k))
    if saved_type != now_type:
        raise DataConfigError(
            f"{{load}} {ConfigError.quote(path)}: the checkpoint holds a {saved_type} model but "
            f"{{model}} {ConfigError.quote(config.model)} is {now_type}; resume with the "
            "checkpoint's architecture",
            "load",
            "model",
        )
    if diff:
        what = ", ".join(f"{k}={saved.get(k)} (now {now.get(k)})" for k in diff)
        hint = " (another tokenizer's data?)" if "vocab_size" in diff else ""
        raise DataConfigError(
            f"{{load}} {ConfigError.quote(path)}: the checkpoint's {kind} config differs from "
            f"{{model}} {ConfigError.quote(config.model)} on this data: "
            f"{ConfigError.quote(what)}{ConfigError.quote(hint)}; resume with the same "
            "architecture and tokenizer",
            "load",
            "model",
        )
    rows, tp = int(saved["padded_vocab_size"]), config.tensor_model_parallel_size
    if rows != mc.padded_vocab_size and rows % tp == 0 and rows >= mc.vocab_size:
        log.info("keeping the checkpoint's %d embedding rows (TP=%d divides them)", rows, tp)
        return dataclasses.replace(mc, padded_vocab_size=rows)
    return mc


def save_training_checkpoint(
    config, model, optimizer, layout, step, kind, mc, parallel, *, tokenizer: str | None = None
) -> None:
    from trainer import checkpoint

    extra = {
        "step": step,
        "model_kind": kind,
        "train_config": json.loads(config.to_json()),
        "rng": {**rng_state(), **parallel.get_rng_state(model)},
        "tp_size": layout.tp_size,
        "dp_rank": layout.dp_rank,
        "tp_rank": layout.tp_rank,
    }
    checkpoint.save_checkpoint(
        config.save,
        model,
        optimizer,
        step=step,
        extra=extra,
        tp_group=layout.tp_group,
        dp_rank=layout.dp_rank,
        info={"tokenizer": tokenizer, "model": config.model},
    )


def load_training_checkpoint(path: str, model, optimizer, layout, parallel) -> int:
    from trainer import checkpoint

    if not checkpoint.read_metadata(path).get("has_optimizer"):
        log.info("%s has no optimizer state (an imported model): starting a fresh AdamW", path)
        optimizer = None
    extra = checkpoint.load_checkpoint(
        path, model, optimizer, tp_group=layout.tp_group, dp_rank=layout.dp_rank
    )
    if "step" not in extra:
        raise DataConfigError(
            f"{{load}} {ConfigError.quote(path)}: the checkpoint has no trainer state (step, RNG); "
            "it was not written by this trainer",
            "load",
        )
    step = int(extra["step"])
    rng = extra.get("rng")
    if rng is not None:
        set_rng_state(rng)
        if extra.get("tp_size") != layout.tp_size:
            rng = {k: v for k, v in rng.items() if k != "tp"}  # per-TP-rank streams do not map
        parallel.set_rng_state(model, rng)
    log.info("resumed from %s at step %d", path, step)
    return step
