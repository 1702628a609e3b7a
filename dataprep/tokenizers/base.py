"""The Tokenizer protocol every stage codes against (`load_tokenizer(spec)` is in load.py).

Backends: GPT-2 byte-level BPE through tiktoken (`gpt2.py`), SentencePiece in the mT5 convention
(`spm.py`: pad 0, eos 1, unk 2, the sentinels at the top of the vocab) and any Hugging Face
`tokenizer.json` (`hf.py`). A spec is a short string ("gpt2", "mt5-toy" or a path) that a worker
process can reload cheaply, so the build passes `tokenizer.spec` to its workers instead of pickling
tokenizer objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dataprep.errors import DataprepError


def _assets_dir() -> Path:
    """tokenizer_assets/ of the checkout, or its copy installed as dataprep/_assets (wheels)."""
    checkout = Path(__file__).resolve().parents[2] / "tokenizer_assets"
    return checkout if checkout.is_dir() else Path(__file__).resolve().parents[1] / "_assets"


ASSETS_DIR = _assets_dir()

# shipped tokenizers: spec name -> what it is (for help and error messages)
SHIPPED: dict[str, str] = {
    "gpt2": "GPT-2 byte-level BPE, 50257 ids (tokenizer_assets/gpt2)",
    "mt5-toy": "SentencePiece unigram in the mT5 convention, 8000 ids with 100 sentinels "
    "(tokenizer_assets/mt5-toy)",
}

SPEC_CHOICES = (
    "'gpt2', 'mt5-toy', a SentencePiece *.model file, a Hugging Face tokenizer.json, "
    "or a directory holding tokenizer.json or vocab.json + merges.txt"
)


@runtime_checkable
class Tokenizer(Protocol):
    spec: str  # what load_tokenizer() was given, normalised; load_tokenizer(spec) reloads it
    name: str  # short human name
    vocab_size: int  # number of ids
    eod_id: int | None  # appended after each document by the build
    eos_id: int | None
    pad_id: int | None
    unk_id: int | None
    bos_id: int | None
    sentinel_ids: list[int]  # [<extra_id_0>, <extra_id_1>, ...] = vocab_size-1, vocab_size-2, ...
    identity: str  # kind + sha256 of the model files; recorded in the build manifest

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def encode_numpy(self, texts: Sequence[str]) -> list[np.ndarray]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def id_to_piece(self, i: int) -> str: ...

    def describe(self) -> dict[str, Any]: ...


class TokenizerBase:
    """Shared attribute defaults and `describe()` for the backends."""

    spec: str
    name: str
    kind: str
    vocab_size: int
    identity: str
    eod_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    unk_id: int | None = None
    bos_id: int | None = None
    sentinel_ids: list[int]

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "name": self.name,
            "kind": self.kind,
            "identity": self.identity,
            "vocab_size": self.vocab_size,
            "eod_id": self.eod_id,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "unk_id": self.unk_id,
            "bos_id": self.bos_id,
            "n_sentinels": len(self.sentinel_ids),
        }

    def encode_numpy(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encode many texts into integer arrays (the build's hot path); backends may override."""
        return [np.asarray(ids, dtype=np.int64) for ids in self.encode_batch(texts)]

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name} spec={self.spec!r} vocab_size={self.vocab_size}>"
        )


def check_id(tokenizer: TokenizerBase, i: int) -> int:
    if not 0 <= i < tokenizer.vocab_size:
        raise ValueError(
            f"token id {i} is out of range for {tokenizer.name} "
            f"(vocab_size {tokenizer.vocab_size}); was the data built with a different tokenizer?"
        )
    return i


def check_ids(tokenizer: TokenizerBase, ids: Sequence[int]) -> list[int]:
    """`ids` as a list of Python ints (numpy arrays accepted), each checked to be in range."""
    ids = [int(i) for i in ids]
    if ids:
        check_id(tokenizer, min(ids))
        check_id(tokenizer, max(ids))
    return ids


def find_sentinels(pieces: dict[int, int], vocab_size: int, where: str) -> list[int]:
    """Check T5 sentinels and return their ids in order [<extra_id_0>, <extra_id_1>, ...].

    `pieces` maps N -> id for every piece spelled `<extra_id_N>` (or `▁<extra_id_N>`). In the
    mT5 convention (HF `T5Tokenizer`'s extra ids) `<extra_id_N>` is id `vocab_size - 1 - N`.
    """
    if not pieces:
        return []
    ids = [pieces.get(n) for n in range(len(pieces))]
    expected = [vocab_size - 1 - n for n in range(len(pieces))]
    if ids != expected:
        bad = next(n for n in range(len(pieces)) if ids[n] != expected[n])
        found = "missing" if ids[bad] is None else f"at id {ids[bad]}"
        raise DataprepError(
            f"{where}: <extra_id_{bad}> is {found}, expected id {expected[bad]} "
            f"(vocab_size - 1 - {bad}): T5 span corruption needs <extra_id_0> .. "
            f"<extra_id_{len(pieces) - 1}> as the last ids, descending from vocab_size - 1; "
            "retrain with `dataprep train-tokenizer`, or append them to a model without sentinels "
            "with dataprep.tokenizers.train.append_sentinels"
        )
    return expected


SENTINEL_RE = re.compile(r"^\u2581?<extra_id_(\d+)>$")


def sentinel_number(piece: str) -> int | None:
    """N for a piece spelled `<extra_id_N>` or `▁<extra_id_N>`, else None."""
    m = SENTINEL_RE.match(piece)
    return int(m.group(1)) if m else None


def sentinel_pieces(
    pieces: Iterable[tuple[str, int]], *, stop_at_other: bool = False
) -> dict[int, int]:
    """{N: id} for the `<extra_id_N>` pieces among (piece, id) pairs, the first id of each N.

    With `stop_at_other`, stop at the first piece that is not a sentinel (for a top-down scan).
    """
    found: dict[int, int] = {}
    for piece, i in pieces:
        n = sentinel_number(piece)
        if n is None:
            if stop_at_other:
                break
            continue
        found.setdefault(n, i)
    return found
