"""Argument checks shared by the commands that read a dataset prefix (not a command itself).

The exit-code rule (README "Exit codes"): a prefix that names no dataset, or a dataset without a
build manifest when no --tokenizer is given, is a usage error (exit 2): the fix is on the command
line. A dataset that exists but is incomplete or corrupt is bad data (exit 1).
"""

from __future__ import annotations

import os

from dataprep.errors import UsageError

# Config fields whose flag is not "--" + the field with "-" for "_" (the rule for all others).
FLAG_NAMES: dict[str, str] = {
    "inputs": "--input",  # build-index
    "filters": "--filter",  # build-index
}
# Fields of a model config (GPTConfig, GPTJConfig, MT5Config): keys of a --model file, no flag.
FLAG_NAMES.update(
    (key, key)
    for key in (
        "n_layer", "n_head", "n_embd", "block_size", "padded_vocab_size", "dropout",
        "attn_dropout", "rotary_dim", "d_model", "d_kv", "d_ff", "num_heads", "dropout_rate",
    )
)  # fmt: skip


def flag_for(field: str) -> str:
    """The command-line flag of a config field: ``micro_batch_size`` -> ``--micro-batch-size``."""
    return FLAG_NAMES.get(field) or "--" + field.replace("_", "-")


def dataset_tokenizer_spec(prefix: str | os.PathLike, tokenizer: str | None) -> str:
    """The tokenizer spec for a dataset: `tokenizer` if given, else its build manifest's.

    Checks first that the prefix names a dataset, so a typo in it is reported as such and not as
    a missing manifest.
    """
    from dataprep.indexed.reader import check_dataset_files
    from dataprep.manifest import load_manifest, manifest_path

    check_dataset_files(prefix)
    if tokenizer:
        return tokenizer
    entry = (load_manifest(prefix) or {}).get("tokenizer")
    spec = entry.get("spec") if isinstance(entry, dict) else None
    if not spec:
        raise UsageError(
            f"{os.fspath(prefix)}: no build manifest ({manifest_path(prefix).name}) names the "
            "tokenizer; pass --tokenizer NAME_OR_PATH"
        )
    return spec
