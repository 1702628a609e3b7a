"""Checks of a training run that need no process group: run before ranks start and again on each.

`inspect_data` checks the `--data-path` prefixes exist and agree on one tokenizer and reads the
vocabulary facts from their manifests; `check_lengths` checks sequence lengths against the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from dataprep.errors import ConfigError, DataConfigError
from trainer.config import TrainConfig


@dataclass(frozen=True, slots=True)
class DataInfo:
    prefixes: tuple[str, ...]
    vocab_size: int | None  # tokenizer vocabulary from the manifest (or --tokenizer)
    max_token_id: int | None  # largest id in the data, when a manifest records it
    tokenizer_spec: str | None
    tokens: int | None


def inspect_data(config: TrainConfig) -> DataInfo:
    """Check the prefixes exist and agree on one tokenizer; read vocab facts from the manifests."""
    from dataprep.manifest import load_manifest
    from dataprep.sampling.blend import parse_data_path

    prefixes = tuple(parse_data_path(config.data_path, blend_needs_weights=True)[0])
    vocab, spec, max_id, tokens = set(), set(), [], 0
    for prefix in prefixes:
        missing = [s for s in (".bin", ".idx") if not os.path.isfile(prefix + s)]
        if missing:
            hint = (
                " (give the prefix without .bin/.idx)" if prefix.endswith((".bin", ".idx")) else ""
            )
            what = ConfigError.quote(f"{prefix}: no {prefix}{' or '.join(missing)}{hint}")
            if len(missing) == 2:  # nothing there: the setting names nothing (usage, 2)
                raise ConfigError(
                    f"{{data_path}} {what}; build it with `dataprep build-index`", "data_path"
                )
            # half a pair: bad data (1)
            raise DataConfigError(
                f"{{data_path}} {ConfigError.quote(prefix)}: no "
                f"{ConfigError.quote(prefix)}{' or '.join(missing)}{ConfigError.quote(hint)}; "
                "build it with `dataprep build-index`",
                "data_path",
            )
        m = load_manifest(prefix)
        if m is None:
            continue
        tok = m.get("tokenizer") or {}
        if tok.get("vocab_size") is not None:
            vocab.add(int(tok["vocab_size"]))
        if tok.get("spec"):
            spec.add(tok["spec"])
        if m.get("max_token_id") is not None:
            max_id.append(int(m["max_token_id"]))
        tokens += int(m.get("tokens") or 0)
    if len(vocab) > 1 or len(spec) > 1:
        raise DataConfigError(
            f"{{data_path}} datasets were built with different tokenizers "
            f"({ConfigError.quote(sorted(spec))}, vocab sizes {sorted(vocab)}): blend only one "
            "tokenizer's data",
            "data_path",
        )
    tok_spec = config.tokenizer or (spec.pop() if spec else None)
    vocab_size = vocab.pop() if vocab else None
    if config.tokenizer is not None:
        from dataprep.tokenizers import load_tokenizer

        t = load_tokenizer(config.tokenizer)
        if vocab_size is not None and vocab_size != t.vocab_size:
            raise DataConfigError(
                f"{{tokenizer}} {ConfigError.quote(config.tokenizer)} has {t.vocab_size} ids but "
                f"the dataset was built with a {vocab_size}-id tokenizer",
                "tokenizer",
            )
        vocab_size = t.vocab_size
    max_token_id = max(max_id) if max_id else None
    if vocab_size is not None and max_token_id is not None and max_token_id >= vocab_size:
        raise DataConfigError(
            f"{{data_path}} holds token id {max_token_id}, but the tokenizer has only "
            f"{vocab_size} ids: the manifest and the data disagree; rebuild the dataset",
            "data_path",
        )
    return DataInfo(prefixes, vocab_size, max_token_id, tok_spec, tokens or None)


def t5_targets_length(config: TrainConfig) -> int:
    """The target ids span corruption makes for the encoder length (EOS included)."""
    from dataprep.sampling.t5_samples import T5Samples

    return T5Samples.lengths_for(
        config.encoder_seq_length,
        noise_density=config.noise_density,
        mean_noise_span_length=config.mean_noise_span_length,
    )[1]


def decoder_length(config: TrainConfig) -> int:
    """An mT5 run's decoder length: decoder_seq_length, else the span-corruption targets'."""
    return config.decoder_seq_length or t5_targets_length(config)


def check_lengths(config: TrainConfig, kind: str, mc: Any) -> int:
    if kind == "gpt":
        seq = config.seq_length or mc.block_size
        if seq > mc.block_size:
            raise ConfigError(
                f"{{seq_length}} {seq} exceeds the model's block_size {mc.block_size} "
                "(position table rows): shorten it or use a model with a larger block_size",
                "seq_length",
            )
        return seq
    targets = t5_targets_length(config)
    if config.decoder_seq_length is not None and config.decoder_seq_length < targets:
        raise ConfigError(
            f"{{decoder_seq_length}} {config.decoder_seq_length} is shorter than the {targets} "
            f"target ids span corruption makes for {{encoder_seq_length}} "
            f"{config.encoder_seq_length}: omit it or raise it to {targets}",
            "decoder_seq_length",
            "encoder_seq_length",
        )
    return config.encoder_seq_length


def check_batch_sizes(config: TrainConfig, dp_size: int) -> None:
    """The global batch must be a whole number of micro-batches on every DP rank."""
    per_micro = config.micro_batch_size * dp_size
    if config.global_batch_size is not None and config.global_batch_size % per_micro:
        raise ConfigError(
            f"{{global_batch_size}} {config.global_batch_size} is not a multiple of "
            f"{{micro_batch_size}} {config.micro_batch_size} x data-parallel size {dp_size} = "
            f"{per_micro}: use a multiple of {per_micro}",
            "global_batch_size",
            "micro_batch_size",
        )


def check_packed_flags(config: TrainConfig, model_config: Any) -> None:
    """eod_mask_loss / reset_position_ids / reset_attention_mask are for GPT models."""
    from trainer.models import architecture_of

    named = (("eod_mask_loss", config.eod_mask_loss),
             ("reset_position_ids", config.reset_position_ids),
             ("reset_attention_mask", config.reset_attention_mask))  # fmt: skip
    fields = [f for f, on in named if on]
    if fields and architecture_of(model_config).name != "gpt":
        raise ConfigError(
            f"{' '.join('{' + f + '}' for f in fields)}: packed-data flags of GPT training; this "
            f"run trains a {type(model_config).__name__.removesuffix('Config')}",
            *fields,
        )


def check_sequence_parallel(config: TrainConfig, model_config: Any, seq_length: int) -> None:
    """sequence_parallel: a model it is implemented for, and sequences TP can split evenly (an
    mT5's encoder and decoder sequences both)."""
    if not config.sequence_parallel:
        return
    from trainer.models import architecture_of

    tp = config.tensor_model_parallel_size
    if architecture_of(model_config).sequence_parallel_plan is None:
        raise ConfigError(
            f"{{sequence_parallel}} is not implemented for {type(model_config).__name__}",
            "sequence_parallel",
        )
    if architecture_of(model_config).task != "mt5":
        lengths = [("seq_length", seq_length, "")]
    else:
        decoder = decoder_length(config)
        up = -(-decoder // tp) * tp
        default = f"; pass {{decoder_seq_length}} {up}" if not config.decoder_seq_length else ""
        default = f" (the span-corruption targets' length){default}" if default else ""
        lengths = [("encoder_seq_length", config.encoder_seq_length, ""),
                   ("decoder_seq_length", decoder, default)]  # fmt: skip
    for name, length, note in lengths:
        if length % tp:
            raise ConfigError(
                f"{{sequence_parallel}} splits each sequence over the {tp} TP ranks: {{{name}}} "
                f"{length} is not a multiple of {tp}{note}",
                "sequence_parallel",
                name,
            )
