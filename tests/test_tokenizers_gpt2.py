"""GPT-2 BPE (tiktoken backend) against Hugging Face `tokenizers` and `transformers` as oracles."""

import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataprep.fileio import sha256_file
from dataprep.tokenizers import load_tokenizer
from dataprep.tokenizers.base import ASSETS_DIR
from dataprep.tokenizers.gpt2 import GPT2BPETokenizer

GPT2_DIR = ASSETS_DIR / "gpt2"

HARD_TEXTS = [
    "Hello world",
    " Hello world",
    "",
    " ",
    "naïve café résumé",  # precomposed accents
    "nai\u0308ve cafe\u0301 e\u0301\u0301\u0301",  # combining marks, stacked
    "日本語のテキストと中文文本，한국어 텍스트。",
    "العربية: مرحبا بالعالم ١٢٣",
    "हिन्दी में पाठ, क्षत्रिय ॐ",
    "Русский текст, Ελληνικά, עברית",
    "family 👨‍👩‍👧‍👦 flags 🇩🇪🇯🇵 skin 👋🏽👍🏿 keycap 1️⃣",
    "no\u00a0break\u00a0space and zero\u200bwidth\u200bspace, BOM\ufeff, word\u2060joiner",
    "windows\r\nline\r\nends\r\n\r\n",
    "runs    of     spaces\n\n\n\ttabs\t\t\tand \t mixed \n \n",
    "   leading and trailing   ",
    "control \x00\x01\x07\x1b[31m\x7f chars \x85 \u2028 \u2029",
    "it's we'll they've I'd she'm you're DON'T Y'ALL'S",
    "\t'thou",
    "a\n'self",
    "''' '' ' 's 'll 've",
    "digits 0123456789 3.14159 1,000,000 ٣٤٥ ๑๒๓ ①②",
    "def f(x):\n    return {'a': [1, 2]}  # comment\n\tif x != y: pass\n",
    '<html><body class="x">&amp;&#x27;</body></html>',
    "a<|endoftext|>b <|endoftext|>",
    "emoji only 😀😃😄😁😆😅🤣😂",
    "\U0001d400\U0001d401 mathematical bold, \U00010000 linear b, \U0010fffd private",
    "x" * 3000,
    "ab " * 500,
]


@pytest.fixture(scope="module")
def tok() -> GPT2BPETokenizer:
    return load_tokenizer("gpt2")


