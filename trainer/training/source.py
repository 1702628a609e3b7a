"""The data source of a training run, from its config: `_build_source`.

GPT: trainer/training/data.py's source over the --data-path windows, with the packed-data flags
and the EOD id they need (from the dataset's manifest or --tokenizer). mT5: the span-corruption
source, its sentinels and EOS from the dataset's tokenizer and its decoder length from
`preflight.decoder_length`: --decoder-seq-length, else the span-corruption targets' length.
"""

from __future__ import annotations

from typing import Any

from dataprep.errors import ConfigError
from trainer.config import TrainConfig
from trainer.training.preflight import DataInfo, decoder_length


def _packed_data(config: TrainConfig, info: DataInfo) -> Any:
    """The packed-data flags with the tokenizer's EOD id, or None when none is set."""
    from trainer.training.batches import PackedData

    flags = (config.eod_mask_loss, config.reset_position_ids, config.reset_attention_mask)
    if not any(flags):
        return None
    from dataprep.manifest import load_manifest
    from dataprep.tokenizers import load_tokenizer

    recorded = (load_manifest(info.prefixes[0]) or {}).get("tokenizer") or {}
    eod = recorded.get("eod_id", recorded.get("eos_id")) if config.tokenizer is None else None
    if eod is None and info.tokenizer_spec is not None:
        eod = load_tokenizer(info.tokenizer_spec).eod_id
    if eod is None:
        raise ConfigError(
            "{eod_mask_loss} / {reset_position_ids} / {reset_attention_mask} look for the EOD "
            "token: neither the dataset's manifest nor {tokenizer} gives its id",
            "eod_mask_loss",
            "reset_position_ids",
            "reset_attention_mask",
            "tokenizer",
        )
    return PackedData(int(eod), *flags)


def _build_source(
    config: TrainConfig, kind: str, info: DataInfo, seq_length: int, num_samples: int, layout: Any
) -> Any:
    from trainer.training.data import make_source

    if kind == "gpt":
        return make_source(
            "gpt",
            data_path=config.data_path,
            seq_length=seq_length,
            num_samples=num_samples,
            split=config.split,
            seed=config.seed,
            cache_dir=config.data_cache_path,
            packed=_packed_data(config, info),
        )
    from dataprep.sampling.t5_samples import sentinel_ids_of
    from dataprep.tokenizers import load_tokenizer

    if info.tokenizer_spec is None:
        raise ConfigError(
            "mT5 span corruption needs the tokenizer's sentinels and EOS: the dataset has no "
            "manifest naming its tokenizer; pass {tokenizer} NAME_OR_PATH",
            "tokenizer",
        )
    tok = load_tokenizer(info.tokenizer_spec)
    sentinels = sentinel_ids_of(tok)
    return make_source(
        "mt5",
        data_path=config.data_path,
        encoder_length=config.encoder_seq_length,
        decoder_length=decoder_length(config),
        num_samples=num_samples,
        split=config.split,
        seed=config.seed,
        sentinel_ids=sentinels,
        eos_id=tok.eos_id,
        noise_density=config.noise_density,
        mean_noise_span_length=config.mean_noise_span_length,
        pad_id=tok.pad_id if tok.pad_id is not None else 0,
    )
