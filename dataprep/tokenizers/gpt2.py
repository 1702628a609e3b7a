"""GPT-2 byte-level BPE through tiktoken, built offline from `vocab.json` + `merges.txt`.

tiktoken gives the same ids as Hugging Face `tokenizers` and `transformers` (the tests sweep every
code point and random strings against them) and is 4-7x faster (benchmarks/bench_tokenizers.py
prints the ratio). Special tokens are never parsed from text: a literal "<|endoftext|>" inside a
document is ordinary text, and the end of a document is marked only by the build appending `eod_id`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dataprep.errors import DataprepError
from dataprep.fileio import sha256_file
from dataprep.tokenizers.base import TokenizerBase, check_id, check_ids

# The GPT-2 pre-tokenizer regex (the same split as HF's ByteLevel pre-tokenizer with
# use_regex=True).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"
# sha256 of the real GPT-2 encoder.json / vocab.bpe (OpenAI's published files, identical to the
# Hugging Face gpt2 vocab.json / merges.txt); for exactly these files the merge-order check below
# is already done by a test, so loading skips replaying the 50k merges
GPT2_VOCAB_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_MERGES_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"


def _byte_level_table() -> dict[int, int]:
    """GPT-2's byte-to-unicode map, inverted: code point of a vocab.json character -> byte value."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    table = {b: b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[256 + shifted] = b
            shifted += 1
    return table


_BYTE_LEVEL = _byte_level_table()


def byte_level_bytes(piece: str) -> bytes | None:
    """The bytes a byte-level BPE piece stands for ('Ġâ' -> b' \xe2'); None if `piece` has a
    character outside the byte-level alphabet (not a byte-level piece)."""
    table = _BYTE_LEVEL
    if not all(ord(c) in table for c in piece):
        return None
    return bytes(table[ord(c)] for c in piece)


def ranks_from_vocab(vocab: dict[str, int]) -> dict[bytes, int]:
    """tiktoken's mergeable ranks straight from vocab.json (valid when ids follow merge order)."""
    table = _byte_level_table()
    return {
        piece.translate(table).encode("latin-1"): rank
        for piece, rank in vocab.items()
        if piece not in (ENDOFTEXT, "<|startoftext|>")
    }


class GPT2BPETokenizer(TokenizerBase):
    """Byte-level BPE with the GPT-2 split pattern; `eod_id` is the id of <|endoftext|>."""

    kind = "bytelevel-bpe"

    def __init__(
        self, encoding, *, vocab_json: Path, eod_id: int | None, spec: str, name: str, identity: str
    ) -> None:
        self._enc = encoding  # tiktoken.Encoding
        self._vocab_json = vocab_json
        self._pieces: list[str] | None = None  # id -> vocab.json key, loaded on first id_to_piece
        self.spec = spec
        self.name = name
        self.identity = identity
        self.vocab_size = encoding.n_vocab
        self.eod_id = eod_id
        self.eos_id = self.eod_id
        self.sentinel_ids = []

    @classmethod
    def from_files(
        cls,
        vocab_json: str | os.PathLike,
        merges_txt: str | os.PathLike,
        *,
        spec: str | None = None,
        name: str | None = None,
    ) -> GPT2BPETokenizer:
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        vocab_json, merges_txt = Path(vocab_json), Path(merges_txt)
        vocab_sha, merges_sha = sha256_file(vocab_json), sha256_file(merges_txt)
        try:
            with open(vocab_json, encoding="utf-8") as f:
                vocab = json.load(f)
        except (OSError, ValueError) as e:
            raise DataprepError(
                f"{vocab_json}: cannot read a byte-level BPE vocabulary: {e}"
            ) from e
        if (vocab_sha, merges_sha) == (GPT2_VOCAB_SHA256, GPT2_MERGES_SHA256):
            ranks = ranks_from_vocab(vocab)  # faster start-up than replaying the merges
        else:
            ranks = None
        try:
            # Passing the hashes makes tiktoken's path-keyed file cache revalidate, so an edited
            # file
            # at the same path is never served stale.
            ranks = ranks or data_gym_to_mergeable_bpe_ranks(
                str(merges_txt),
                str(vocab_json),
                vocab_bpe_hash=merges_sha,
                encoder_json_hash=vocab_sha,
            )
        except AssertionError as e:
            raise DataprepError(
                f"{vocab_json} and {merges_txt}: token ids are not in merge order, so this is "
                "not a GPT-2-style vocabulary tiktoken can run; convert it to a tokenizer.json "
                "and pass that"
            ) from e
        except (OSError, ValueError, KeyError) as e:
            raise DataprepError(
                f"{vocab_json}, {merges_txt}: cannot read a byte-level BPE: {e}"
            ) from e
        special = {ENDOFTEXT: vocab[ENDOFTEXT]} if ENDOFTEXT in vocab else {}
        encoding = tiktoken.Encoding(
            name or "bytelevel-bpe",
            pat_str=GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens=special,
        )
        identity = f"{cls.kind}:vocab.json={vocab_sha},merges.txt={merges_sha}"
        tok = cls(
            encoding,
            vocab_json=vocab_json,
            eod_id=special.get(ENDOFTEXT),
            spec=spec or str(vocab_json.parent),
            name=name or vocab_json.parent.name,
            identity=identity,
        )
        tok.files = (vocab_json, merges_txt)  # for an exact Hugging Face export
        return tok

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], *, num_threads: int = 1) -> list[list[int]]:
        """Encode many texts. One thread by default: the build runs one tokenizer per worker
        process, which measured faster than threads in one process (bench_tokenizers.py)."""
        if num_threads <= 1:
            encode = self._enc.encode_ordinary
            return [encode(t) for t in texts]
        return self._enc.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def encode_numpy(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encode many texts straight into uint32 arrays (no Python int lists: ~15-30% faster)."""
        encode = self._enc.encode_to_numpy
        # empty allowed/disallowed sets = ordinary text, exactly as encode_ordinary
        return [encode(t, allowed_special=set(), disallowed_special=()) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Decode to text; byte sequences that are not valid UTF-8 become U+FFFD, as in HF."""
        ids = check_ids(self, ids)
        return self._enc.decode(ids, errors="replace")

    def id_to_piece(self, i: int) -> str:
        """The vocab.json key of id `i` (byte-level alphabet, e.g. 'Ġworld' for ' world')."""
        check_id(self, i)
        if self._pieces is None:
            with open(self._vocab_json, encoding="utf-8") as f:
                vocab = json.load(f)
            pieces = [""] * self.vocab_size
            for piece, j in vocab.items():
                if 0 <= j < self.vocab_size:
                    pieces[j] = piece
            self._pieces = pieces
        return self._pieces[i]
