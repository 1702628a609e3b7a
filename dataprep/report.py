"""`dataprep report`: one picture of a dataset, from its .bin/.idx, manifest and provenance.

`collect_report(prefix)` gathers the figures: document lengths; the mix by language (mC4: from the
input file names), by `pile_set_name` (Pile: the build keeps no per-document metadata, so the
inputs' records are re-read at the lines `{prefix}.provenance.npy` names, streaming, in constant
memory) or by input file; token-id frequencies (decoded with the manifest's tokenizer); skips by
reason and duplicates removed (manifest); and for a T5 tokenizer (sentinels) the achieved noise
density and span lengths of a sample of masked examples (`dataprep.sampling.build_t5_samples`).
`draw_report(data)` draws them on one matplotlib figure (Agg); `report_html` makes a self-contained
page. Panels that have nothing to show say why.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataprep.preview import escape_controls

log = logging.getLogger(__name__)

TOKEN_SAMPLE_BLOCK = 1 << 20  # tokens per block when counting ids over a sample of a large dataset


@dataclass
class ReportData:
    prefix: str
    manifest: dict[str, Any] | None
    num_documents: int
    num_tokens: int
    doc_lengths: np.ndarray  # (documents,) tokens per document
    tokenizer_name: str | None
    mix_by: str  # "language", "pile_set_name", "input file" or "" (unknown)
    mix: dict[str, tuple[int, int]]  # label -> (documents, tokens)
    mix_note: str  # why the mix is missing or partial ("" when complete)
    token_counts: np.ndarray  # counts per token id over `tokens_counted` tokens
    tokens_counted: int
    top_ids: list[tuple[int, int, str]]  # (id, count, decoded piece), most frequent first
    skipped: dict[str, int]  # reason -> records (files as "file: kind")
    duplicates: dict[str, int] | None  # what the manifest records of de-duplication, or None
    t5: dict[str, Any] | None = None  # densities, span_lengths, target density, mean span, ...
    t5_note: str = ""
    notes: list[str] = field(default_factory=list)


def length_percentiles(lengths: np.ndarray, qs=(0, 50, 90, 99, 100)) -> dict[str, int]:
    """{"p50": ...}: percentiles of token counts as `inspect` and `report` both print them, each
    an actual length (numpy's "nearest" method, no interpolation); {} for no lengths."""
    lengths = np.asarray(lengths)
    if lengths.size == 0:
        return {}
    values = np.percentile(lengths, list(qs), method="nearest")
    return {f"p{q}": int(v) for q, v in zip(qs, values, strict=True)}


def _document_lengths(reader) -> np.ndarray:
    seq = np.asarray(reader.sequence_lengths, dtype=np.int64)
    docs = np.asarray(reader.document_indices, dtype=np.int64)
    csum = np.concatenate([[0], np.cumsum(seq)])
    return csum[docs[1:]] - csum[docs[:-1]]


def count_token_ids(tokens: np.ndarray, *, max_tokens: int) -> tuple[np.ndarray, int]:
    """(counts per id, tokens counted): all tokens, or evenly spaced blocks adding to max_tokens."""
    n = int(tokens.size)
    if n == 0:
        return np.zeros(0, np.int64), 0
    if n <= max_tokens:
        starts = range(0, n, 16 * TOKEN_SAMPLE_BLOCK)
        block = 16 * TOKEN_SAMPLE_BLOCK
    else:
        blocks = max(1, max_tokens // TOKEN_SAMPLE_BLOCK)
        block = min(TOKEN_SAMPLE_BLOCK, max_tokens)
        starts = np.linspace(0, n - block, blocks).astype(np.int64).tolist()
    counts = np.zeros(0, np.int64)
    counted = 0
    for start in starts:
        part = np.bincount(np.asarray(tokens[start : start + block]))
        if part.size > counts.size:
            counts = np.pad(counts, (0, part.size - counts.size))
        counts[: part.size] += part
        counted += min(block, n - start)
    return counts, counted


def _mix(reader, manifest, doc_lengths: np.ndarray, *, reread: bool):
    """(mix_by, label -> (documents, tokens), note) from the manifest, provenance and inputs."""
    from dataprep.manifest import provenance_path
    from dataprep.readers.mc4 import mc4_language

    if manifest is None:
        return "", {}, "no build manifest: the sources of the documents are unknown"
    inputs = manifest.get("inputs") or []
    path = provenance_path(reader.path_prefix)
    if not inputs or not path.exists():
        return "", {}, f"the build recorded no inputs or no {path.name}"
    prov = np.load(path, mmap_mode="r")
    if prov.shape != (doc_lengths.size, 2):
        return "", {}, f"{path.name} has shape {prov.shape}, not ({doc_lengths.size}, 2)"
    file_index = np.asarray(prov[:, 0], dtype=np.int64)
    docs_per_file = np.bincount(file_index, minlength=len(inputs))
    tokens_per_file = np.bincount(file_index, weights=doc_lengths, minlength=len(inputs))
    languages = [mc4_language(x.get("name", "")) for x in inputs]
    if all(languages):
        by_file = zip(languages, docs_per_file, tokens_per_file, strict=False)
        return "language", _add_up(by_file), ""
    names = [x.get("name", f"input {i}") for i, x in enumerate(inputs)]
    pile = {i for i, x in enumerate(inputs) if docs_per_file[i] and _is_pile(x)}
    gone = [
        names[i]
        for i, x in enumerate(inputs)
        if docs_per_file[i] and not os.path.isfile(x.get("path") or "")
    ]
    gone_note = (
        f"{len(gone)} input(s) no longer found ({', '.join(gone[:3])}"
        f"{', ...' if len(gone) > 3 else ''}): their records' metadata cannot be read"
        if gone
        else ""
    )
    if not pile:
        by_file = _add_up(zip(names, docs_per_file, tokens_per_file, strict=False))
        return "input file", by_file, gone_note
    if not reread:
        note = "pile_set_name is not in the manifest; run without --no-reread to read the inputs"
        return "input file", _add_up(zip(names, docs_per_file, tokens_per_file, strict=False)), note
    mix: Counter = Counter()
    notes = [gone_note] if gone_note else []
    for i, entry in enumerate(inputs):
        if not docs_per_file[i]:
            continue
        if i not in pile:  # gone, or not a Pile file: the whole input under one label
            label = "(unknown)" if names[i] in gone else names[i]
            mix[label, 0] += int(docs_per_file[i])
            mix[label, 1] += int(tokens_per_file[i])
            continue
        rows = np.flatnonzero(file_index == i)
        lines = np.asarray(prov[rows, 1], dtype=np.int64)
        key = manifest.get("json_key") or "text"
        problem = _reread_set_names(entry, lines, doc_lengths[rows], mix, json_key=key)
        if problem:
            notes.append(f"{names[i]}: {problem}")
    labels = sorted({k for k, _ in mix})
    return (
        "pile_set_name",
        {k: (mix[k, 0], mix[k, 1]) for k in labels},
        "; ".join(notes),
    )


def _add_up(rows) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = {}
    for label, docs, tokens in rows:
        if docs:
            acc = out.setdefault(str(label), [0, 0])
            acc[0] += int(docs)
            acc[1] += int(tokens)
    return {k: (v[0], v[1]) for k, v in out.items()}


def _is_pile(entry: dict) -> bool:
    from dataprep.readers import detect_format

    path = entry.get("path")
    try:
        return bool(path) and os.path.isfile(path) and detect_format(path) == "pile"
    except Exception:  # an unreadable input: the mix falls back to input files
        return False


def _reread_set_names(
    entry: dict, lines: np.ndarray, lengths: np.ndarray, mix: Counter, *, json_key: str
) -> str:
    """Add the documents at `lines` (ascending) of one input to mix[(pile_set_name, 0 | 1)]
    (documents, tokens), streaming the file once; returns a note on what was not found."""
    from dataprep.readers import iter_documents

    path = entry["path"]
    unknown = "(unknown)"

    def add(label: str, k: int) -> None:
        mix[label, 0] += 1
        mix[label, 1] += int(lengths[k])

    if os.path.getsize(path) != entry.get("size", os.path.getsize(path)):
        for k in range(lines.size):
            add(unknown, k)
        return "changed since the build (size differs): mix unknown"
    want = missing = 0
    documents = iter_documents(
        path, fmt="pile", json_keys=(json_key,), on_error="skip", on_bad_file="skip"
    )
    log.info("reading %s again for pile_set_name (%d documents)", path, lines.size)
    from tqdm import tqdm

    bar = tqdm(
        total=lines.size,
        unit="doc",
        desc=f"pile_set_name of {os.path.basename(path)}",
        disable=not sys.stderr.isatty(),
        leave=False,
    )
    for doc in documents:
        bar.n = want
        if want % 4096 == 0:
            bar.refresh()
        while want < lines.size and lines[want] < doc.line:
            add(unknown, want)  # a line the reader skipped this time
            want, missing = want + 1, missing + 1
        if want == lines.size:
            break
        if lines[want] == doc.line:
            add(str(doc.metadata.get("pile_set_name", unknown)), want)
            want += 1
    bar.close()
    for k in range(want, lines.size):
        add(unknown, k)
    missing += lines.size - want
    return f"{missing} documents not found in it again" if missing else ""


def _skips(manifest) -> tuple[dict[str, int], dict[str, int] | None]:
    """(skips by reason, duplicates recorded or None) from the manifest.

    Skips: `read.skipped` and `skipped_documents` (records by reason), `read.files_skipped` (files
    by kind). Duplicates: a top-level `dedup` or `duplicates` entry (a count, or a dict whose
    numeric values are counts, e.g. {"method": "exact", "removed": 12}) and any skip reason
    naming "dup" (e.g. "exact_duplicate"), which is then shown as a duplicate, not a skip.
    """
    if manifest is None:
        return {}, None
    read = manifest.get("read") or {}
    skipped: Counter = Counter()
    for source in (read.get("skipped") or {}, manifest.get("skipped_documents") or {}):
        for reason, n in source.items():
            if isinstance(n, int | float):
                skipped[reason] += int(n)
    for kind, files in (read.get("files_skipped") or {}).items():
        skipped[f"files: {kind}"] += len(files) if isinstance(files, list) else int(files)
    duplicates = {k: n for k, n in skipped.items() if "dup" in k}
    for key in ("dedup", "duplicates"):
        value = manifest.get(key)
        if isinstance(value, dict) and isinstance(value.get("removed"), dict):
            # build-index --dedup: {"mode", "params", "removed": {"exact": n, "near": m}, ...}
            mode = value.get("mode", key)
            removed = value["removed"].items()
            # these counts are also skip reasons ("duplicate_exact"): show them once
            duplicates = {f"{k} (--dedup {mode})": int(v) for k, v in removed if v is not None}
            break
        elif isinstance(value, dict):
            duplicates.update(
                {k: int(v) for k, v in value.items() if isinstance(v, int | float) and v}
            )
        elif isinstance(value, int | float) and value:
            duplicates[key] = int(value)
    kept = {k: n for k, n in skipped.most_common() if "dup" not in k and n}
    return kept, duplicates or None


def _t5_stats(reader, tok, *, num_samples: int, seq_length: int, seed: int):
    from dataprep.sampling.t5_samples import build_t5_samples

    samples = build_t5_samples(
        reader,
        sentinel_ids=tok.sentinel_ids,
        eos_id=tok.eos_id,
        inputs_length=seq_length,
        seed=seed,
    )
    picks = np.unique(np.linspace(0, len(samples) - 1, min(num_samples, len(samples))).astype(int))
    densities, spans = [], []
    for k in picks:
        mask = samples[int(k)].noise_mask
        densities.append(float(mask.mean()))
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
        spans += (edges[1::2] - edges[::2]).tolist()
    return {
        "densities": np.array(densities),
        "span_lengths": np.array(spans, dtype=np.int64),
        "noise_density": samples.noise_density,
        "mean_noise_span_length": samples.mean_noise_span_length,
        "samples": int(picks.size),
        "of": len(samples),
        "seq_length": seq_length,
        "tokens_length": samples.tokens_length,
        "seed": seed,
    }


def collect_report(
    prefix: str | os.PathLike,
    *,
    tokenizer: str | None = None,
    reread: bool = True,
    max_tokens: int = 50_000_000,
    top: int = 20,
    t5_samples: int = 200,
    seq_length: int = 512,
    seed: int = 1234,
) -> ReportData:
    """Everything the report shows; reads the inputs again only for a Pile mix (see the module)."""
    from dataprep.indexed import IndexedDatasetReader
    from dataprep.manifest import load_manifest

    reader = IndexedDatasetReader(prefix)
    manifest = load_manifest(prefix)
    lengths = _document_lengths(reader)
    spec = tokenizer or ((manifest or {}).get("tokenizer") or {}).get("spec")
    tok, tok_note = None, "no tokenizer (no manifest; pass --tokenizer)"
    if spec:
        from dataprep.errors import DataprepError
        from dataprep.tokenizers import load_tokenizer

        try:
            tok = load_tokenizer(spec)
        except DataprepError as e:
            if tokenizer:  # the user's own --tokenizer: their mistake to fix
                raise
            tok_note = f"the manifest's tokenizer cannot be loaded ({e}); pass --tokenizer"
    mix_by, mix, mix_note = _mix(reader, manifest, lengths, reread=reread)
    counts, counted = count_token_ids(reader.tokens(), max_tokens=max_tokens)
    order = np.argsort(-counts, kind="stable")[:top]
    top_ids = [(int(i), int(counts[i]), _piece(tok, int(i))) for i in order if counts[i]]
    skipped, duplicates = _skips(manifest)
    data = ReportData(
        prefix=os.fspath(prefix),
        manifest=manifest,
        num_documents=int(lengths.size),
        num_tokens=int(lengths.sum()),
        doc_lengths=lengths,
        tokenizer_name=getattr(tok, "name", None),
        mix_by=mix_by,
        mix=mix,
        mix_note=mix_note,
        token_counts=counts,
        tokens_counted=counted,
        top_ids=top_ids,
        skipped=skipped,
        duplicates=duplicates,
    )
    if tok is None:
        data.t5_note = tok_note
    elif not getattr(tok, "sentinel_ids", None):
        data.t5_note = f"not a T5 dataset: tokenizer {tok.name} has no sentinels"
    else:
        from dataprep.errors import DataprepError

        try:
            data.t5 = _t5_stats(
                reader, tok, num_samples=t5_samples, seq_length=seq_length, seed=seed
            )
        except DataprepError as e:  # e.g. fewer tokens than one sample
            data.t5_note = str(e)
    return data


def _piece(tok, i: int) -> str:
    """A readable label for token id i: its decoded text with spaces and controls made visible."""
    if tok is None:
        return ""
    try:
        text = tok.decode([i])
    except Exception:  # an id outside the tokenizer's range
        return "?"
    if (not text or "\ufffd" in text) and hasattr(tok, "id_to_piece"):
        # SentencePiece's bare "▁", or part of a UTF-8 sequence: its bytes, \xNN where not text
        piece = tok.id_to_piece(i)
        raw = _piece_bytes(piece)
        text = piece if raw is None else raw.decode("utf-8", errors="backslashreplace")
    text = text.replace("\u2581", " ")  # SentencePiece's word-start mark is a space too
    text = text.replace(" ", "\u2423").replace("\n", "\\n").replace("\t", "\\t")
    return escape_controls(text)


def _piece_bytes(piece: str) -> bytes | None:
    """The bytes behind a piece that decodes to part of a character: SentencePiece's byte
    fallback `<0xE2>`, or a byte-level BPE piece ('âĢ' -> b'\xe2\x80'); None otherwise."""
    import re

    from dataprep.tokenizers.gpt2 import byte_level_bytes

    m = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece)
    if m:
        return bytes([int(m.group(1), 16)])
    return byte_level_bytes(piece)
