"""`dataprep inspect PREFIX`: what is in a .bin/.idx dataset (ours or Megatron's)."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from dataprep.errors import UsageError

HELP = (
    "show counts, dtype, length percentiles, the build manifest, and decode documents of a dataset"
)
DESCRIPTION = """\
Summarise a Megatron indexed dataset {PREFIX}.bin/.idx: documents, sequences, tokens, dtype,
sequence and document length percentiles, and the build manifest written by build-index (inputs,
tokenizer, skips).

examples:
  dataprep inspect out/pile_text_document
  dataprep inspect out/pile_text_document --doc 0 --doc 17   # decode documents, show sources
  dataprep inspect out/pile_text_document --duplicates 3   # after build-index --dedup
  dataprep inspect out/pile_text_document --json"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prefix", metavar="PREFIX", help="dataset prefix (PREFIX.bin and PREFIX.idx)")
    p.add_argument(
        "--doc",
        type=int,
        action="append",
        default=[],
        metavar="I",
        help="decode document I (negative counts from the end; repeatable)",
    )
    p.add_argument(
        "--max-chars",
        type=int,
        default=2000,
        help="truncate decoded text to this many characters (default: 2000; 0 = no limit)",
    )
    p.add_argument("--tokenizer", help="tokenizer for decoding (default: from the build manifest)")
    p.add_argument("--manifest", action="store_true", help="print the whole build manifest")
    p.add_argument(
        "--duplicates",
        type=int,
        nargs="?",
        const=5,
        metavar="N",
        help="list N (default 5) documents that build-index --dedup left out, with the source "
        "file:line of both copies and the start of the kept one",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def summarize(reader) -> dict:
    seq = np.asarray(reader.sequence_lengths, dtype=np.int64)
    docs = np.asarray(reader.document_indices, dtype=np.int64)
    csum = np.concatenate([[0], np.cumsum(seq)])
    doc_lengths = csum[docs[1:]] - csum[docs[:-1]]
    from dataprep.report import length_percentiles as percentiles

    return {
        "prefix": reader.path_prefix,
        "dtype": np.dtype(reader.dtype).name,
        "documents": int(docs.size - 1),
        "sequences": int(seq.size),
        "tokens": int(seq.sum()),
        "bin_bytes": os.path.getsize(reader.path_prefix + ".bin"),
        "sequence_length": percentiles(seq),
        "document_length": percentiles(doc_lengths),
    }


def run(args: argparse.Namespace) -> int:
    from dataprep.indexed import IndexedDatasetReader
    from dataprep.manifest import load_manifest, provenance_path

    reader = IndexedDatasetReader(args.prefix)
    manifest = load_manifest(args.prefix)
    info = summarize(reader)
    documents = []
    if args.doc:
        from dataprep.tokenizers import load_tokenizer

        spec = args.tokenizer or (manifest or {}).get("tokenizer", {}).get("spec")
        if spec is None:
            raise UsageError(
                f"{args.prefix} has no build manifest; pass --tokenizer to decode documents"
            )
        tok = load_tokenizer(spec)
        prov = (
            np.load(provenance_path(args.prefix), mmap_mode="r")
            if provenance_path(args.prefix).exists()
            else None
        )
        for i in args.doc:
            n = info["documents"]
            j = i + n if i < 0 else i
            if not 0 <= j < n:
                raise UsageError(f"--doc {i}: the dataset has {n} documents (0..{n - 1})")
            ids = reader.get_document(j)
            entry = {
                "document": j,
                "num_tokens": int(ids.size),
                "ids": ids.tolist(),
                "text": tok.decode(ids),
            }
            if prov is not None and manifest is not None and j < len(prov):
                file_index, line = (int(x) for x in prov[j])
                entry["source"] = {"file": manifest["inputs"][file_index]["name"], "line": line}
            documents.append(entry)
    if args.json:
        out = dict(info, manifest=manifest)
        if documents:
            out["decoded"] = documents
        print(json.dumps(out, ensure_ascii=False))
        return 0
    print(
        f"{info['prefix']}: {info['documents']:,} documents, {info['sequences']:,} sequences, "
        f"{info['tokens']:,} tokens, dtype {info['dtype']}, .bin {info['bin_bytes'] / 1e6:,.1f} MB"
    )
    for name in ("sequence_length", "document_length"):
        p = info[name]
        if p:
            print(
                f"  {name.replace('_', ' ')} (tokens): "
                + ", ".join(f"{k} {v:,}" for k, v in p.items())
            )
    if manifest:
        tok = manifest.get("tokenizer", {})
        print(
            f"  tokenizer: {tok.get('spec')} (vocab {tok.get('vocab_size')}, {tok.get('identity')})"
        )
        print(
            f"  built {manifest.get('created')} from "
            f"{len(manifest.get('inputs', []))} input file(s); "
            f"largest token id {manifest.get('max_token_id')}"
        )
        skipped = manifest.get("skipped_documents") or {}
        if skipped:
            print("  skipped documents: " + ", ".join(f"{k}={v:,}" for k, v in skipped.items()))
        if args.manifest:
            print(json.dumps(manifest, indent=2, ensure_ascii=False))
    else:
        print("  no build manifest (not built by dataprep build-index)")
    if args.duplicates is not None:
        _show_duplicates(args, reader, manifest)
    for d in documents:
        src = f" from {d['source']['file']}:{d['source']['line']}" if "source" in d else ""
        text = d["text"]
        if args.max_chars and len(text) > args.max_chars:
            text = (
                text[: args.max_chars]
                + f"... [{len(d['text']) - args.max_chars:,} more characters]"
            )
        print(f"\n--- document {d['document']} ({d['num_tokens']:,} tokens){src}\n{text}")
    return 0


def _show_duplicates(args: argparse.Namespace, reader, manifest: dict | None) -> None:
    """The pairs build-index --dedup recorded: duplicate file:line = original file:line."""
    from dataprep.manifest import duplicates_path, provenance_path

    dedup = (manifest or {}).get("dedup")
    if not dedup:
        raise UsageError(
            f"{args.prefix} was built without --dedup: no duplicates were looked for; rebuild "
            "with build-index --dedup exact (or minhash)"
        )
    removed = dedup["removed"]
    print(
        f"  duplicates removed ({dedup['mode']}): {sum(removed.values()):,} "
        f"(exact {removed.get('exact', 0):,}, near {removed.get('near', 0):,})"
    )
    pairs = np.load(duplicates_path(args.prefix))[: max(args.duplicates, 0)]
    if not len(pairs):
        return
    inputs = manifest["inputs"]
    prov = np.load(provenance_path(args.prefix))
    tok = None
    spec = args.tokenizer or manifest.get("tokenizer", {}).get("spec")
    if spec is not None:
        from dataprep.tokenizers import load_tokenizer

        tok = load_tokenizer(spec)
    for f, line, of, oline, kind in pairs.tolist():
        found = np.flatnonzero((prov[:, 0] == of) & (prov[:, 1] == oline))
        kept = f"document {int(found[0])}" if found.size else "not in this dataset"
        print(
            f"  {('exact', 'near')[kind]}: {inputs[f]['name']}:{line} repeats "
            f"{inputs[of]['name']}:{oline} ({kept})"
        )
        if tok is not None and found.size:
            text = tok.decode(reader.get_document(int(found[0])))
            print(f"    {text[:100]!r}{'...' if len(text) > 100 else ''}")
