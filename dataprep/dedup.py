"""De-duplication of documents, decided in input order so the result does not depend on how the
work was spread (workers, Ray tasks): workers compute keys (`document_keys`), one
`Deduplicator` per dataset decides, in order, which documents are copies of earlier ones.

- exact: the key is a BLAKE2b-128 digest of the text after `normalize` (Unicode NFC, then
  leading and trailing whitespace trimmed; nothing more: case, inner spaces and punctuation
  count). A document whose key was seen is a duplicate of the first document with that key.
- minhash: near-duplicates by Jaccard similarity of word 5-gram sets (words: `str.split` of the
  normalized text; a text of fewer than 5 words is one shingle), estimated with datasketch's
  MinHash (NUM_PERM permutations, fixed seed: deterministic) and found with its MinHashLSH at
  `threshold`; an LSH candidate counts only if its estimated Jaccard (the share of equal
  signature values) is >= threshold, and the earliest such kept document is the original.
  Exact copies are found first (kind "exact"), the rest are kind "near".
Only kept documents enter the index, so a chain of small edits is cut where it drifts past the
threshold from every kept document.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dataprep.errors import ConfigError

MODES = ("exact", "minhash")
NUM_PERM = 128
SEED = 1
SCHEME = "affine32"  # datasketch 2's default hashing scheme, named so it cannot drift
SHINGLE_WORDS = 5
KINDS = ("exact", "near")  # column 4 of the pairs array: 0 exact, 1 near


_PERMUTATIONS = None


def _minhash(hashvalues: np.ndarray | None = None):
    """A datasketch MinHash with our parameters; the seeded permutations are drawn once per
    process and shared (drawing them is most of the cost of a new MinHash)."""
    global _PERMUTATIONS
    from datasketch import MinHash

    if _PERMUTATIONS is None:
        _PERMUTATIONS = MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME).permutations
    return MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME, permutations=_PERMUTATIONS,
                   hashvalues=hashvalues)  # fmt: skip


def normalize(text: str) -> str:
    """Unicode NFC, then leading and trailing whitespace removed."""
    return unicodedata.normalize("NFC", text).strip()


def shingles(text: str) -> list[bytes]:
    """The word 5-grams of a normalized text (one shingle for a text of fewer than 5 words)."""
    words = text.split()
    if len(words) <= SHINGLE_WORDS:
        return [" ".join(words).encode("utf-8")]
    return [
        " ".join(words[i : i + SHINGLE_WORDS]).encode("utf-8")
        for i in range(len(words) - SHINGLE_WORDS + 1)
    ]


def document_keys(texts: Sequence[str], mode: str) -> dict[str, np.ndarray]:
    """Per text: "exact" (n, 16) uint8 digests; with mode "minhash" also "minhash" (n, NUM_PERM)
    uint64 signatures."""
    norm = [normalize(t) for t in texts]
    exact = np.zeros((len(texts), 16), np.uint8)
    for i, t in enumerate(norm):
        exact[i] = np.frombuffer(
            hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest(), np.uint8
        )
    keys = {"exact": exact}
    if mode == "minhash":
        sigs = np.zeros((len(texts), NUM_PERM), np.uint64)
        for i, t in enumerate(norm):
            m = _minhash()
            m.update_batch(shingles(t))
            sigs[i] = m.hashvalues
        keys["minhash"] = sigs
    return keys


def concat_keys(parts: Sequence[dict[str, np.ndarray]], mode: str) -> dict[str, np.ndarray]:
    names = ["exact"] + (["minhash"] if mode == "minhash" else [])
    width = {"exact": (16, np.uint8), "minhash": (NUM_PERM, np.uint64)}
    return {
        n: np.concatenate([p[n] for p in parts])
        if parts
        else np.zeros((0, width[n][0]), width[n][1])
        for n in names
    }


class Deduplicator:
    """Decides, document by document in input order, what is a copy of a kept document."""

    def __init__(self, mode: str, threshold: float = 0.8) -> None:
        self.mode, self.threshold = mode, threshold
        self.exact: dict[bytes, int] = {}  # digest -> index into origin
        self.origin: list[tuple[int, int]] = []  # kept documents' (file index, line)
        self.exact_keys: list[np.ndarray] = []
        self.sigs: list[np.ndarray] = []
        self.pairs: list[tuple[int, int, int, int, int]] = []
        self.removed = dict.fromkeys(KINDS, 0)
        self.lsh = None
        if mode == "minhash":
            from datasketch import MinHashLSH

            try:
                self.lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
            except ValueError as e:  # datasketch finds no band layout for thresholds near 1
                raise ConfigError(
                    f"{{dedup_threshold}} {threshold}: MinHash LSH cannot work at it ({e}); "
                    "use a threshold of at most 0.95, or {dedup} exact for identical texts",
                    "dedup_threshold",
                    "dedup",
                ) from e

    def _keep(self, file_index: int, line: int, digest: np.ndarray, sig) -> None:
        index = len(self.origin)
        self.origin.append((file_index, line))
        self.exact[digest.tobytes()] = index
        self.exact_keys.append(digest)
        if self.lsh is not None:
            self.sigs.append(sig)
            self.lsh.insert(index, _minhash(sig))

    def _near(self, sig: np.ndarray) -> int | None:
        found = self.lsh.query(_minhash(sig))
        close = [i for i in found if np.mean(self.sigs[i] == sig) >= self.threshold]
        return min(close) if close else None

    def decide(self, file_index: int, lines: np.ndarray, keys: dict[str, np.ndarray]) -> np.ndarray:
        """A keep mask over the documents (their `lines` in input `file_index`)."""
        keep = np.ones(len(lines), bool)
        for i, line in enumerate(lines.tolist()):
            digest = keys["exact"][i]
            original, kind = self.exact.get(digest.tobytes()), 0
            sig = keys["minhash"][i] if self.lsh is not None else None
            if original is None and self.lsh is not None:
                original, kind = self._near(sig), 1
            if original is None:
                self._keep(file_index, line, digest, sig)
                continue
            keep[i] = False
            self.removed[KINDS[kind]] += 1
            self.pairs.append((file_index, line, *self.origin[original], kind))
        return keep

    def pairs_array(self) -> np.ndarray:
        return np.asarray(self.pairs, np.int64).reshape(-1, 5)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(
                f,
                origin=np.asarray(self.origin, np.int64).reshape(-1, 2),
                exact=np.asarray(self.exact_keys, np.uint8).reshape(-1, 16),
                sigs=np.asarray(self.sigs, np.uint64).reshape(-1, NUM_PERM),
                pairs=self.pairs_array(),
            )
        path.with_name(path.name + ".tmp").replace(path)

    def load(self, path: Path) -> None:
        """Rebuild the index saved by `save` (a resumed build continues with the same state)."""
        with np.load(path) as z:
            origin, exact, sigs, pairs = z["origin"], z["exact"], z["sigs"], z["pairs"]
        for i, (file_index, line) in enumerate(origin.tolist()):
            self._keep(file_index, line, exact[i], sigs[i] if self.lsh is not None else None)
        self.pairs = [tuple(p) for p in pairs.tolist()]
        for kind in pairs[:, 4].tolist():
            self.removed[KINDS[kind]] += 1

    def describe(self, inputs: Sequence[dict], duplicates_name: str, examples: int = 10) -> dict:
        """The manifest's "dedup" entry: mode, parameters, counts by kind ("removed"), the name
        of the pairs file and the first few pairs."""

        def where(f: int, line: int) -> dict:
            return {"file": inputs[f]["name"], "line": line}

        minhash = self.mode == "minhash"
        return {
            "mode": self.mode,
            "params": {  # how documents were compared (counts are in "removed")
                "normalization": "Unicode NFC, leading/trailing whitespace trimmed",
                "threshold": self.threshold if minhash else None,
                "shingles": f"word {SHINGLE_WORDS}-grams" if minhash else None,
                "num_perm": NUM_PERM if minhash else None,
                "seed": SEED if minhash else None,
            },
            "removed": dict(self.removed),
            "duplicates": duplicates_name,
            "examples": [
                {"kind": KINDS[k], "duplicate": where(f, line), "original": where(of, ol)}
                for f, line, of, ol, k in self.pairs[:examples]
            ],
        }
