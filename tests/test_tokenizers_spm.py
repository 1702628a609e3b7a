"""SentencePiece in the mT5 convention: the shipped mt5-toy model, training, sentinel checks."""

import hashlib
import shutil
from pathlib import Path

import pytest

from dataprep.errors import DataprepError, UsageError
from dataprep.tokenizers import load_tokenizer
from dataprep.tokenizers.base import ASSETS_DIR
from dataprep.tokenizers.spm import SentencePieceTokenizer
from dataprep.tokenizers.train import append_sentinels, train_sentencepiece

ROOT = Path(__file__).resolve().parents[1]
C4_EN = ROOT / "pipelines" / "toy" / "mc4" / "c4-en.tfrecord-00000-of-00001.json.gz"
C4_DE = ROOT / "pipelines" / "toy" / "mc4" / "c4-de.tfrecord-00000-of-00001.json.gz"

# texts SentencePiece's default normalisation (NFKC, single spaces, no edge spaces) leaves unchanged
NORMALISED_TEXTS = [
    "Hello world, this is a test.",
    "Das ist ein Test mit Umlauten: äöü ß.",
    "Привет, мир! Это проверка.",
    "日本語のテキストと中文文本。",
    "Emoji 😀 and 👍🏽 and symbols €100 ± 3°C",
    "numbers 12345 and 3.14159",
]


@pytest.fixture(scope="module")
def mt5():
    return load_tokenizer("mt5-toy")


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    """A 500-id unigram model (400 learned, 259 of them bytes and specials, + 100 sentinels)."""
    out = tmp_path_factory.mktemp("spm") / "small"
    return train_sentencepiece([C4_EN], out, vocab_size=500, sentinels=100)


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory) -> Path:
    """The same without sentinels."""
    out = tmp_path_factory.mktemp("spm") / "plain"
    return train_sentencepiece([C4_EN], out, vocab_size=400, sentinels=0, max_documents=20)


