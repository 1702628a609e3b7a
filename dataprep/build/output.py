"""What a build writes for one JSON key, owned by one `KeyOutput`: the `.bin/.idx` writer, the
counts (`KeyStats`), the provenance rows `(input index, line)` of the written documents and, with
dedup, the de-duplicator that decides, in input order, which documents are left out.

Its four verbs: `write` (a task's documents), `append_part` (a partial dataset a Ray task wrote),
`checkpoint` (what resume state saves) and `finalize` (the dataset's sidecars: provenance,
duplicates and manifest). A Ray task writes its partial with the same class (`save_part`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dataprep.build.config import KeyStats
from dataprep.build.tasks import EncodedKey
from dataprep.fileio import save_npy_atomic
from dataprep.indexed.partial import WriterState, bin_tmp_path
from dataprep.indexed.writer import IndexedDatasetWriter
from dataprep.manifest import (
    Manifest,
    duplicates_path,
    provenance_path,
    write_manifest,
)

if TYPE_CHECKING:
    from dataprep.dedup import Deduplicator

DUPLICATE_REASONS = ("duplicate_exact", "duplicate_near")  # by Deduplicator pair kind 0 / 1


@dataclass(frozen=True, eq=False)
class KeyCheckpoint:
    """Where one key's output stood after the last finished input file (see `build.state`)."""

    stats: KeyStats
    provenance: np.ndarray  # int64 (documents, 2): input index, line
    writer: WriterState
    dedup: Deduplicator | None = None


