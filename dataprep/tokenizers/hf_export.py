"""Write one of our tokenizers as a Hugging Face tokenizer folder that `AutoTokenizer` loads alone.

- GPT-2 BPE (vocab.json + merges.txt): `GPT2Tokenizer(vocab=, merges=)`, `<|endoftext|>` as bos,
  eos and unk.
- SentencePiece (mT5 convention): converted by transformers' T5 converter with `extra_ids=0` (the
  100 sentinels are pieces of the model, `<extra_id_N>` = vocab_size - 1 - N), then saved as a plain
  tokenizers-backed tokenizer. The T5 converter drops SentencePiece's byte fallback, so when the
  model has byte pieces (`<0x00>`...) the Unigram model gets `byte_fallback` and the decoder a
  ByteFallback step: characters outside the vocabulary then map to the same byte ids as in
  sentencepiece instead of `<unk>`.
- A Hugging Face tokenizer.json (or a folder with one): loaded with `PreTrainedTokenizerFast` with
  our eos (the end-of-document id), bos, unk and pad pieces named, or with `AutoTokenizer` when the
  folder has its own tokenizer_config.json.

`save_hf_tokenizer` then reloads the folder with `AutoTokenizer` and checks it gives our ids on
probe texts (Latin, Cyrillic, CJK, Devanagari, Arabic, emoji, whitespace runs); a mismatch is an
error naming the text, never a silently different tokenizer.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dataprep.errors import DataprepError

PROBE_TEXTS = (
    "The quick brown fox jumps over the lazy dog. 1234567890",
    "La capitale de la France est Paris. Größe, naïve café.",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "東京は日本の首都です。北京是中国的首都。",
    "हिन्दी में लिखा गया वाक्य। العربية لغة جميلة",
    "emoji 🎉🚀 and   runs of   spaces\tand\ttabs\nnew lines",
)


def _to_hf(tokenizer: Any):
    import transformers

    from dataprep.tokenizers.gpt2 import GPT2BPETokenizer
    from dataprep.tokenizers.hf import HFTokenizer
    from dataprep.tokenizers.spm import SentencePieceTokenizer

    if isinstance(tokenizer, GPT2BPETokenizer):
        vocab_json, merges_txt = tokenizer.files
        vocab = json.loads(Path(vocab_json).read_text(encoding="utf-8"))
        lines = Path(merges_txt).read_text(encoding="utf-8").splitlines()
        merges = [tuple(m.split(" ")) for m in lines if m and not m.startswith("#version")]
        eos = tokenizer.id_to_piece(tokenizer.eod_id) if tokenizer.eod_id is not None else None
        kw = {"unk_token": eos, "bos_token": eos, "eos_token": eos} if eos else {}
        return transformers.GPT2Tokenizer(vocab=vocab, merges=merges, **kw)
    if isinstance(tokenizer, SentencePieceTokenizer):
        return _spm_to_hf(tokenizer)
    if isinstance(tokenizer, HFTokenizer):
        path = Path(tokenizer.spec)
        folder = path if path.is_dir() else path.parent
        if (folder / "tokenizer_config.json").is_file():
            return transformers.AutoTokenizer.from_pretrained(folder)
        file = path / "tokenizer.json" if path.is_dir() else path
        # a bare tokenizer.json names no special tokens; ours are known (the end-of-document id
        # is the eos that generation_config.json and lm_eval's `hf` model use)
        special = {}
        eos = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.eod_id
        roles = (("eos_token", eos), ("bos_token", tokenizer.bos_id),
                 ("unk_token", tokenizer.unk_id), ("pad_token", tokenizer.pad_id))  # fmt: skip
        for name, i in roles:
            if i is not None:
                special[name] = tokenizer.id_to_piece(i)
        return transformers.PreTrainedTokenizerFast(tokenizer_file=str(file), **special)
    raise DataprepError(f"no Hugging Face export for a {type(tokenizer).__name__} tokenizer")


def _spm_to_hf(tokenizer: Any):
    import transformers
    from tokenizers import Tokenizer

    model_file = Path(tokenizer.model_file)
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(model_file, Path(d) / "spiece.model")
        t5 = transformers.T5Tokenizer.from_pretrained(d, extra_ids=0)
    spec = json.loads(t5.backend_tokenizer.to_str())
    pieces = {tokenizer.id_to_piece(i) for i in range(min(tokenizer.vocab_size, 512))}
    if "<0x00>" in pieces:
        spec["model"]["byte_fallback"] = True
        steps = [spec["decoder"]] if spec.get("decoder") else []
        spec["decoder"] = {"type": "Sequence", "decoders": [*steps, {"type": "ByteFallback"}]}
    special = {}
    for name, i in (("eos_token", tokenizer.eos_id), ("unk_token", tokenizer.unk_id),
                    ("pad_token", tokenizer.pad_id), ("bos_token", tokenizer.bos_id)):  # fmt: skip
        if i is not None:
            special[name] = tokenizer.id_to_piece(i)
    sentinels = [tokenizer.id_to_piece(i) for i in tokenizer.sentinel_ids]
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        additional_special_tokens=sentinels,
        **special,
    )


def save_hf_tokenizer(tokenizer: Any, out: str | Path) -> None:
    """Write `tokenizer` as an HF tokenizer into folder `out` and check the reloaded copy encodes
    the probe texts to our ids."""
    import transformers

    hf = _to_hf(tokenizer)
    hf.save_pretrained(out)
    reloaded = transformers.AutoTokenizer.from_pretrained(out)
    for text in PROBE_TEXTS:
        ours = list(tokenizer.encode(text))
        theirs = reloaded(text, add_special_tokens=False)["input_ids"]
        if ours != theirs:
            raise DataprepError(
                f"the exported Hugging Face tokenizer encodes {text!r} as {theirs[:12]}... but "
                f"{tokenizer.name} gives {ours[:12]}...; this tokenizer cannot be exported exactly"
            )
