"""`dataprep merge`: concatenate .bin/.idx datasets, like Megatron's tools/merge_datasets.py."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dataprep.errors import DataprepError, UsageError

HELP = "merge several .bin/.idx datasets into one (Megatron merge_datasets.py)"
DESCRIPTION = """\
Merge .bin/.idx datasets into one, in order. Each --input is either a dataset prefix (the path
without .bin/.idx) or a directory, which stands for every .bin/.idx pair in it, in sorted order
(as Megatron's tools/merge_datasets.py --input DIR). All inputs must share the token dtype and,
where they have build manifests, the tokenizer. The output is byte-identical to Megatron's
IndexedDatasetBuilder.add_index merge. Beside it go a merged manifest OUTPUT_PREFIX.json (sources,
summed counts and skips, the sources' input files concatenated) and OUTPUT_PREFIX.provenance.npy
(document -> input file and line, file indices rebased into the merged input list). Provenance is
written only when every source has it (datasets built by Megatron have none); otherwise the merge
still succeeds and a warning names the sources without it.

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
                raise UsageError(
                    f"{item}: directory holds no .bin/.idx datasets; name the dataset prefixes"
                )
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
    from dataprep.manifest import manifest_path, provenance_path

    prefixes = expand_inputs(args.input)
    out_dir = os.path.dirname(os.path.abspath(args.output_prefix))
    if not os.path.isdir(out_dir):
        raise UsageError(
            f"--output-prefix {args.output_prefix}: directory {out_dir} does not exist"
        )
    summary = merge_datasets(prefixes, args.output_prefix, overwrite=args.overwrite)
    for s in summary.sources:
        print(f"  {s.prefix}: {s.num_documents:,} documents, {s.num_tokens:,} tokens")
    print(
        f"merged {len(summary.sources)} datasets into {summary.output_prefix}.bin/.idx: "
        f"{summary.num_documents:,} documents, {summary.num_sequences:,} sequences, "
        f"{summary.num_tokens:,} tokens ({summary.dtype.name})"
    )
    print(f"manifest: {manifest_path(summary.output_prefix)}")
    if summary.provenance_written:
        print(f"provenance: {provenance_path(summary.output_prefix)}")
    else:
        lacking = summary.sources_without_provenance
        print(
            f"warning: no provenance written: {len(lacking)} of {len(summary.sources)} sources "
            "lack it, so documents of the merged dataset cannot be traced to their source lines:"
        )
        for s in lacking:
            print(f"  {s.prefix}: {s.provenance_problem}")
    return 0
