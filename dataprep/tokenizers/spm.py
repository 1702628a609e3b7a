"""SentencePiece models in the mT5 convention (google-research/multilingual-t5's vocabularies).

mT5: pad 0, eos 1, unk 2, no bos; the 100 sentinels are pieces of the model itself, `<extra_id_0>`
is the last id (vocab_size - 1) and `<extra_id_N>` is vocab_size - 1 - N. Sentinels are recognised
by spelling (`<extra_id_N>` or `▁<extra_id_N>`) and checked to descend from the top; a model without
any (a plain T5 `spiece.model`, or a GPT-style model) has `sentinel_ids == []`, and T5 masking
refuses it.
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


def _id_or_none(i: int) -> int | None:
    return None if i < 0 else i  # SentencePiece reports a disabled special piece as -1


class SentencePieceTokenizer(TokenizerBase):
    """A SentencePiece model; `eod_id` is its eos (1 in the mT5 convention)."""

    kind = "sentencepiece"

    def __init__(self, processor, *, spec: str, name: str, identity: str, where: str) -> None:
        self._sp = processor  # sentencepiece.SentencePieceProcessor
        self.spec = spec
        self.name = name
        self.identity = identity
        self.vocab_size = processor.get_piece_size()
        self.pad_id = _id_or_none(processor.pad_id())
        self.eos_id = _id_or_none(processor.eos_id())
        self.unk_id = _id_or_none(processor.unk_id())
        self.bos_id = _id_or_none(processor.bos_id())
        self.eod_id = self.eos_id
        top_down = ((processor.id_to_piece(i), i) for i in range(self.vocab_size - 1, -1, -1))
        # sentinels sit at the top of the vocabulary: scan down to the first other piece
        pieces = sentinel_pieces(top_down, stop_at_other=True)
        if not pieces:
            # a sentinel elsewhere means a non-mT5 layout (e.g. ascending after the base vocab)
            everywhere = ((processor.id_to_piece(i), i) for i in range(self.vocab_size))
            pieces = sentinel_pieces(everywhere)
        self.sentinel_ids = find_sentinels(pieces, self.vocab_size, where)

    @classmethod
    def from_file(
        cls, model_path: str | os.PathLike, *, spec: str | None = None, name: str | None = None
    ) -> SentencePieceTokenizer:
        import sentencepiece

        model_path = Path(model_path)
        try:
            processor = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
        except (OSError, RuntimeError) as e:
            raise DataprepError(
                f"{model_path}: not a readable SentencePiece model ({e}); pass a *.model file "
                "written by SentencePieceTrainer"
            ) from e
        tok = cls(
            processor,
            spec=spec or str(model_path),
            name=name or model_path.stem,
            identity=f"{cls.kind}:{model_path.name}={sha256_file(model_path)}",
            where=str(model_path),
        )
        tok.model_file = model_path  # for an exact Hugging Face export
        return tok

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str], *, num_threads: int = 1) -> list[list[int]]:
        """Encode many texts; one thread by default (the build runs one tokenizer per process)."""
        return self._sp.encode(list(texts), num_threads=num_threads)

    def decode(self, ids: Sequence[int]) -> str:
        """Decode to text; sentinels show as `<extra_id_N>`, byte-fallback pieces as their bytes."""
        return self._sp.decode(check_ids(self, ids))

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(check_id(self, i))
