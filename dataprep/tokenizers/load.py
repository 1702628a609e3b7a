"""`load_tokenizer(spec)`: from a shipped name or a path to the implementation that reads it."""

from __future__ import annotations

import os
from pathlib import Path

from dataprep.errors import DataprepError, UsageError
from dataprep.tokenizers import base
from dataprep.tokenizers.base import SHIPPED, SPEC_CHOICES, Tokenizer
from dataprep.tokenizers.gpt2 import GPT2BPETokenizer
from dataprep.tokenizers.hf import HFTokenizer
from dataprep.tokenizers.spm import SentencePieceTokenizer


def load_tokenizer(spec: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer from a shipped name or a path; see SPEC_CHOICES for what is accepted.

    In a directory, tokenizer.json wins over vocab.json + merges.txt (which are read as GPT-2-style
    byte-level BPE with the GPT-2 split pattern, through tiktoken).
    """
    spec_str = os.fspath(spec)
    if spec_str in SHIPPED and not (base.ASSETS_DIR / spec_str).is_dir():
        raise DataprepError(
            f"the shipped tokenizer files are missing: no directory {base.ASSETS_DIR / spec_str}; "
            "dataprep reads them from its source checkout (install with pip install -e)"
        )
    if spec_str == "gpt2":
        d = base.ASSETS_DIR / "gpt2"
        return GPT2BPETokenizer.from_files(
            d / "vocab.json", d / "merges.txt", spec="gpt2", name="gpt2"
        )
    if spec_str == "mt5-toy":
        return SentencePieceTokenizer.from_file(
            base.ASSETS_DIR / "mt5-toy" / "spiece.model", spec="mt5-toy", name="mt5-toy"
        )
    path = Path(spec_str).expanduser()
    if not path.exists():
        raise UsageError(
            f"unknown tokenizer {spec_str!r}: not a shipped name and no such path; "
            f"expected {SPEC_CHOICES}"
        )
    path = path.absolute()
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return HFTokenizer.from_file(path / "tokenizer.json", spec=str(path))
        if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            return GPT2BPETokenizer.from_files(
                path / "vocab.json", path / "merges.txt", spec=str(path)
            )
        if (path / "spiece.model").is_file():
            return SentencePieceTokenizer.from_file(path / "spiece.model", spec=str(path))
        raise UsageError(
            f"tokenizer directory {path} holds none of tokenizer.json, vocab.json + merges.txt, "
            f"spiece.model; expected {SPEC_CHOICES}"
        )
    if path.suffix == ".model":
        return SentencePieceTokenizer.from_file(path, spec=str(path))
    if path.suffix == ".json":
        return HFTokenizer.from_file(path, spec=str(path))
    raise UsageError(
        f"tokenizer file {path} is neither a SentencePiece *.model nor a *.json; "
        f"expected {SPEC_CHOICES}"
    )
