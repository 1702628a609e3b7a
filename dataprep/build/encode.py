"""The task function shared by every executor (`run_task`): parse a block of JSON Lines and/or
tokenize texts for every JSON key, returning flat token arrays and lengths (`tasks.Encoded`).

A document longer than LONG_DOCUMENT_CHARS characters is tokenized in pieces cut before a space
that follows a non-space and precedes a non-space; GPT-2's pre-tokenizer never joins across such a
cut, so the ids are the same, while memory stays bounded (a 100 MB document would otherwise become
one 25M-element list).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dataprep.build.tasks import Encoded, EncodedKey, Task, TaskOptions, TextTask

LONG_DOCUMENT_CHARS = 4_000_000
LONG_DOCUMENT_PIECE = 1_000_000

WORKER_TOKENIZER = None


def tokenizer_for(spec: str):
    """This process's tokenizer for `spec`, loaded once (Ray workers run many tasks)."""
    global WORKER_TOKENIZER
    if WORKER_TOKENIZER is None or WORKER_TOKENIZER.spec != spec:
        init_worker(spec)
    return WORKER_TOKENIZER


def init_worker(spec: str) -> None:
    global WORKER_TOKENIZER
    from dataprep.tokenizers import load_tokenizer

    WORKER_TOKENIZER = load_tokenizer(spec)


def _split_long(text: str) -> list[str]:
    """Cut a very long text before spaces between two non-space characters (see module doc)."""
    pieces, start = [], 0
    while len(text) - start > LONG_DOCUMENT_PIECE:
        cut = start + LONG_DOCUMENT_PIECE
        while cut < len(text) and not (
            text[cut] == " "
            and not text[cut - 1].isspace()
            and cut + 1 < len(text)
            and not text[cut + 1].isspace()
        ):
            cut += 1
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _encode_texts(tokenizer, texts: list[str]) -> list[np.ndarray]:
    out: list[np.ndarray | None] = [None] * len(texts)
    short = [i for i, t in enumerate(texts) if len(t) <= LONG_DOCUMENT_CHARS]
    for i, ids in zip(short, tokenizer.encode_numpy([texts[i] for i in short]), strict=True):
        out[i] = ids
    for i, t in enumerate(texts):
        if out[i] is None:
            parts = tokenizer.encode_numpy(_split_long(t))
            out[i] = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return out  # type: ignore[return-value]


def encode_texts(
    texts: Mapping[str, list[str]],
    lines: Mapping[str, np.ndarray],
    options: TaskOptions,
    tokenizer=None,
) -> dict[str, EncodedKey]:
    """Tokenize the texts of one task for every key (see `EncodedKey`); documents that tokenize
    to nothing are counted (`empty`) and left out."""
    tok = tokenizer if tokenizer is not None else WORKER_TOKENIZER
    eod = tok.eod_id
    narrow = np.dtype(options.dtype)
    results = {}
    for key, key_texts in texts.items():
        if options.split_sentences:
            from dataprep.sentences import split_sentences

            per_doc = [split_sentences(t, keep_newlines=options.keep_newlines) for t in key_texts]
            flat = [s for doc in per_doc for s in doc]
            encoded = _encode_texts(tok, flat)
            seq_lists, pos = [], 0
            for doc in per_doc:
                seqs = [e for e in encoded[pos : pos + len(doc)] if e.size]
                pos += len(doc)
                seq_lists.append(seqs)
        else:
            seq_lists = [[e] if e.size else [] for e in _encode_texts(tok, key_texts)]
        written = np.ones(len(key_texts), bool)
        arrays, seq_lengths, seqs_per_doc = [], [], []
        for i, seqs in enumerate(seq_lists):
            if not seqs:
                written[i] = False
                continue
            if options.append_eod:
                seqs[-1] = np.append(seqs[-1], eod)
            arrays.extend(seqs)
            seq_lengths.extend(s.size for s in seqs)
            seqs_per_doc.append(len(seqs))
        tokens = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        max_id = int(tokens.max()) if tokens.size else -1
        fits = 0 <= max_id <= np.iinfo(narrow).max
        if fits and (tokens.dtype.kind == "u" or tokens.min() >= 0):
            # cast here, in parallel, and ship 2 bytes a token instead of 4; ids that do not fit
            # stay as they are so that the writer reports them
            tokens = tokens.astype(narrow)
        seq_lengths_a = np.asarray(seq_lengths, dtype=np.int64)
        seqs_per_doc_a = np.asarray(seqs_per_doc, dtype=np.int64)
        bounds = np.concatenate([[0], np.cumsum(seqs_per_doc_a)])
        csum = np.concatenate([[0], np.cumsum(seq_lengths_a)])
        dedup = None
        if options.dedup:
            from dataprep.dedup import document_keys

            dedup = {n: a[written] for n, a in document_keys(key_texts, options.dedup).items()}
        results[key] = EncodedKey(
            tokens=tokens,
            doc_lengths=csum[bounds[1:]] - csum[bounds[:-1]],
            seq_lengths=seq_lengths_a,
            seqs_per_doc=seqs_per_doc_a,
            lines=np.asarray(lines[key], dtype=np.int64)[written],
            max_id=max_id,
            text_bytes=sum(len(t.encode("utf-8")) for t in key_texts),
            empty=int(written.size - written.sum()),
            dedup=dedup,
        )
    return results


def group_by_key(docs, keys: Sequence[str]):
    """Texts and lines per key of `docs`; empty texts are left out and counted per key."""
    texts: dict[str, list[str]] = {k: [] for k in keys}
    lines: dict[str, list[int]] = {k: [] for k in keys}
    empty = dict.fromkeys(keys, 0)
    for doc in docs:
        for key in keys:
            text = doc.fields[key]
            if not text:
                empty[key] += 1
                continue
            texts[key].append(text)
            lines[key].append(doc.line)
    return texts, lines, empty


def run_task(task: Task, tokenizer=None) -> Encoded:
    """One unit of work: a block of JSON Lines to parse (`BlockTask`) or texts already read
    (`TextTask`), tokenized for every key (see `encode_texts`)."""
    if isinstance(task, TextTask):
        keys = encode_texts(task.texts, task.lines, task.options, tokenizer)
        return Encoded(keys, task.empty_text)
    from dataprep.readers import CollectedRecordErrors, ReadStats

    parser = task.parser
    stats = ReadStats()
    bad = CollectedRecordErrors(parser.path, task.options.on_error)
    docs = parser.documents(task.first_line, task.data, stats=stats, bad=bad)
    texts, lines, empty = group_by_key(docs, parser.json_keys)
    keys = encode_texts(texts, lines, task.options, tokenizer)
    return Encoded(keys, empty, read=stats, bad=bad)
