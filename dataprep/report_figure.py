"""The `dataprep report` picture and page: draws a `dataprep.report.ReportData`.

`draw_report(data)` returns a matplotlib Figure (Agg canvas, no pyplot state) and its panels by
title; every panel draws something, a note saying why when there is nothing to plot.
`report_html(data, png)` is one self-contained page: the figure as base64 PNG, the numbers as
tables and the build manifest, with no external resources.
"""

from __future__ import annotations

import base64
import html
import json
from functools import cache
from typing import Any

import numpy as np

from dataprep.report import ReportData, length_percentiles

MAX_MIX_ROWS = 12  # labels shown in the mix panel; the rest are added up as "other"
DOCS_COLOR, TOKENS_COLOR, NOTE_COLOR = "#4c72b0", "#dd8452", "#666666"


@cache
def _font_charmap() -> frozenset[int]:
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(font_manager.findfont(font_manager.FontProperties())).get_charmap())


def printable(text: str) -> str:
    """`text` with characters the default font cannot draw shown as U+XXXX (no missing glyphs)."""
    chars = _font_charmap()
    return "".join(c if ord(c) in chars else f"U+{ord(c):04X}" for c in text)


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, color=NOTE_COLOR, fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])


def _lengths(ax, data: ReportData) -> None:
    lengths = data.doc_lengths[data.doc_lengths > 0]
    if lengths.size == 0:
        _note(ax, "no documents")
        return
    bins = np.geomspace(max(1, lengths.min()), lengths.max() + 1, 40)
    ax.hist(lengths, bins=bins, color=DOCS_COLOR)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    marks = length_percentiles(lengths, (50, 90, 99))  # the figures `inspect` prints
    for q, style in ((50, "-"), (90, "--"), (99, ":")):
        v = marks[f"p{q}"]
        ax.axvline(v, color="black", linestyle=style, linewidth=1, label=f"p{q} {v:,.0f}")
    ax.legend(fontsize=9)
    ax.set_xlabel("tokens per document (log scale)")
    ax.set_ylabel("documents")


def _mix(ax, data: ReportData) -> None:
    if not data.mix:
        _note(ax, data.mix_note or "no mix recorded")
        return
    rows = sorted(data.mix.items(), key=lambda kv: -kv[1][1])
    if len(rows) > MAX_MIX_ROWS:
        rest = rows[MAX_MIX_ROWS - 1 :]
        other = (sum(r[1][0] for r in rest), sum(r[1][1] for r in rest))
        rows = rows[: MAX_MIX_ROWS - 1] + [(f"other ({len(rest)})", other)]
    labels = [printable(k) for k, _ in rows][::-1]
    docs = np.array([v[0] for _, v in rows][::-1]) / max(1, data.num_documents) * 100
    tokens = np.array([v[1] for _, v in rows][::-1]) / max(1, data.num_tokens) * 100
    y = np.arange(len(rows))
    ax.barh(y + 0.2, docs, height=0.4, color=DOCS_COLOR, label="% of documents")
    ax.barh(y - 0.2, tokens, height=0.4, color=TOKENS_COLOR, label="% of tokens")
    ax.set_yticks(y, labels, fontsize=9)
    ax.set_xlabel("%")
    ax.legend(fontsize=9, loc="lower right")
    if data.mix_note:
        ax.set_xlabel(f"%  ({printable(data.mix_note)[:90]})", fontsize=8)


def _top_ids(ax, data: ReportData) -> None:
    if not data.top_ids:
        _note(ax, "no tokens")
        return
    ids = data.top_ids[::-1]
    y = np.arange(len(ids))
    share = np.array([c for _, c, _ in ids]) / max(1, data.tokens_counted) * 100
    ax.barh(y, share, color=TOKENS_COLOR)
    labels = [f"{i}  {printable(p)[:18]!s}" if p else str(i) for i, _, p in ids]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("% of tokens")


def _rank(ax, data: ReportData) -> None:
    counts = np.sort(data.token_counts[data.token_counts > 0])[::-1]
    if counts.size == 0:
        _note(ax, "no tokens")
        return
    ax.loglog(np.arange(1, counts.size + 1), counts, color=TOKENS_COLOR)
    ax.set_xlabel("rank of the token id")
    ax.set_ylabel("occurrences")
    vocab = ((data.manifest or {}).get("tokenizer") or {}).get("vocab_size")
    used = f"{counts.size:,} ids occur" + (f" of a vocabulary of {vocab:,}" if vocab else "")
    ax.text(0.97, 0.95, used, transform=ax.transAxes, ha="right", va="top", fontsize=9)


def _bars(ax, counts: dict[str, int] | None, empty: str) -> None:
    if not counts:
        _note(ax, empty)
        return
    labels = list(counts)[::-1]
    y = np.arange(len(labels))
    ax.barh(y, [counts[k] for k in labels], color=DOCS_COLOR)
    ax.set_yticks(y, labels, fontsize=9)
    for yi, k in zip(y, labels, strict=True):
        ax.text(counts[k], yi, f" {counts[k]:,}", va="center", fontsize=9)
    ax.set_xlabel("count")


def _none_skipped(data: ReportData) -> str:
    if data.manifest is None:
        return "no build manifest: skips unknown"
    read = (data.manifest.get("read") or {}).get("documents")
    return f"none skipped ({read:,} records read)" if isinstance(read, int) else "none skipped"


