"""Checkpoints: our sharded format and the formats we convert to and from.

    store.py        the per-rank checkpoint directories: save, load at any TP, merge
    layout.py       their file names and metadata.json, finding the latest one, load_config,
                    and `tokenizer_spec`, the one rule for which tokenizer a checkpoint uses
    safe_pickle.py  `load_pt`: every .pt / .ckpt read without running code from the file
    hf.py           Hugging Face folders: export_hf / import_hf, state-dict and config conversion
    megatron.py     Megatron-LM checkpoints: import_megatron / export_megatron
    megatron_layout.py  Megatron-LM GPT weights <-> HF GPT-2: layer table, QKV row orders
    nemo.py         NeMo 1.x archives: import_nemo / export_nemo
    nemo_archive.py the .nemo tar read and written, and the tokenizer files in it
    nemo_gpt.py     Megatron-GPT .nemo archives: the config and weights conversion
    nemo_t5.py      Megatron-T5 (mT5) .nemo archives: the key table, config and weights

The package exports store.py's and layout.py's functions (`trainer.checkpoint.load_config(...)`
and so on).
"""

from trainer.checkpoint.layout import (
    find_latest,
    load_config,
    read_metadata,
    resolve_checkpoint,
    tokenizer_spec,
)
from trainer.checkpoint.store import (
    load_checkpoint,
    load_model,
    merge_checkpoint,
    save_checkpoint,
)

__all__ = [
    "find_latest",
    "load_checkpoint",
    "load_config",
    "load_model",
    "merge_checkpoint",
    "read_metadata",
    "resolve_checkpoint",
    "save_checkpoint",
    "tokenizer_spec",
]
