"""`dataprep report PREFIX`: one picture of a dataset (dataprep/report.py, report_figure.py)."""

from __future__ import annotations

import argparse
import os

from dataprep.errors import DataprepError, UsageError

HELP = "draw a dataset as one picture: lengths, mix, token ids, skips, duplicates, T5 masking"
DESCRIPTION = """\
Draw one PNG of a dataset built by build-index: the document-length histogram (tokens, log scale),
the mix by language (mC4) or pile_set_name (Pile) in documents and tokens, the most frequent token
ids decoded with the dataset's tokenizer and the rank-frequency curve, skipped records by reason
and duplicates removed (from the manifest), and for a T5 tokenizer (with sentinels) the achieved
noise density and noise-span lengths of a sample of masked examples. --html writes the same
figure, the numbers and the manifest as one self-contained page.

The Pile's pile_set_name is not kept in the dataset: it is read again from the input files at the
lines the provenance names (streaming, constant memory; --no-reread skips this and shows the mix
by input file instead).

examples:
  dataprep report out/pile_text_document --output docs/report-pile.png
  dataprep report out/mc4_text_document --html out/mc4_report.html"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prefix", metavar="PREFIX", help="dataset prefix (PREFIX.bin and PREFIX.idx)")
    p.add_argument(
        "--output", metavar="PNG", help="where to write the picture (default: PREFIX.report.png)"
    )
    p.add_argument("--html", metavar="HTML", help="also write a self-contained HTML page")
    p.add_argument("--tokenizer", help="tokenizer to decode ids (default: from the build manifest)")
    p.add_argument(
        "--no-reread",
        action="store_true",
        help="do not read the Pile inputs again for pile_set_name (mix by input file instead)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=50_000_000,
        metavar="N",
        help="count token ids over at most N tokens, evenly spaced blocks (default: 50,000,000)",
    )
    p.add_argument("--top", type=int, default=20, help="token ids listed (default: 20)")
    p.add_argument(
        "--t5-samples",
        type=int,
        default=200,
        metavar="N",
        help="masked examples measured for a T5 dataset (default: 200)",
    )
    p.add_argument(
        "--seq-length",
        type=int,
        default=512,
        metavar="L",
        help="T5 encoder input length of those examples (default: 512)",
    )
    p.add_argument("--seed", type=int, default=1234, help="T5 masking seed (default: 1234)")


def _check_args(args: argparse.Namespace) -> None:
    from dataprep.indexed.reader import check_dataset_files
    from dataprep.sampling.t5_samples import MIN_INPUTS_LENGTH

    for flag, value, least in (
        ("--max-tokens", args.max_tokens, 1),
        ("--top", args.top, 1),
        ("--t5-samples", args.t5_samples, 1),
        ("--seq-length", args.seq_length, MIN_INPUTS_LENGTH),
    ):
        if value < least:
            raise UsageError(f"{flag} {value}: expected an integer >= {least}")
    for flag, path in (("--output", args.output), ("--html", args.html)):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UsageError(f"{flag} {path}: directory {os.path.dirname(path)} does not exist")
    check_dataset_files(args.prefix)


def run(args: argparse.Namespace) -> int:
    import io

    from dataprep.report import collect_report
    from dataprep.report_figure import draw_report, report_html

    _check_args(args)
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise DataprepError(
            "dataprep report draws with matplotlib, which is not installed: "
            "pip install 'dataprep[report]' (or matplotlib)"
        ) from None
    data = collect_report(
        args.prefix,
        tokenizer=args.tokenizer,
        reread=not args.no_reread,
        max_tokens=args.max_tokens,
        top=args.top,
        t5_samples=args.t5_samples,
        seq_length=args.seq_length,
        seed=args.seed,
    )
    fig, _ = draw_report(data)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    png = buf.getvalue()
    output = args.output or f"{args.prefix}.report.png"
    _write(output, png)
    print(f"{output}: {len(png) / 1e3:,.0f} KB, {data.num_documents:,} documents")
    if data.mix:
        total = max(1, data.num_tokens)
        top = sorted(data.mix.items(), key=lambda kv: -kv[1][1])[:5]
        shares = ", ".join(f"{k} {t / total:.1%}" for k, (_, t) in top)
        print(f"  mix by {data.mix_by} (tokens): {shares}" + (", ..." if len(data.mix) > 5 else ""))
    if data.mix_note:
        print(f"  mix: {data.mix_note}")
    if data.t5 is not None:
        t5 = data.t5
        print(
            f"  T5 masking over {t5['samples']} samples: noise density "
            f"{t5['densities'].mean():.4f} (configured {t5['noise_density']}), mean span "
            f"{t5['span_lengths'].mean():.2f} (configured {t5['mean_noise_span_length']})"
        )
    if args.html:
        _write(args.html, report_html(data, png).encode("utf-8"))
        print(f"{args.html}: self-contained page with the figure and the manifest")
    return 0


def _write(path: str, payload: bytes) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(payload)
    os.replace(tmp, path)
