"""Rendering helpers for the preview commands: ANSI colour on a terminal, plain text when piped.

`use_color(stream, flag)` decides once; `highlight(text, style, color=...)` wraps text in ANSI
codes (or returns it unchanged); `render_ids(decode, ids, marks=...)` decodes token ids to text,
keeping chosen ids (sentinels, EOS) and ranges (noise spans) visible and styled. Used by
`preview-masking` and `preview-samples`; nothing here knows about T5 or GPT.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

# style name -> SGR parameter; styles combine with spaces: "bold cyan"
_SGR: dict[str, str] = {
    "bold": "1",
    "dim": "2",
    "italic": "3",
    "underline": "4",
    "reverse": "7",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
    "gray": "90",
    "on_gray": "100",
}
# one colour per span number k (cycled), so span k looks alike in the original, inputs and targets
PALETTE: tuple[str, ...] = ("cyan", "magenta", "yellow", "green", "blue", "red")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def use_color(stream: TextIO, flag: bool | None = None) -> bool:
    """Whether to colour output to `stream`: `flag` if given (--color/--no-color), else on a TTY.

    Honours NO_COLOR (https://no-color.org) and TERM=dumb when `flag` is None.
    """
    if flag is not None:
        return flag
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def highlight(text: str, style: str, *, color: bool = True) -> str:
    """`text` in the ANSI codes of `style` ("bold", "cyan", "bold yellow", ...), or as is."""
    if not color or not style or not text:
        return text
    try:
        codes = ";".join(_SGR[s] for s in style.split())
    except KeyError as e:
        raise ValueError(f"unknown style {e.args[0]!r}; expected some of {sorted(_SGR)}") from None
    return f"\x1b[{codes}m{text}\x1b[0m"


def span_style(k: int) -> str:
    """The colour of span number k."""
    return PALETTE[k % len(PALETTE)]


def escape_controls(text: str) -> str:
    """Control characters but newline and tab shown as \\xNN, so data cannot drive the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def decode_pieces(
    decode: Callable[[Sequence[int]], str], ids: Sequence[int], cuts: Sequence[int]
) -> list[str]:
    """Text of ids[c_i:c_{i+1}] for consecutive cut points; the pieces join to decode(ids).

    Each piece is cut from decode(ids) where the decode of the prefix up to the cut point ends, so
    the spaces a SentencePiece or byte-level tokenizer puts between tokens land where they belong
    (decoding a run alone would lose the leading space of SentencePiece's first piece). A character
    whose bytes a cut splits (byte fallback) goes whole to the later piece.
    """
    ids = [int(i) for i in ids]
    bounds = sorted({0, len(ids), *(c for c in cuts if 0 < c < len(ids))})
    full = decode(ids)
    offsets = [0]
    for b in bounds[1:-1]:
        text = decode(ids[:b])
        if full.startswith(text):
            common = len(text)
        else:  # the prefix ends inside a character: keep what it shares with the full text
            common = len(os.path.commonprefix([text, full]))
        offsets.append(max(common, offsets[-1]))
    offsets.append(len(full))
    return [full[a:b] for a, b in zip(offsets, offsets[1:], strict=False)] if ids else []


def render_ids(
    decode: Callable[[Sequence[int]], str],
    ids: Sequence[int],
    *,
    marks: Mapping[int, tuple[str, str]] | None = None,
    ranges: Sequence[tuple[int, int, str]] = (),
    color: bool = True,
) -> str:
    """Decoded text of `ids` with some tokens and ranges made visible.

    marks: token id -> (label, style): each occurrence shows as its label ("<extra_id_0>", "</s>",
        whose decode may be empty), styled. Labels stay visible without colour.
    ranges: (start, end, style) over token positions, e.g. noise spans; styled only when colouring.
    """
    ids = [int(i) for i in ids]
    marks = marks or {}
    styled: dict[int, str] = {}  # position -> style of its range
    for start, end, style in ranges:
        for p in range(start, end):
            styled[p] = style
    cuts = set()
    for p, i in enumerate(ids):
        if i in marks:
            cuts.update((p, p + 1))
    for start, end, _ in ranges:
        cuts.update((start, end))
    bounds = sorted({0, len(ids), *(c for c in cuts if 0 < c < len(ids))})
    out = []
    for (a, _b), text in zip(
        zip(bounds, bounds[1:], strict=False), decode_pieces(decode, ids, cuts), strict=True
    ):
        if ids[a] in marks and _b == a + 1:
            label, style = marks[ids[a]]
            before, found, after = text.partition(label)  # e.g. " <extra_id_0>", or "" for EOS
            if not found:
                before, after = text, ""
            mark = highlight(label, style, color=color)
            out.append(escape_controls(before) + mark + escape_controls(after))
        else:
            out.append(highlight(escape_controls(text), styled.get(a, ""), color=color))
    return "".join(out)


def indent(text: str, prefix: str = "  ") -> str:
    """Every line of `text` (empty ones too) prefixed, so multi-line documents stay readable."""
    return "\n".join(prefix + line for line in text.split("\n"))
