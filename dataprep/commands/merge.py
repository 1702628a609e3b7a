"""`dataprep merge`: concatenate .bin/.idx datasets, like Megatron's tools/merge_datasets.py."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from dataprep import __version__
from dataprep.errors import DataprepError, UsageError

HELP = "merge several .bin/.idx datasets into one (Megatron merge_datasets.py)"
DESCRIPTION = """\
Merge .bin/.idx datasets into one, in order. Each --input is either a dataset prefix (the path
without .bin/.idx) or a directory, which stands for every .bin/.idx pair in it, in sorted order
(as Megatron's tools/merge_datasets.py --input DIR). All inputs must share the token dtype and,
where they have build manifests, the tokenizer. The output is byte-identical to Megatron's
IndexedDatasetBuilder.add_index merge; a merged manifest OUTPUT_PREFIX.json lists the sources and
the summed counts.

example:
  dataprep merge --input shards/ --output-prefix data/pile_text_document
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PREFIX_OR_DIR",
        help="dataset prefixes, or directories of .bin/.idx pairs (merged in sorted order)",
    )
    parser.add_argument("--output-prefix", required=True, help="output path without .bin/.idx")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing output dataset"
    )


def _strip_suffix(path: str) -> str:
    for suffix in (".bin", ".idx"):
        if path.endswith(suffix) and not os.path.exists(path + ".idx"):
            return path[: -len(suffix)]
    return path


def expand_inputs(inputs: list[str]) -> list[str]:
    """Dataset prefixes from --input values: directories expand to their sorted .bin/.idx pairs."""
    prefixes: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            directory = Path(item)
            stems = {p.name[:-4] for p in directory.iterdir() if p.suffix in (".bin", ".idx")}
            if not stems:
                raise DataprepError(f"{item}: directory holds no .bin/.idx datasets")
            for stem in sorted(stems):
                for suffix in (".bin", ".idx"):
                    if not (directory / (stem + suffix)).is_file():
                        raise DataprepError(
                            f"{directory / stem}: has a {'.idx' if suffix == '.bin' else '.bin'} "
                            "but "
                            f"no {suffix}; remove the stray file or complete the pair"
                        )
                prefixes.append(str(directory / stem))
        else:
            prefixes.append(_strip_suffix(item))
    return prefixes


def run(args: argparse.Namespace) -> int:
    from dataprep.indexed.merge import merge_datasets
    from dataprep.manifest import load_manifest, manifest_path, write_json_atomic

    prefixes = expand_inputs(args.input)
    out_dir = os.path.dirname(os.path.abspath(args.output_prefix))
    if not os.path.isdir(out_dir):
        raise UsageError(
            f"--output-prefix {args.output_prefix}: directory {out_dir} does not exist"
        )
    summary = merge_datasets(prefixes, args.output_prefix, overwrite=args.overwrite)
    source_manifests = [load_manifest(s.prefix) for s in summary.sources]
    manifest: dict[str, Any] = {
        "dataprep_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kind": "merge",
        "prefix": os.path.basename(summary.output_prefix),
        "dtype": summary.dtype.name,
        "documents": summary.num_documents,
        "sequences": summary.num_sequences,
        "tokens": summary.num_tokens,
        "sources": [
            {
                "prefix": s.prefix,
                "documents": s.num_documents,
                "sequences": s.num_sequences,
                "tokens": s.num_tokens,
                "has_manifest": m is not None,
            }
            for s, m in zip(summary.sources, source_manifests, strict=True)
        ],
    }
    if all(m is not None and "max_token_id" in m for m in source_manifests):
        manifest["max_token_id"] = max(m["max_token_id"] for m in source_manifests)
    for key in ("level", "append_eod", "json_key"):  # carried over when every source agrees
        values = {json.dumps(m.get(key)) if m else None for m in source_manifests}
        if len(values) == 1 and None not in values and source_manifests[0].get(key) is not None:
            manifest[key] = source_manifests[0][key]
    if summary.tokenizer is not None:
        manifest["tokenizer"] = summary.tokenizer
    write_json_atomic(manifest_path(args.output_prefix), manifest)
    for s in summary.sources:
        print(f"  {s.prefix}: {s.num_documents:,} documents, {s.num_tokens:,} tokens")
    print(
        f"merged {len(summary.sources)} datasets into {summary.output_prefix}.bin/.idx: "
        f"{summary.num_documents:,} documents, {summary.num_sequences:,} sequences, "
        f"{summary.num_tokens:,} tokens ({summary.dtype.name})"
    )
    return 0
