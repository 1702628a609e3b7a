"""Prompts with `<mask>` for T5-style models: each `<mask>` becomes the next sentinel
(`<extra_id_0>`, `<extra_id_1>`, ...), encoded so the sentinels come out as their single ids.
`preview-masking --prompt` shows the ids; trainer/inference/fill_mask.py feeds them to an mT5."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dataprep.errors import UsageError

MASK = "<mask>"


def mask_prompt(prompt: str) -> tuple[str, int]:
    """Every `<mask>` -> `<extra_id_k>`, k = 0, 1, ... in order; returns (text, number of masks)."""
    parts = prompt.split(MASK)
    text = parts[0]
    for k, part in enumerate(parts[1:]):
        text += f"<extra_id_{k}>" + part
    return text, len(parts) - 1


def nemo_mask_prompt(prompt: str) -> tuple[str, list[str]]:
    """NeMo megatron_t5_eval's reading: whitespace tokens exactly `<mask>` replaced, then ' '.join.

    Returns the text and the whitespace tokens that hold `<mask>` but were left as they are.
    """
    words, left, k = [], [], 0
    for word in prompt.split():
        if word == MASK:
            words.append(f"<extra_id_{k}>")
            k += 1
        else:
            if MASK in word:
                left.append(word)
            words.append(word)
    return " ".join(words), left


def encode_with_sentinels(text: str, tok, sentinels: list[int]) -> list[int]:
    """Encode text whose `<extra_id_k>` markers must come out as the single sentinel ids.

    The whole text is encoded at once (so tokenization around the markers is the tokenizer's
    own); if the tokenizer does not map the marker text to its sentinel id, the text is cut at the
    markers, each part encoded alone and the sentinel ids put between them.
    """
    ids = tok.encode(text)
    wanted = [sentinels[int(k)] for k in re.findall(r"<extra_id_(\d+)>", text)]
    if [i for i in ids if i in set(sentinels)] == wanted:
        return ids
    out: list[int] = []
    for n, part in enumerate(re.split(r"<extra_id_\d+>", text)):
        if n:
            out.append(wanted[n - 1])
        if part:
            out += tok.encode(part)
    return out


def encode_masked_prompt(prompt: str, tok, sentinels: list[int]) -> tuple[list[int], int]:
    """(ids of the prompt with each `<mask>` as the next sentinel, number of masks); a prompt
    without `<mask>` or with more than there are sentinels is a UsageError."""
    text, num_masks = mask_prompt(prompt)
    if num_masks == 0:
        raise UsageError(f"prompt {prompt!r} has no {MASK} marker; put {MASK} where a span goes")
    if num_masks > len(sentinels):
        raise UsageError(
            f"prompt has {num_masks} {MASK} markers but the tokenizer {tok.name} has only "
            f"{len(sentinels)} sentinels; use at most {len(sentinels)}"
        )
    return encode_with_sentinels(text, tok, sentinels), num_masks


@dataclass(frozen=True, slots=True)
class MaskedPrompt:
    """A `<mask>` prompt as the encoder reads it, and as NeMo's megatron_t5_eval would."""

    prompt: str
    text: str  # each <mask> as the next <extra_id_k>
    inputs: list[int]  # encoder ids, EOS appended as in every training encoder input
    sentinels: list[int]  # the sentinel ids used, in order
    nemo_text: str  # megatron_t5_eval's text for the same prompt
    nemo_inputs: list[int]
    nemo_compatible: bool  # NeMo would encode the same ids
    notes: list[str]  # why NeMo differs (or that it does not)


def read_masked_prompt(prompt: str, tok, sentinels: list[int]) -> MaskedPrompt:
    """Encode a `<mask>` prompt (see `encode_masked_prompt`) and compare with NeMo's reading."""
    body, _ = encode_masked_prompt(prompt, tok, sentinels)
    text = mask_prompt(prompt)[0]
    nemo_text, left = nemo_mask_prompt(prompt)
    nemo_body = encode_with_sentinels(nemo_text, tok, sentinels)
    compatible = nemo_body == body
    notes = []
    if compatible:
        notes.append(
            "NeMo's megatron_t5_eval gives the same ids (it appends EOS only with "
            "--add_eos_to_encoder_input)"
        )
    else:
        if left:
            notes.append(
                f"NeMo's megatron_t5_eval would leave {', '.join(repr(w) for w in left)} as "
                f"text: it only replaces whitespace-separated words exactly equal to {MASK}, so "
                "its sentinels would be fewer or numbered differently"
            )
        joined = " ".join(text.split())
        if joined != text and encode_with_sentinels(joined, tok, sentinels) != body:
            notes.append(
                "NeMo's megatron_t5_eval joins the words with single spaces, which changes "
                "the whitespace of this prompt"
            )
        notes.append(f"NeMo's megatron_t5_eval would encode {nemo_text!r} instead")
    used = set(sentinels)
    return MaskedPrompt(
        prompt=prompt,
        text=text,
        inputs=body + [tok.eos_id],
        sentinels=[i for i in body if i in used],
        nemo_text=nemo_text,
        nemo_inputs=nemo_body + [tok.eos_id],
        nemo_compatible=compatible,
        notes=notes,
    )
