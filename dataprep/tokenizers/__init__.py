"""Tokenizers: `load_tokenizer(spec)` returns a `Tokenizer` (protocol in base.py)."""

from dataprep.tokenizers.base import SHIPPED, Tokenizer
from dataprep.tokenizers.load import load_tokenizer

__all__ = ["SHIPPED", "Tokenizer", "load_tokenizer"]