@pytest.fixture(scope="module")
def hf_ref():
    """HF tokenizers from the same files, without special tokens (<|endoftext|> is text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    ref = Tokenizer(
        models.BPE.from_file(str(GPT2_DIR / "vocab.json"), str(GPT2_DIR / "merges.txt"))
    )
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ref.decoder = decoders.ByteLevel()
    return ref


def hf_ids(ref, texts):
    return [e.ids for e in ref.encode_batch(list(texts), add_special_tokens=False)]


def test_asset_hashes_match_openai_gpt2_files():
    # identical to OpenAI's published encoder.json / vocab.bpe
    assert sha256_file(GPT2_DIR / "vocab.json") == (
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    )
    assert sha256_file(GPT2_DIR / "merges.txt") == (
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
    )


def test_golden_ids_and_special_ids(tok):
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" Hello world") == [18435, 995]
    assert tok.vocab_size == 50257
    assert tok.eod_id == tok.eos_id == 50256
    assert (tok.pad_id, tok.unk_id, tok.bos_id) == (None, None, None)
    assert tok.sentinel_ids == []
    assert tok.spec == "gpt2"
    assert tok.id_to_piece(995) == "\u0120world"  # 'Ġworld'
    assert tok.id_to_piece(50256) == "<|endoftext|>"


def test_describe_is_json_and_reloadable(tok):
    import json

    d = json.loads(json.dumps(tok.describe()))
    assert d["vocab_size"] == 50257 and d["eod_id"] == 50256 and d["n_sentinels"] == 0
    assert sha256_file(GPT2_DIR / "vocab.json") in d["identity"]
    again = load_tokenizer(d["spec"])
    assert again.identity == tok.identity


def test_endoftext_inside_text_is_ordinary_text(tok, hf_ref):
    ids = tok.encode("a<|endoftext|>b")
    assert 50256 not in ids
    assert (
        ids == hf_ids(hf_ref, ["a<|endoftext|>b"])[0] == [64, 27, 91, 437, 1659, 5239, 91, 29, 65]
    )
    assert tok.decode(ids) == "a<|endoftext|>b"
    assert tok.decode([50256]) == "<|endoftext|>"


def test_hard_texts_equal_hf_tokenizers(tok, hf_ref):
    assert tok.encode_batch(HARD_TEXTS) == hf_ids(hf_ref, HARD_TEXTS)
    assert [tok.encode(t) for t in HARD_TEXTS] == hf_ids(hf_ref, HARD_TEXTS)


def test_hard_texts_equal_transformers(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_DIR / f, tmp_path / f)
    ref = transformers.GPT2TokenizerFast.from_pretrained(str(tmp_path))
    assert len(ref) == tok.vocab_size
    expected = ref(HARD_TEXTS, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert tok.encode_batch(HARD_TEXTS) == expected
    # with special-token parsing on, transformers maps the literal to 50256; we never do
    assert ref.encode("a<|endoftext|>b") == [64, 50256, 65]


def test_transformers_from_tokenizer_json_agrees(tok, tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.BPE.from_file(str(GPT2_DIR / "vocab.json"), str(GPT2_DIR / "merges.txt")))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.ByteLevel(trim_offsets=False)
    t.add_special_tokens(["<|endoftext|>"])
    t.save(str(tmp_path / "tokenizer.json"))
    ref = PreTrainedTokenizerFast(
        tokenizer_file=str(tmp_path / "tokenizer.json"), eos_token="<|endoftext|>"
    )
    texts = [t for t in HARD_TEXTS if "<|endoftext|>" not in t]
    assert tok.encode_batch(texts) == ref(texts, add_special_tokens=False)["input_ids"]
    # and our loader reads that tokenizer.json through the HF backend with the same ids
    hf = load_tokenizer(tmp_path / "tokenizer.json")
    assert hf.eod_id == 50256 and hf.vocab_size == 50257
    assert hf.encode_batch(texts) == tok.encode_batch(texts)


def test_decode_round_trips(tok):
    for t in HARD_TEXTS:
        assert tok.decode(tok.encode(t)) == t


def test_encode_batch_threads_and_numpy_ids(tok):
    import numpy as np

    one = tok.encode_batch(HARD_TEXTS)
    assert tok.encode_batch(HARD_TEXTS, num_threads=2) == one
    assert tok.encode_batch(tuple(HARD_TEXTS)) == one
    assert tok.decode(np.asarray(one[0], dtype=np.uint16)) == HARD_TEXTS[0]


def test_out_of_range_ids_are_rejected(tok):
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([50257])
    with pytest.raises(ValueError, match="out of range"):
        tok.id_to_piece(-1)


def test_invalid_utf8_decodes_with_replacement(tok):
    ids = tok.encode("日")  # 3 UTF-8 bytes; GPT-2 has no single token for it
    assert len(ids) > 1
    assert tok.decode(ids[:1]) == "\ufffd"
    assert tok.decode(ids) == "日"


def test_lone_surrogates_do_not_crash(tok):
    ids = tok.encode("a\ud800b")
    assert tok.decode(ids) == "a\ufffdb"


def _sweep_texts(code_points, per_text=256):
    """Every code point in a few contexts, packed `per_text` code points to a text (fewer calls)."""
    texts = []
    for start in range(0, len(code_points), per_text):
        parts = []
        for cp in code_points[start : start + per_text]:
            ch = chr(cp)
            parts.append(f"a{ch}b {ch}{ch} '{ch}s 1{ch}\n{ch}  {ch}")
        texts.append("|".join(parts))
    return texts


def _code_points(step):
    return [cp for cp in range(0, sys.maxunicode + 1, step) if not 0xD800 <= cp <= 0xDFFF]


def test_code_point_sample_equals_hf_tokenizers(tok, hf_ref):
    # every 97th code point plus all of the first 0x3000 (Latin, punctuation, spaces, marks, CJK
    # symbols)
    cps = sorted(set(range(0x3000)) | set(_code_points(97)))
    texts = _sweep_texts(cps)
    assert tok.encode_batch(texts) == hf_ids(hf_ref, texts)


@pytest.mark.slow
def test_every_code_point_equals_hf_tokenizers(tok, hf_ref):
    # every code point of planes 0-3 and 14 (all assigned ones, Unicode 16), every 31st of the rest,
    # which is unassigned or private use; two contexts each (about 8 s for HF tokenizers)
    cps = [c for c in _code_points(1) if c < 0x40000 or 0xE0000 <= c < 0xE1000 or c % 31 == 0]
    texts = []
    for start in range(0, len(cps), 256):
        texts.append("|".join(f"a{chr(c)}b {chr(c)}{chr(c)}" for c in cps[start : start + 256]))
    ours, ref = tok.encode_batch(texts), hf_ids(hf_ref, texts)
    for t, a, b in zip(texts, ours, ref, strict=True):
        assert a == b, f"first differing text starts with {t[:40]!r}"


# pieces that stress the GPT-2 split: contractions, whitespace runs before letters, digits, emoji
ATOMS = "'|s|t|ll|ve|re|d|m| |  |\t|\n|\r\n|\u00a0|\u3000|\u200b|a|Z|é|日|ع|1|42|٣".split("|")
ATOMS += ["😀", "👍🏽", ".", "-", "_", "\x00"]


@given(st.lists(st.sampled_from(ATOMS), max_size=40).map("".join))
def test_random_apostrophe_whitespace_strings_equal_hf(tok, hf_ref, text):
    assert tok.encode(text) == hf_ref.encode(text, add_special_tokens=False).ids
    assert tok.decode(tok.encode(text)) == text


@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60))
def test_random_unicode_equal_hf_and_round_trip(tok, hf_ref, text):
    assert tok.encode(text) == hf_ref.encode(text, add_special_tokens=False).ids
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.slow
def test_toy_corpora_equal_hf_tokenizers(tok, hf_ref):
    # real documents (English prose and code in Pile format, 10 languages in mC4 format): the
    # kind of text on which encoders that pass hand-picked strings have been seen to disagree
    from pathlib import Path

    from dataprep.readers import expand_inputs, iter_documents

    toy = Path(__file__).resolve().parents[1] / "pipelines" / "toy"
    paths = expand_inputs([toy / "mc4", toy / "pile" / "00.jsonl.zst"])
    texts = [d.text for p in paths for d in iter_documents(p)]
    assert sum(len(t.encode()) for t in texts) > 3_000_000
    ours, ref = tok.encode_batch(texts), hf_ids(hf_ref, texts)
    assert sum(a == b for a, b in zip(ours, ref, strict=True)) == len(texts)


def test_fast_rank_loading_equals_tiktoken_merge_replay():
    import json

    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    from dataprep.tokenizers.gpt2 import ranks_from_vocab

    d = Path(__file__).resolve().parents[1] / "tokenizer_assets" / "gpt2"
    vocab = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
    expected = data_gym_to_mergeable_bpe_ranks(str(d / "merges.txt"), str(d / "vocab.json"))
    assert ranks_from_vocab(vocab) == expected


def test_encode_numpy_equals_encode():
    from dataprep.tokenizers import load_tokenizer

    tok = load_tokenizer("gpt2")
    texts = ["Hello world", "", "a <|endoftext|> b", "日本語 👩‍👩‍👧 \r\n\t  x", "'s 'll\t'thou"]
    arrays = tok.encode_numpy(texts)
    assert [a.tolist() for a in arrays] == [tok.encode(t) for t in texts]
    assert all(a.dtype.kind in "iu" for a in arrays)
