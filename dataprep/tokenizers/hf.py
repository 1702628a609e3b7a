"""Any Hugging Face `tokenizer.json`, run by the `tokenizers` library.

Special tokens written in the text are ordinary text (`encode_special_tokens`), as for GPT-2: a
literal "</s>" in a document never becomes the eos id. Special ids come from the file's special
added tokens when present (`<|endoftext|>`, `</s>`, `<pad>`, ...), else None. Encoding never adds
the post-processor's special tokens: the build appends `eod_id` itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dataprep.errors import DataprepError
from dataprep.fileio import sha256_file
from dataprep.tokenizers.base import (
    TokenizerBase,
    check_id,
    check_ids,
    find_sentinels,
    sentinel_pieces,
)

# role -> spellings tried in order among the file's special tokens
SPECIAL_NAMES: dict[str, tuple[str, ...]] = {
    "eod": ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"),
    "eos": ("</s>", "<eos>", "<|endoftext|>", "<|end_of_text|>"),
    "pad": ("<pad>", "<|pad|>", "[PAD]"),
    "unk": ("<unk>", "<|unk|>", "[UNK]"),
    "bos": ("<s>", "<bos>", "<|startoftext|>", "<|begin_of_text|>"),
}


class HFTokenizer(TokenizerBase):
    """A `tokenizers.Tokenizer` loaded from a tokenizer.json."""

    kind = "hf-tokenizers"

    def __init__(self, tokenizer, *, spec: str, name: str, identity: str, where: str) -> None:
        self._tok = tokenizer  # tokenizers.Tokenizer
        tokenizer.encode_special_tokens = True  # split special-token text like any other text
        self.spec = spec
        self.name = name
        self.identity = identity
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        special = {
            t.content: i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special
        }
        for role, names in SPECIAL_NAMES.items():
            found = next((special[n] for n in names if n in special), None)
            setattr(self, f"{role}_id", found)
        if self.unk_id is None:
            unk = getattr(tokenizer.model, "unk_token", None)
            if unk is not None:
                self.unk_id = tokenizer.token_to_id(unk)
        pieces = sentinel_pieces(tokenizer.get_vocab(with_added_tokens=True).items())
        self.sentinel_ids = find_sentinels(pieces, self.vocab_size, where)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, *, spec: str | None = None, name: str | None = None
    ) -> HFTokenizer:
        import tokenizers

        path = Path(path)
        try:
            tok = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for a malformed file
            raise DataprepError(
                f"{path}: not a readable Hugging Face tokenizer.json ({e}); save one with "
                "tokenizers.Tokenizer.save() or pass a shipped name such as 'gpt2'"
            ) from e
        parent = path.parent.name
        return cls(
            tok,
            spec=spec or str(path),
            name=name or (parent if path.name == "tokenizer.json" else path.stem),
            identity=f"{cls.kind}:{path.name}={sha256_file(path)}",
            where=str(path),
        )

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], *, num_threads: int = 1) -> list[list[int]]:
        """Encode many texts. With num_threads=1 (default) no thread pool is used; with more, the
        library's own pool is used (its size follows RAYON_NUM_THREADS / TOKENIZERS_PARALLELISM)."""
        if num_threads <= 1:
            encode = self._tok.encode
            return [encode(t, add_special_tokens=False).ids for t in texts]
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(check_ids(self, ids), skip_special_tokens=False)

    def id_to_piece(self, i: int) -> str:
        return self._tok.id_to_token(check_id(self, i))
