"""`dataprep train-tokenizer`: train a SentencePiece (mT5 convention) or byte-level BPE model."""

from __future__ import annotations

import argparse
import json

HELP = "train a SentencePiece (mT5 convention, with sentinels) or byte-level BPE tokenizer"
DESCRIPTION = """\
Train a tokenizer on documents read like build-index reads them (Pile *.jsonl.zst, mC4 *.json.gz,
*.jsonl[.gz|.zst], *.parquet; files, directories, globs or @list.txt).

  --type sentencepiece  writes OUTPUT.model (+ OUTPUT.vocab): pad 0, eos 1, unk 2, no bos, byte
                        fallback, and --sentinels pieces <extra_id_0> = vocab_size-1, descending
                        (mT5 convention); --vocab-size counts every id, sentinels included
  --type bpe            writes OUTPUT/tokenizer.json: GPT-2-style byte-level BPE,
                        <|endoftext|> = id 0

examples:
  dataprep train-tokenizer --input 'pipelines/toy/mc4/*.json.gz' --output out/spiece \\
      --vocab-size 8000
  dataprep train-tokenizer --type bpe --input pile/ --output out/bpe --vocab-size 32000

The result is loadable with --tokenizer OUTPUT.model (or OUTPUT/tokenizer.json); its description is
printed as JSON on stdout."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="input files, directories, globs (quote them) or @list.txt",
    )
    p.add_argument(
        "--output",
        required=True,
        help="sentencepiece: output prefix (writes OUTPUT.model); bpe: output directory",
    )
    p.add_argument(
        "--type",
        choices=["sentencepiece", "bpe"],
        default="sentencepiece",
        help="tokenizer kind (default: sentencepiece)",
    )
    p.add_argument("--vocab-size", type=int, required=True, help="total number of ids")
    p.add_argument(
        "--json-keys",
        nargs="+",
        default=["text"],
        metavar="KEY",
        help="record keys holding the text (default: text)",
    )
    p.add_argument(
        "--max-documents",
        type=int,
        default=None,
        help="train on at most this many documents (default: all)",
    )
    g = p.add_argument_group("sentencepiece")
    g.add_argument(
        "--model-type",
        choices=["unigram", "bpe"],
        default="unigram",
        help="SentencePiece algorithm (default: unigram, as mT5)",
    )
    g.add_argument(
        "--sentinels",
        type=int,
        default=100,
        help="number of <extra_id_N> pieces appended at the top (default: 100; 0 for none)",
    )
    g.add_argument(
        "--character-coverage",
        type=float,
        default=0.9995,
        help="share of characters covered by pieces; the rest use byte fallback (default: 0.9995)",
    )
    g.add_argument(
        "--input-sentence-size",
        type=int,
        default=0,
        help="sample this many lines for training (default: 0 = all)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed for that sampling (default: 0)")
    g.add_argument(
        "--num-threads",
        type=int,
        default=1,
        help="training threads; results depend on the count, 1 is reproducible (default: 1)",
    )
    g = p.add_argument_group("bpe")
    g.add_argument(
        "--min-frequency", type=int, default=2, help="least count for a merge (default: 2)"
    )


def run(args: argparse.Namespace) -> int:
    from dataprep.errors import UsageError
    from dataprep.tokenizers import load_tokenizer
    from dataprep.tokenizers.train import train_bpe, train_sentencepiece

    if args.vocab_size <= 0:
        raise UsageError(f"--vocab-size {args.vocab_size}: expected a positive number of ids")
    if args.max_documents is not None and args.max_documents <= 0:
        raise UsageError(f"--max-documents {args.max_documents}: expected a positive count")
    if args.type == "sentencepiece":
        if args.sentinels < 0:
            raise UsageError(f"--sentinels {args.sentinels}: expected 0 or more")
        path = train_sentencepiece(
            args.input,
            args.output,
            vocab_size=args.vocab_size,
            model_type=args.model_type,
            sentinels=args.sentinels,
            character_coverage=args.character_coverage,
            json_keys=args.json_keys,
            max_documents=args.max_documents,
            input_sentence_size=args.input_sentence_size,
            seed=args.seed,
            num_threads=args.num_threads,
        )
    else:
        path = train_bpe(
            args.input,
            args.output,
            vocab_size=args.vocab_size,
            min_frequency=args.min_frequency,
            json_keys=args.json_keys,
            max_documents=args.max_documents,
        )
    print(json.dumps(load_tokenizer(path).describe(), indent=2, ensure_ascii=False))
    return 0
