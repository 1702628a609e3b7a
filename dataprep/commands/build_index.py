"""`dataprep build-index`: Megatron's tools/preprocess_data.py, on Pile/mC4/parquet, in parallel,
resumable."""

from __future__ import annotations

import argparse
import os
import sys

from dataprep.errors import ConfigError, DataprepError, UsageError, require_extra

HELP = "tokenize documents into Megatron .bin/.idx datasets (preprocess_data.py's job)"
DESCRIPTION = """\
Read documents (Pile *.jsonl.zst, mC4 c4-<lang>*.json.gz, plain *.jsonl[.gz|.zst], *.parquet),
tokenize them and write one Megatron indexed dataset per --json-keys key,
  {output_prefix}_{key}_{document|sentence}.bin/.idx
with a manifest {prefix}.json and per-document provenance {prefix}.provenance.npy beside it.
megatron-core's IndexedDataset / GPTDataset read the outputs unchanged.

examples:
  dataprep build-index --input pile/train/*.jsonl.zst --output-prefix out/pile --tokenizer gpt2 \\
      --append-eod --workers 8
  dataprep build-index --input 'mc4/c4-*.json.gz' --languages ja,ru --output-prefix out/mc4 \\
      --tokenizer mt5-toy --skip-bad-records

Malformed records stop the build with file:line by default (--skip-bad-records counts them
instead); corrupt compressed files likewise (--skip-bad-files). Outputs appear only when
complete; an interrupted build continues with --resume and ends with the same bytes as an
uninterrupted one."""