def _t5_density(ax, data: ReportData) -> None:
    t5 = data.t5
    if t5 is None:
        _note(ax, data.t5_note)
        return
    target = t5["noise_density"]
    densities = t5["densities"]
    ax.hist(densities, bins=40, range=(0, 2 * target), color=DOCS_COLOR)
    ax.axvline(target, color="black", label=f"configured {target}")
    mean = float(np.mean(densities))
    ax.axvline(mean, color=TOKENS_COLOR, linestyle="--", label=f"achieved mean {mean:.4f}")
    ax.legend(fontsize=9, loc="upper left")
    spread = f"{densities.min():.4f} to {densities.max():.4f}"
    ax.text(
        0.97,
        0.5,
        f"per sample: {spread}\n{t5['tokens_length']} raw tokens each,\n"
        f"round({t5['tokens_length']} x {target}) noise tokens",
        transform=ax.transAxes,
        ha="right",
        fontsize=9,
    )
    ax.set_xlabel(
        f"noise density of {t5['samples']} of {t5['of']:,} samples "
        f"(encoder {t5['seq_length']}, seed {t5['seed']})"
    )
    ax.set_ylabel("samples")


def _t5_spans(ax, data: ReportData) -> None:
    t5 = data.t5
    if t5 is None:
        _note(ax, data.t5_note)
        return
    spans = t5["span_lengths"]
    lengths, counts = np.unique(spans, return_counts=True)
    ax.bar(lengths, counts, color=TOKENS_COLOR)
    mean = float(spans.mean())
    target = t5["mean_noise_span_length"]
    ax.axvline(mean, color="black", linestyle="--", label=f"mean {mean:.2f} (configured {target})")
    ax.legend(fontsize=9)
    ax.set_xlabel(f"tokens per noise span ({spans.size:,} spans)")
    ax.set_ylabel("spans")


def _build(ax, data: ReportData) -> None:
    m = data.manifest
    if m is None:
        _note(ax, "no build manifest (not built by dataprep build-index)")
        return
    tok = m.get("tokenizer") or {}
    inputs = m.get("inputs") or []
    lines = [
        f"built {m.get('created', '?')}, dataprep {m.get('dataprep_version', '?')}",
        f"{len(inputs)} input file(s), {sum(x.get('size', 0) for x in inputs) / 1e6:,.1f} MB",
        f"text read: {(m.get('read') or {}).get('bytes', 0) / 1e6:,.1f} MB",
        f"tokenizer {tok.get('spec')} (vocab {tok.get('vocab_size')}, "
        f"{tok.get('n_sentinels', 0)} sentinels)",
        f"dtype {m.get('dtype')}, level {m.get('level')}, key {m.get('json_key')}",
        f"append_eod {m.get('append_eod')}, largest id {m.get('max_token_id')}",
        f"filters {m.get('filters') or 'none'}, languages {m.get('languages') or 'all'}",
    ]
    ax.text(0.02, 0.95, "\n".join(lines), va="top", family="monospace", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_report(data: ReportData):
    """(Figure, {panel title: Axes}) of the report, nine panels on a 3 x 3 grid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17, 13), dpi=72, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(
        f"{data.prefix}: {data.num_documents:,} documents, {data.num_tokens:,} tokens"
        + (f", tokenizer {data.tokenizer_name}" if data.tokenizer_name else ""),
        fontsize=15,
    )
    mix_title = f"mix by {data.mix_by}" if data.mix_by else "mix"
    sample = (
        "all" if data.tokens_counted == data.num_tokens else f"a sample of {data.tokens_counted:,}"
    )
    panels = [
        ("document length (tokens, log scale)", _lengths),
        (f"{mix_title}: documents and tokens", _mix),
        (f"most frequent token ids ({sample} tokens)", _top_ids),
        ("token-id frequency by rank", _rank),
        ("skipped records by reason", lambda ax, d: _bars(ax, d.skipped, _none_skipped(d))),
        (
            "duplicates removed",
            lambda ax, d: _bars(ax, d.duplicates, "none recorded in the manifest"),
        ),
        ("T5 masking: achieved noise density", _t5_density),
        ("T5 masking: noise span lengths", _t5_spans),
        ("build", _build),
    ]
    axes = fig.subplots(3, 3).ravel()
    out = {}
    for ax, (title, draw) in zip(axes, panels, strict=True):
        ax.set_title(title, fontsize=12, loc="left")
        draw(ax, data)
        out[title] = ax
    return fig, out


def _cell(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def report_html(data: ReportData, png: bytes) -> str:
    """One page holding everything: the PNG as a data: URI, tables, and the manifest."""
    title = html.escape(f"dataprep report: {data.prefix}")
    mix = sorted(data.mix.items(), key=lambda kv: -kv[1][1])
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;text-align:left}"
        "img{max-width:100%}pre{background:#f4f4f4;padding:1em;overflow:auto}</style>",
        f"</head><body><h1>{title}</h1>",
        f"<p>{data.num_documents:,} documents, {data.num_tokens:,} tokens</p>",
        f"<img alt='report' src='data:image/png;base64,{base64.b64encode(png).decode()}'>",
        f"<h2>mix by {html.escape(data.mix_by or 'source')}</h2>",
        f"<p>{html.escape(data.mix_note)}</p>" if data.mix_note else "",
        _table(["label", "documents", "tokens"], [[k, d, t] for k, (d, t) in mix]),
        "<h2>most frequent token ids</h2>",
        _table(["id", "count", "piece"], [list(x) for x in data.top_ids]),
        "<h2>skipped records</h2>",
        _table(["reason", "count"], list(map(list, data.skipped.items())))
        if data.skipped
        else "<p>none skipped</p>",
        "<h2>duplicates removed</h2>",
        _table(["what", "count"], list(map(list, data.duplicates.items())))
        if data.duplicates
        else "<p>none recorded</p>",
        "<h2>build manifest</h2>",
        f"<pre>{html.escape(json.dumps(data.manifest, indent=2, ensure_ascii=False))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)