def _rows(provenance: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(provenance) if provenance else np.zeros((0, 2), np.int64)


class KeyOutput:
    """The dataset of one JSON key being written, and everything recorded about it."""

    def __init__(
        self,
        key: str,
        prefix: str | os.PathLike,
        *,
        dtype: np.dtype,
        split_sentences: bool,
        keep_partial: bool = False,
        resume: KeyCheckpoint | None = None,
        dedup: Deduplicator | None = None,
        collect_dedup_keys: bool = False,
    ) -> None:
        """`keep_partial`: keep `.bin.tmp` on abort (for --resume); `resume`: continue from a
        checkpoint; `dedup`: decide duplicates here; `collect_dedup_keys`: keep the documents'
        keys for a later decision (a Ray task's partial, decided by the driver)."""
        self.key = key
        self.prefix = os.fspath(prefix)
        self.split_sentences = split_sentences
        self.writer = IndexedDatasetWriter(
            prefix,
            dtype=dtype,
            keep_partial=keep_partial,
            resume_from=resume.writer if resume is not None else None,
        )
        self.stats = KeyStats()
        if resume is not None:
            self.stats = dataclasses.replace(resume.stats, skipped=dict(resume.stats.skipped))
        self._provenance = [resume.provenance] if resume is not None else []
        self.dedup = resume.dedup if resume is not None else dedup
        self._dedup_keys: list | None = [] if collect_dedup_keys else None

    def skip(self, reason: str, count: int) -> None:
        if count:
            self.stats.skip(reason, count)

    def write(self, file_index: int, encoded: EncodedKey) -> tuple[int, int]:
        """Write one task's documents of this key; returns (documents, tokens) written."""
        s = self.stats
        self.skip("empty_after_tokenization", encoded.empty)
        if self.dedup is not None:
            mask = self.dedup.decide(file_index, encoded.lines, encoded.dedup)
            if not mask.all():
                self._count_removed(int((~mask).sum()), s.skipped)
                encoded = encoded.select(mask)
        elif self._dedup_keys is not None and encoded.dedup is not None:
            self._dedup_keys.append(encoded.dedup)
        s.max_token_id = max(s.max_token_id, encoded.max_id)
        if self.split_sentences:
            seq_pos = tok_pos = 0
            for nseq in encoded.seqs_per_doc.tolist():
                lengths = encoded.seq_lengths[seq_pos : seq_pos + nseq]
                n = int(lengths.sum())
                tokens = encoded.tokens[tok_pos : tok_pos + n]
                self.writer.add_document(tokens, sequence_lengths=lengths)
                seq_pos += nseq
                tok_pos += n
        else:
            self.writer.add_documents(encoded.tokens, encoded.doc_lengths)
        lines = encoded.lines
        self._provenance.append(np.stack([np.full(lines.size, file_index, np.int64), lines], 1))
        s.documents += encoded.documents
        s.sequences += int(encoded.seq_lengths.size)
        s.tokens += int(encoded.tokens.size)
        return encoded.documents, int(encoded.tokens.size)

    def append_part(self, file_index: int, part_dir: Path, part: KeyStats) -> tuple[int, int]:
        """Append the partial dataset a Ray task wrote (`save_part`) after everything written so
        far: its `.bin/.idx` with the writer's `add_index` (the merge of indexed/merge.py: `.bin`
        streamed, document indices rebased), then its provenance and counts. With dedup, its
        documents are decided here, in input order, and the duplicates left out of the copy.
        Returns (documents, tokens) appended."""
        prov = np.load(part_dir / f"{self.key}.provenance.npy")
        mask = None
        if self.dedup is not None:
            with np.load(part_dir / f"{self.key}.dedup.npz") as z:
                keys = {n: z[n] for n in z.files}
            mask = self.dedup.decide(file_index, prov[:, 1], keys)
        if mask is None or mask.all():
            self.writer.add_index(part_dir / self.key)
        else:
            part = self._copy_kept(part_dir / self.key, mask, part)
            prov = prov[mask]
        self._provenance.append(prov)
        self.stats.add(part)
        return part.documents, part.tokens

    def _count_removed(self, removed: int, skipped: dict[str, int]) -> None:
        """Count the last `removed` pairs the de-duplicator recorded under their kind."""
        for pair in self.dedup.pairs[len(self.dedup.pairs) - removed :]:
            reason = DUPLICATE_REASONS[pair[4]]
            skipped[reason] = skipped.get(reason, 0) + 1

    def _copy_kept(self, prefix: Path, mask: np.ndarray, part: KeyStats) -> KeyStats:
        """Copy the documents of a partial dataset where `mask` is set; returns its counts."""
        from dataprep.indexed import IndexedDatasetReader

        reader = IndexedDatasetReader(prefix)
        documents = np.asarray(reader.document_indices, np.int64)
        lengths = np.asarray(reader.sequence_lengths, np.int64)
        max_id, sequences, tokens = -1, 0, 0
        for i in np.flatnonzero(mask).tolist():
            seq = lengths[documents[i] : documents[i + 1]]
            ids = np.concatenate([reader[j] for j in range(documents[i], documents[i + 1])])
            self.writer.add_document(ids, sequence_lengths=seq.tolist())
            max_id = max(max_id, int(ids.max()) if ids.size else -1)
            sequences += seq.size
            tokens += ids.size
        del reader
        skipped = dict(part.skipped)
        self._count_removed(int((~mask).sum()), skipped)
        return KeyStats(int(mask.sum()), sequences, tokens, max_id, skipped)

    def checkpoint(self) -> KeyCheckpoint:
        """Flush the writer and return where this output stands."""
        prov = _rows(self._provenance)
        self._provenance = [prov]
        stats = dataclasses.replace(self.stats, skipped=dict(self.stats.skipped))
        return KeyCheckpoint(stats, prov, self.writer.state(), self.dedup)

    def close(self) -> None:
        """Finish the `.bin/.idx` under their real names."""
        self.writer.close()

    def abort(self) -> None:
        """Stop without finishing (a no-op once closed); `keep_partial` keeps `.bin.tmp`."""
        self.writer.abort()

    def discard(self) -> None:
        """Stop and remove every temporary file, `.bin.tmp` included."""
        self.writer.abort()
        bin_tmp_path(self.prefix).unlink(missing_ok=True)

    def finalize(self, manifest: Manifest) -> None:
        """After `close`: write the provenance, the duplicates (with dedup) and the manifest,
        `manifest` with this key's name, counts and dedup entry filled in."""
        save_npy_atomic(provenance_path(self.prefix), _rows(self._provenance))
        dedup = None
        if self.dedup is not None:
            save_npy_atomic(duplicates_path(self.prefix), self.dedup.pairs_array())
            dedup = self.dedup.describe(manifest.inputs, duplicates_path(self.prefix).name)
        s = self.stats
        manifest = dataclasses.replace(
            manifest,
            prefix=os.path.basename(self.prefix),
            json_key=self.key,
            documents=s.documents,
            sequences=s.sequences,
            tokens=s.tokens,
            max_token_id=s.max_token_id,
            skipped_documents=dict(s.skipped),
            provenance=provenance_path(self.prefix).name,
            dedup=dedup,
        )
        write_manifest(self.prefix, manifest)

    def save_part(self, directory: Path, dedup_mode: str | None) -> None:
        """A Ray task's partial (`prefix` is `{directory}/{key}`): close the dataset, then save
        the provenance and, with dedup, the documents' keys for the driver to decide."""
        self.close()
        save_npy_atomic(directory / f"{self.key}.provenance.npy", _rows(self._provenance))
        if dedup_mode:
            from dataprep.dedup import concat_keys

            keys = concat_keys(self._dedup_keys or [], dedup_mode)
            np.savez(directory / f"{self.key}.dedup.npz", **keys)
