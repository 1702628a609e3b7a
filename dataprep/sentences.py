"""Sentence splitting for `build-index --split-sentences`.

Megatron uses NLTK punkt with the English model, which cannot be fetched here and is English-only.
This is a small rule-based splitter instead: a sentence ends after `.`, `!`, `?` or `…` (optionally
followed by closing quotes/brackets) when whitespace and then a capital letter, digit, opening quote
or a non-Latin letter follows, or directly after the CJK/Devanagari/Arabic terminators `。！？।؟`.
Common abbreviations ("Dr.", "e.g.", "U.S.") and single capital initials do not end a sentence.
Newlines end a sentence.

Splitting is lossless: `"".join(split_sentences(text, keep_newlines=True))` gives the text back,
except that whitespace between sentences is kept at the end of the earlier sentence (then stripped
unless keep_newlines).
"""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st vs etc e.g i.e cf al fig no nos vol pp ch ed eds approx dept est
    inc
    ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec mt ft gen col lt sgt capt gov rev
    u.s u.k a.m p.m""".split()
)

# a candidate boundary: terminator(s), closing punctuation, then whitespace
_LATIN_END = re.compile(r"""([.!?…]+['"’”)\]»]*)(\s+)(?=['"“‘(\[«¿¡]?[^\W_a-z])""")
_CJK_END = re.compile(r"([。！？।؟]+['\"’”」』)\]]*)")


def _ends_with_abbreviation(text: str) -> bool:
    word = text.rsplit(None, 1)[-1] if text.strip() else ""
    word = word.lstrip("(\"'“‘«").rstrip(".").lower()
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _split_line(line: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    for m in _LATIN_END.finditer(line):
        if m.group(1) == "." and _ends_with_abbreviation(line[start : m.start(1)]):
            continue
        pieces.append(line[start : m.end()])
        start = m.end()
    pieces.append(line[start:])
    out: list[str] = []
    for piece in pieces:
        parts = _CJK_END.split(piece)
        # re.split with one group alternates text, terminator, text, ...
        for i in range(0, len(parts), 2):
            text = parts[i] + (parts[i + 1] if i + 1 < len(parts) else "")
            if text:
                out.append(text)
    return out


def split_sentences(text: str, *, keep_newlines: bool = False) -> list[str]:
    """Split a document into sentences; empty sentences are dropped.

    >>> split_sentences("Dr. Smith arrived. He sat down!\\nNew line。次の文。")
    ['Dr. Smith arrived.', 'He sat down!', 'New line。', '次の文。']
    """
    sentences: list[str] = []
    for line in text.splitlines(keepends=True):
        for sentence in _split_line(line):
            if not keep_newlines:
                sentence = sentence.strip()
            if sentence.strip():
                sentences.append(sentence)
    return sentences
