"""`dataprep preview-samples`: the GPT training samples Megatron would draw, decoded for a person.

Samples come from `dataprep.sampling.build_gpt_samples` (megatron-core order), so sample
k here is sample k of a megatron-core GPTDataset / BlendedDataset with the same data path, split,
seed, sequence length and sample count. Document boundaries inside a sample are marked.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from dataprep.errors import UsageError

HELP = (
    "show GPT training samples (Megatron order, splits, blends) decoded, with document boundaries"
)
DESCRIPTION = """\
Show the GPT training samples megatron-core's GPTDataset (or BlendedDataset for a weighted
--data-path) would give for the same data, split, seed, sequence length and sample count: each
sample is seq-length+1 token ids (inputs plus the last label), decoded, with the documents it is cut
from. The sample count the training run asks for (--train-samples) sets how many epochs are built
and so the order; it defaults to --start + --num-samples. Indices are cached as .npy files (in
"<data dir>/dataprep-cache" unless --cache-dir is given). Colour on a terminal, with document
boundaries shown as |doc N|; plain markers when piped; --json for one object per sample.

examples:
  dataprep preview-samples out/pile_text_document
  dataprep preview-samples out/pile_text_document --seq-length 2048 --start 1000 --num-samples 2
  dataprep preview-samples --data-path 0.7 out/pile_text_document 0.3 out/mc4_en_text_document
  dataprep preview-samples --data-path out/c4_ja_text_document out/c4_ru_text_document --alpha 0.3
  dataprep preview-samples out/pile_text_document --split-name valid --json | jq .documents"""

DEFAULT_SEQ_LENGTH = 512
BOUNDARY = "\u2502"  # the box-drawing bar around "doc N" markers


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "prefix",
        nargs="?",
        metavar="PREFIX",
        help="dataset prefix (PREFIX.bin/.idx); or use --data-path for a blend",
    )
    p.add_argument(
        "--data-path",
        nargs="+",
        metavar="WORD",
        help="Megatron --data-path: PREFIX, WEIGHT PREFIX pairs, or several prefixes",
    )
    p.add_argument(
        "--alpha",
        type=float,
        metavar="A",
        help="blend several unweighted prefixes by their split's tokens to the power A, as mT5 "
        "sampled its languages (A=0.3; 1: by size, 0: uniform); the header prints the realised mix",
    )
    p.add_argument(
        "--seq-length",
        type=int,
        default=DEFAULT_SEQ_LENGTH,
        metavar="L",
        help=f"tokens per sample, as Megatron --seq-length (default: {DEFAULT_SEQ_LENGTH})",
    )
    p.add_argument(
        "--num-samples", type=int, default=3, metavar="N", help="samples to show (default: 3)"
    )
    p.add_argument("--start", type=int, default=0, metavar="K", help="first sample (default: 0)")
    p.add_argument(
        "--train-samples",
        type=int,
        metavar="N",
        help="samples the training run requests for this split (sets epochs and order; "
        "default: --start + --num-samples)",
    )
    p.add_argument("--seed", type=int, default=1234, help="Megatron --seed (default: 1234)")
    p.add_argument(
        "--split", default="969,30,1", help="train,valid,test weights (default: 969,30,1)"
    )
    p.add_argument(
        "--split-name",
        choices=["train", "valid", "test"],
        default="train",
        help="which split to show (default: train)",
    )
    p.add_argument(
        "--tokenizer",
        metavar="SPEC",
        help="tokenizer name or path (default: the one in the dataset's build manifest)",
    )
    p.add_argument("--cache-dir", metavar="DIR", help="where to cache the sample indices")
    for flag, what in (("--eod-mask-loss", "no loss on the target after an EOD input"),
                       ("--reset-position-ids", "positions restart after each EOD"),
                       ("--reset-attention-mask", "no attention across documents")):  # fmt: skip
        p.add_argument(flag, action="store_true", help=f"Megatron's flag ({what}); adds "
                       "loss_mask, position_ids and attention_mask to --json records")  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON object per sample, one per line")
    color = p.add_mutually_exclusive_group()
    color.add_argument(
        "--color",
        dest="color",
        action="store_true",
        default=None,
        help="colour even when not writing to a terminal",
    )
    color.add_argument(
        "--no-color", dest="color", action="store_false", help="plain text, no ANSI codes"
    )


def _data_path(args: argparse.Namespace) -> list[str]:
    if bool(args.prefix) == bool(args.data_path):
        raise UsageError("give either PREFIX or --data-path (one of them, not both)")
    return [args.prefix] if args.prefix else list(args.data_path)


def _check_args(args: argparse.Namespace) -> None:
    if args.seq_length < 1:
        raise UsageError(f"--seq-length {args.seq_length}: expected an integer >= 1")
    if args.num_samples < 1:
        raise UsageError(f"--num-samples {args.num_samples}: expected an integer >= 1")
    if args.start < 0:
        raise UsageError(f"--start {args.start}: expected an integer >= 0")
    if args.train_samples is not None and args.train_samples < 1:
        raise UsageError(f"--train-samples {args.train_samples}: expected an integer >= 1")


def _locate(samples: Any, k: int) -> tuple[Any, int, int | None]:
    """(GPTSamples holding sample k, its number there, dataset id in the blend or None)."""
    from dataprep.sampling import BlendedSamples

    if isinstance(samples, BlendedSamples):
        d, j = samples.locate(k)
        return samples.datasets[d], j, d
    return samples, k, None


def sample_record(samples: Any, k: int, tok: Any, *, color: bool) -> dict[str, Any]:
    """The JSON record of sample k: index, tokens, text, documents (+ styled text if colouring)."""
    from dataprep.preview import decode_pieces, escape_controls, highlight, span_style

    ds, j, d = _locate(samples, k)
    tokens = np.asarray(ds[j])
    pieces = ds.sample_documents(j)
    ids = [int(t) for t in tokens]
    ends = np.cumsum([stop - start for _, start, stop in pieces]).tolist()
    starts = [0, *ends[:-1]]
    # decode_pieces returns one text per distinct cut interval; empty pieces get ""
    bounds = sorted({0, len(ids), *(c for c in ends if 0 < c < len(ids))})
    by_start = dict(zip(bounds, decode_pieces(tok.decode, ids, bounds[1:-1]), strict=False))
    texts = [by_start.get(a, "") if b > a else "" for a, b in zip(starts, ends, strict=True)]
    record: dict[str, Any] = {
        "index": k,
        "tokens": ids,
        "text": "".join(texts),
        "documents": [{"document": doc, "start": start, "end": end} for doc, start, end in pieces],
    }
    if d is not None:
        record["dataset"] = d
        record["dataset_prefix"] = ds.prefix
        record["dataset_sample"] = j
    shown = []
    for n, ((doc, _, _), text) in enumerate(zip(pieces, texts, strict=True)):
        shown.append(highlight(f"{BOUNDARY}doc {doc}{BOUNDARY}", "bold reverse", color=color))
        shown.append(highlight(escape_controls(text), span_style(n), color=color))
    record["_shown"] = "".join(shown)
    return record


def _header(samples: Any, args: argparse.Namespace, tok: Any) -> str:
    from dataprep.sampling import BlendedSamples

    if isinstance(samples, BlendedSamples):
        mix = ", ".join(
            f"{d.prefix} {w:.3f}"
            for d, w in zip(samples.datasets, samples.realised_weights, strict=True)
        )
        what = f"blend of {len(samples.datasets)} datasets ({mix})"
    else:
        beg, end = samples.sequence_range
        what = (
            f"{samples.prefix}: sequences [{beg}, {end}), {samples.tokens_per_epoch} tokens, "
            f"{samples.num_epochs} epoch(s)"
        )
    return (
        f"{what}; split {args.split!r} {args.split_name}: {len(samples)} samples of "
        f"{args.seq_length}+1 tokens, seed {args.seed} (tokenizer {getattr(tok, 'name', '?')})"
    )


def run(args: argparse.Namespace) -> int:
    from dataprep.commands.common import dataset_tokenizer_spec
    from dataprep.indexed.reader import check_dataset_files
    from dataprep.preview import highlight, use_color
    from dataprep.sampling import build_gpt_samples, parse_data_path
    from dataprep.tokenizers import load_tokenizer

    _check_args(args)
    words = _data_path(args)
    prefixes, weights = parse_data_path(words)
    if args.alpha is not None:
        if weights is not None:
            raise UsageError("--alpha weights the datasets itself: give prefixes without weights")
        if not 0 <= args.alpha <= 1:
            raise UsageError(f"--alpha {args.alpha}: expected a number in [0, 1]")
    for prefix in prefixes:
        check_dataset_files(prefix)  # every prefix names a dataset, before any work
    spec = dataset_tokenizer_spec(prefixes[0], args.tokenizer)
    tok = load_tokenizer(spec)
    train_samples = args.train_samples or args.start + args.num_samples
    samples = build_gpt_samples(
        words,
        seq_length=args.seq_length,
        num_samples=train_samples,
        split=args.split,
        split_name=args.split_name,
        seed=args.seed,
        cache_dir=args.cache_dir,
        alpha=args.alpha,
    )
    if args.start >= len(samples):
        raise UsageError(
            f"--start {args.start} is past the last sample: the {args.split_name} split gives "
            f"{len(samples)} samples; raise --train-samples or lower --start"
        )
    stop = min(args.start + args.num_samples, len(samples))
    color = False if args.json else use_color(sys.stdout, args.color)
    if not args.json:
        print(highlight(_header(samples, args, tok), "bold", color=color))
    packed = args.eod_mask_loss or args.reset_position_ids or args.reset_attention_mask
    if packed and tok.eod_id is None:
        raise UsageError(f"the packed-data flags need an EOD id; tokenizer {tok.name} has none")
    for k in range(args.start, stop):
        record = sample_record(samples, k, tok, color=color)
        shown = record.pop("_shown")
        if packed:
            from dataprep.sampling import packed_masks

            masks = packed_masks(np.asarray(record["tokens"][:-1]), tok.eod_id,
                                 eod_mask_loss=args.eod_mask_loss,
                                 reset_position_ids=args.reset_position_ids,
                                 reset_attention_mask=args.reset_attention_mask)  # fmt: skip
            record["loss_mask"] = masks.loss_mask.tolist()
            record["position_ids"] = masks.position_ids.tolist()
            record["attention_mask"] = masks.attention_mask().astype(int).tolist()
        if args.json:
            print(json.dumps(record, ensure_ascii=False))
            continue
        docs = " ".join(f"{x['document']}[{x['start']}:{x['end']}]" for x in record["documents"])
        where = f" from dataset {record['dataset']}" if "dataset" in record else ""
        print()
        print(highlight(f"--- sample {k}{where}: documents {docs}", "bold", color=color))
        print(shown)
    return 0