def test_mt5_toy_special_ids_and_sentinels(mt5):
    assert mt5.vocab_size == 8000
    assert (mt5.pad_id, mt5.eos_id, mt5.unk_id, mt5.bos_id) == (0, 1, 2, None)
    assert mt5.eod_id == 1
    assert mt5.sentinel_ids == list(range(7999, 7899, -1))
    assert mt5.id_to_piece(7999) == "<extra_id_0>"
    assert mt5.id_to_piece(7900) == "<extra_id_99>"
    assert mt5.id_to_piece(7899) != "<extra_id_100>"
    assert [mt5.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert mt5.describe()["n_sentinels"] == 100


def test_mt5_toy_asset_is_small_and_recorded(mt5):
    data = (ASSETS_DIR / "mt5-toy" / "spiece.model").read_bytes()
    assert len(data) < 500_000
    readme = (ASSETS_DIR / "README.md").read_text(encoding="utf-8")
    assert hashlib.sha256(data).hexdigest() in readme
    assert hashlib.sha256(data).hexdigest() in mt5.identity


def test_sentinels_decode_as_their_names(mt5):
    ids = (
        mt5.encode("We hold") + [mt5.sentinel_ids[0]] + mt5.encode("to be") + [mt5.sentinel_ids[1]]
    )
    text = mt5.decode(ids)
    assert "<extra_id_0>" in text and "<extra_id_1>" in text
    assert text.startswith("We hold")
    assert mt5.decode([7900]) == "<extra_id_99>"


def test_literal_sentinel_text_encodes_to_its_single_id(mt5):
    for n in (0, 3, 99):
        ids = mt5.encode(f"<extra_id_{n}>")
        # apart from the lone "▁" SentencePiece puts in front of the text, one id: the sentinel
        assert [i for i in ids if mt5.id_to_piece(i) != "\u2581"] == [mt5.sentinel_ids[n]]
    ids = mt5.encode("a<extra_id_3>b")
    assert ids.count(mt5.sentinel_ids[3]) == 1


def test_byte_fallback_on_unseen_character(mt5):
    text = "hieroglyph \U00013000 here"  # not in the toy corpus
    ids = mt5.encode(text)
    assert mt5.unk_id not in ids
    pieces = [mt5.id_to_piece(i) for i in ids]
    assert ["<0xF0>", "<0x93>", "<0x80>", "<0x80>"] == [p for p in pieces if p.startswith("<0x")]
    assert mt5.decode(ids) == text


def test_round_trip_and_batch(mt5):
    for t in NORMALISED_TEXTS:
        assert mt5.decode(mt5.encode(t)) == t
    one = [mt5.encode(t) for t in NORMALISED_TEXTS]
    assert mt5.encode_batch(NORMALISED_TEXTS) == one
    assert mt5.encode_batch(NORMALISED_TEXTS, num_threads=2) == one


def test_agrees_with_transformers_t5_tokenizer(mt5, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    shutil.copy(ASSETS_DIR / "mt5-toy" / "spiece.model", tmp_path / "spiece.model")
    ref = transformers.T5Tokenizer.from_pretrained(str(tmp_path), extra_ids=0)  # sentinels baked in
    assert len(ref) == mt5.vocab_size
    assert (ref.pad_token_id, ref.eos_token_id, ref.unk_token_id) == (0, 1, 2)
    names = [f"<extra_id_{n}>" for n in range(100)]
    assert ref.convert_tokens_to_ids(names) == mt5.sentinel_ids
    # HF's converted tokenizer has no byte fallback, so compare on text made of covered characters
    texts = [t for t in NORMALISED_TEXTS if mt5.unk_id not in ref(t)["input_ids"]]
    assert len(texts) >= 3
    assert mt5.encode_batch(texts) == ref(texts, add_special_tokens=False)["input_ids"]


def test_trained_model_follows_mt5_convention(small_model):
    tok = load_tokenizer(small_model)
    assert isinstance(tok, SentencePieceTokenizer)
    assert tok.vocab_size == 500
    assert (tok.pad_id, tok.eos_id, tok.unk_id, tok.bos_id) == (0, 1, 2, None)
    assert tok.sentinel_ids == list(range(499, 399, -1))
    assert tok.spec == str(small_model.absolute())
    assert load_tokenizer(tok.spec).identity == tok.identity
    assert (
        small_model.with_suffix(".vocab")
        .read_text(encoding="utf-8")
        .splitlines()[-1]
        .startswith("<extra_id_0>\t")
    )


def test_training_is_reproducible(small_model, tmp_path):
    again = train_sentencepiece([C4_EN], tmp_path / "small", vocab_size=500, sentinels=100)
    assert again.read_bytes() == small_model.read_bytes()


def test_model_without_sentinels_has_none(plain_model):
    tok = load_tokenizer(plain_model)
    assert tok.vocab_size == 400
    assert tok.sentinel_ids == []
    assert tok.describe()["n_sentinels"] == 0


def test_append_sentinels_to_plain_model(plain_model, tmp_path):
    out = append_sentinels(plain_model, tmp_path / "with.model", n=10)
    tok = load_tokenizer(out)
    assert tok.vocab_size == 410
    assert tok.sentinel_ids == list(range(409, 399, -1))
    with pytest.raises(UsageError, match="already has sentinel pieces"):
        append_sentinels(out, tmp_path / "twice.model", n=10)


def _edit_pieces(model: Path, out: Path, pieces: list[str]) -> Path:
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.read_bytes())
    for name in pieces:
        p = proto.pieces.add()
        p.piece, p.score, p.type = name, 0.0, p.USER_DEFINED
    out.write_bytes(proto.SerializeToString())
    return out


def test_ascending_sentinels_are_rejected(plain_model, tmp_path):
    # Megatron's own order (<extra_id_0> first after the base vocabulary) is not the mT5 convention
    bad = _edit_pieces(plain_model, tmp_path / "asc.model", [f"<extra_id_{n}>" for n in range(5)])
    with pytest.raises(DataprepError, match=r"<extra_id_0> is at id 400, expected id 404"):
        load_tokenizer(bad)


def test_missing_sentinel_is_rejected(plain_model, tmp_path):
    bad = _edit_pieces(
        plain_model, tmp_path / "gap.model", ["<extra_id_3>", "<extra_id_1>", "<extra_id_0>"]
    )
    with pytest.raises(DataprepError, match="<extra_id_2> is missing"):
        load_tokenizer(bad)


def test_prefixed_sentinels_as_in_real_mt5_are_recognised(plain_model, tmp_path):
    names = [
        f"\u2581<extra_id_{n}>" for n in reversed(range(4))
    ]  # '▁<extra_id_3>' .. '▁<extra_id_0>'
    tok = load_tokenizer(_edit_pieces(plain_model, tmp_path / "mt5style.model", names))
    assert tok.sentinel_ids == [403, 402, 401, 400]


def test_train_sentencepiece_from_texts_and_bad_sizes(tmp_path):
    texts = ["the cat sat on the mat", "a dog and a cat", "the end"] * 20
    kw = dict(sentinels=100, texts=texts, byte_fallback=False)
    path = train_sentencepiece(None, tmp_path / "t", vocab_size=118, **kw)
    tok = load_tokenizer(path)
    assert tok.vocab_size == 118 and tok.sentinel_ids[0] == 117
    assert tok.decode(tok.encode("the cat")) == "the cat"
    with pytest.raises(UsageError, match="too small"):
        train_sentencepiece(None, tmp_path / "u", vocab_size=102, **kw)
    with pytest.raises(DataprepError, match="Vocabulary size too high"):
        train_sentencepiece(None, tmp_path / "v", vocab_size=5000, **kw)


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(DataprepError, match="not a readable SentencePiece model"):
        load_tokenizer(bad)


def test_long_lines_are_cut_not_dropped():
    from dataprep.tokenizers.train import iter_training_lines

    lines = list(iter_training_lines(["short\n\n  \n" + "x" * 2500]))
    assert lines == ["short", "x" * 1000, "x" * 1000, "x" * 500]