# Megatron --tokenizer-type values we can map onto our tokenizer specs
_MEGATRON_TYPES = (
    "GPT2BPETokenizer",
    "SentencePieceTokenizer",
    "GPTSentencePieceTokenizer",
    "HuggingFaceTokenizer",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input")
    g.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="input files, directories, globs (quote them) or @list.txt; read in sorted order",
    )
    g.add_argument(
        "--json-keys",
        nargs="+",
        default=["text"],
        metavar="KEY",
        help="record keys to tokenize, one output dataset per key (default: text)",
    )
    g.add_argument(
        "--format",
        dest="fmt",
        choices=["pile", "mc4", "jsonl", "parquet"],
        help="input format (default: detected from magic bytes and file name)",
    )
    g.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep only records whose metadata KEY equals VALUE, e.g. pile_set_name=Pile-CC "
        "(repeatable; several values for one key are OR-ed); the rest are counted as filtered",
    )
    g.add_argument(
        "--languages",
        metavar="LANG[,LANG]",
        help="mC4: keep only these languages (from c4-<lang> in the file name), e.g. ja,ru",
    )
    g.add_argument(
        "--skip-bad-records",
        action="store_true",
        help="count malformed records (bad JSON, missing/null/non-string text, bad UTF-8) as skips "
        "instead of stopping with file:line",
    )
    g.add_argument(
        "--skip-bad-files",
        action="store_true",
        help="count corrupt or truncated compressed files as skips instead of stopping",
    )

    g.add_argument(
        "--dedup",
        choices=["exact", "minhash"],
        help="leave out documents that repeat an earlier one: exact (same text after Unicode NFC "
        "and trimming leading/trailing whitespace) or minhash (near-duplicates: Jaccard of word "
        "5-grams >= --dedup-threshold, MinHash LSH); counted in the manifest, listed by "
        "`dataprep inspect --duplicates`",
    )
    g.add_argument(
        "--dedup-threshold",
        type=float,
        default=0.8,
        metavar="J",
        help="with --dedup minhash: the Jaccard similarity at which a document is a copy "
        "(default: 0.8)",
    )

    g = p.add_argument_group("tokenizer")
    g.add_argument(
        "--tokenizer",
        default=None,
        metavar="NAME_OR_PATH",
        help="gpt2 (shipped GPT-2 BPE), mt5-toy (shipped SentencePiece), a SentencePiece .model, "
        "a HF tokenizer.json, or a directory holding one (default: gpt2)",
    )
    g.add_argument(
        "--tokenizer-type",
        choices=_MEGATRON_TYPES,
        help="Megatron-style alternative to --tokenizer, with --vocab-file/--merge-file or "
        "--tokenizer-model",
    )
    g.add_argument("--vocab-file", help="Megatron-style: GPT-2 vocab.json (with --merge-file)")
    g.add_argument("--merge-file", help="Megatron-style: GPT-2 merges.txt (with --vocab-file)")
    g.add_argument(
        "--tokenizer-model", help="Megatron-style: SentencePiece model or HF tokenizer path"
    )

    g = p.add_argument_group("output")
    g.add_argument(
        "--output-prefix",
        required=True,
        help="outputs are {prefix}_{key}_{document|sentence}.bin/.idx (+ .json manifest)",
    )
    g.add_argument(
        "--append-eod",
        action="store_true",
        help="append the end-of-document id (GPT-2: 50256) to every document; a literal "
        "<|endoftext|> in the text stays ordinary text",
    )
    g.add_argument(
        "--split-sentences",
        action="store_true",
        help="one sequence per sentence (rule-based multilingual splitter), level 'sentence'",
    )
    g.add_argument(
        "--keep-newlines",
        action="store_true",
        help="with --split-sentences: keep the newline that ends a sentence",
    )
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g.add_argument(
        "--allow-empty",
        action="store_true",
        help="write a dataset even when filters, skips or empty inputs leave no documents "
        "(default: that is an error naming what removed them)",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted build (same arguments), skipping finished input files",
    )

    g = p.add_argument_group("execution")
    g.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="tokenizer processes (default: number of CPUs); the output bytes do not depend on it",
    )
    g.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: this machine, --workers processes (default); ray: one Ray task per input "
        "file or byte range, merged in input order (same bytes); needs pip install 'dataprep[ray]'",
    )
    g.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --executor ray: the cluster to join, e.g. 10.0.0.1:6379 or auto (default: start "
        "a local Ray with --workers CPUs); inputs and output must be on a filesystem every node "
        "sees at the same path",
    )
    g.add_argument(
        "--ray-split-mb",
        type=float,
        default=64,
        help="with --executor ray: plain (uncompressed) JSON Lines files larger than this are cut "
        "into byte ranges of whole lines, one task each (default: 64; compressed files and "
        "Parquet are one task per file)",
    )
    g.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="accepted for preprocess_data.py compatibility; dataprep needs no partitions",
    )
    g.add_argument(
        "--log-interval",
        type=int,
        default=10000,
        help="when stderr is not a terminal, log progress every N documents (default: 10000)",
    )
    g.add_argument(
        "--chunk-mb",
        type=float,
        default=0.5,
        help="MB of text per tokenizer task (default: 0.5; smaller tasks spend more time handing "
        "over, larger ones leave a worker idle longer at the end)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def tokenizer_spec(args: argparse.Namespace) -> str:
    """Resolve --tokenizer or Megatron's --tokenizer-type family into one load_tokenizer spec."""
    if args.tokenizer and args.tokenizer_type:
        raise UsageError("give either --tokenizer or --tokenizer-type, not both")
    if not args.tokenizer_type:
        return args.tokenizer or "gpt2"
    if args.tokenizer_type == "GPT2BPETokenizer":
        if not (args.vocab_file and args.merge_file):
            return "gpt2"
        from dataprep.fileio import sha256_file
        from dataprep.tokenizers.base import ASSETS_DIR

        shipped = ASSETS_DIR / "gpt2"
        for mine, theirs in (
            (args.vocab_file, shipped / "vocab.json"),
            (args.merge_file, shipped / "merges.txt"),
        ):
            if not os.path.exists(mine):
                raise UsageError(f"{mine}: no such file")
            if theirs.exists() and sha256_file(mine) != sha256_file(theirs):
                raise UsageError(
                    f"{mine} differs from the real GPT-2 files; put your vocab.json and "
                    "merges.txt in one directory and pass --tokenizer DIR"
                )
        return "gpt2"
    if not args.tokenizer_model:
        raise UsageError(f"--tokenizer-type {args.tokenizer_type} needs --tokenizer-model PATH")
    return args.tokenizer_model


def config_from_args(args: argparse.Namespace):
    from dataprep.build import BuildConfig

    filters: dict[str, list[str]] = {}
    for item in args.filter:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--filter {item!r}: expected KEY=VALUE, e.g. pile_set_name=Pile-CC")
        filters.setdefault(key, []).append(value)
    languages = None
    if args.languages:
        languages = tuple(x.strip() for x in args.languages.split(",") if x.strip())
    if args.ray_split_mb <= 0:
        raise UsageError(f"--ray-split-mb must be > 0, got {args.ray_split_mb}")
    if args.chunk_mb <= 0:
        raise UsageError(f"--chunk-mb must be > 0, got {args.chunk_mb}")
    if args.dedup == "minhash":
        require_extra("datasketch", "--dedup minhash", "dedup")  # --dedup exact needs nothing
    return BuildConfig(
        inputs=tuple(args.input),
        output_prefix=args.output_prefix,
        tokenizer=tokenizer_spec(args),
        json_keys=tuple(args.json_keys),
        append_eod=args.append_eod,
        split_sentences=args.split_sentences,
        keep_newlines=args.keep_newlines,
        workers=args.workers,
        fmt=args.fmt,
        filters=tuple((k, tuple(v)) for k, v in filters.items()),
        languages=languages,
        skip_bad_records=args.skip_bad_records,
        skip_bad_files=args.skip_bad_files,
        overwrite=args.overwrite,
        resume=args.resume,
        chunk_bytes=int(args.chunk_mb * (1 << 20)),
        progress=not args.no_progress,
        log_interval=args.log_interval,
        allow_empty=args.allow_empty,
        dedup=args.dedup,
        dedup_threshold=args.dedup_threshold,
        executor=args.executor,
        ray_address=args.ray_address,
        ray_split_bytes=int(args.ray_split_mb * (1 << 20)),
    )


def run(args: argparse.Namespace) -> int:
    from dataprep.build import build_index

    config = config_from_args(args)
    try:
        summary = build_index(config)
    except DataprepError as e:
        if config.work_dir.exists():
            note = (
                f"\n(the build stopped; finished input files are kept in {config.work_dir}: fix "
                "the input and rerun with --resume, or use --overwrite to start again)"
            )
            if isinstance(e, ConfigError):  # the CLI shows its template, with flags
                e.template += note.replace("{", "{{").replace("}", "}}")
            e.args = (f"{e}{note}",)
        raise
    except KeyboardInterrupt:
        if config.work_dir.exists():
            print(
                f"interrupted; rerun with --resume to continue from {config.work_dir}",
                file=sys.stderr,
            )
        raise
    print(summary.format())
    return 0
