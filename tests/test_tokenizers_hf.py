"""load_tokenizer dispatch, HF tokenizer.json loading, train_bpe, and `dataprep train-tokenizer`."""

import json
import pickle
import shutil
from pathlib import Path

import pytest

from dataprep.cli import main
from dataprep.errors import DataprepError, UsageError
from dataprep.tokenizers import Tokenizer, load_tokenizer
from dataprep.tokenizers.base import ASSETS_DIR
from dataprep.tokenizers.gpt2 import GPT2BPETokenizer
from dataprep.tokenizers.hf import HFTokenizer
from dataprep.tokenizers.train import train_bpe

ROOT = Path(__file__).resolve().parents[1]
C4_DE = ROOT / "pipelines" / "toy" / "mc4" / "c4-de.tfrecord-00000-of-00001.json.gz"

TEXTS = [
    "Hello world",
    "  leading spaces and\ttabs\r\nand CRLF",
    "Grüße aus Köln, straße",
    "日本語 😀 👨‍👩‍👧 \u00a0nbsp\u200bzwsp",
    "a<|endoftext|>b",
]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bpe")
    train_bpe([C4_DE], out, vocab_size=600)
    return out


def test_unknown_spec_lists_the_choices():
    with pytest.raises(UsageError, match="'gpt2', 'mt5-toy', a SentencePiece") as e:
        load_tokenizer("gpt3")
    assert "gpt3" in str(e.value)


def test_missing_shipped_files_are_reported(tmp_path, monkeypatch):
    import dataprep.tokenizers.base as base

    monkeypatch.setattr(base, "ASSETS_DIR", tmp_path)
    with pytest.raises(DataprepError, match="shipped tokenizer files are missing"):
        load_tokenizer("mt5-toy")


def test_bad_paths(tmp_path):
    with pytest.raises(UsageError, match="holds none of tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "vocab.txt").write_text("a\n")
    with pytest.raises(UsageError, match="neither a SentencePiece"):
        load_tokenizer(tmp_path / "vocab.txt")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataprepError, match="not a readable Hugging Face tokenizer.json"):
        load_tokenizer(tmp_path / "broken.json")


def test_every_backend_follows_the_protocol_and_reloads_from_its_spec(bpe_dir):
    for spec in ("gpt2", "mt5-toy", str(bpe_dir)):
        tok = load_tokenizer(spec)
        assert isinstance(tok, Tokenizer)
        again = load_tokenizer(tok.spec)
        assert again.identity == tok.identity and type(again) is type(tok)
        d = tok.describe()
        assert json.loads(json.dumps(d)) == d
        assert {"spec", "name", "identity", "vocab_size", "eod_id", "n_sentinels"} <= d.keys()
        pickle.dumps(tok.spec)  # what the build sends to worker processes


def test_relative_path_spec_becomes_absolute(bpe_dir, monkeypatch):
    monkeypatch.chdir(bpe_dir.parent)
    tok = load_tokenizer(bpe_dir.name)
    assert tok.spec == str(bpe_dir.absolute())


def test_directory_with_vocab_and_merges_uses_tiktoken(tmp_path):
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(ASSETS_DIR / "gpt2" / f, tmp_path / f)
    tok = load_tokenizer(tmp_path)
    gpt2 = load_tokenizer("gpt2")
    assert isinstance(tok, GPT2BPETokenizer)
    assert tok.spec == str(tmp_path) and tok.identity == gpt2.identity
    assert tok.encode_batch(TEXTS) == gpt2.encode_batch(TEXTS)


def test_vocab_not_in_merge_order_is_refused(tmp_path):
    vocab = json.loads((ASSETS_DIR / "gpt2" / "vocab.json").read_text(encoding="utf-8"))
    a, b = "the", "Ġthe"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    shutil.copy(ASSETS_DIR / "gpt2" / "merges.txt", tmp_path / "merges.txt")
    with pytest.raises(DataprepError, match="not in merge order"):
        load_tokenizer(tmp_path)


def test_train_bpe_gives_a_loadable_byte_level_tokenizer(bpe_dir):
    tok = load_tokenizer(bpe_dir / "tokenizer.json")
    assert isinstance(tok, HFTokenizer)
    assert tok.vocab_size == 600
    assert tok.eod_id == tok.eos_id == 0 and tok.id_to_piece(0) == "<|endoftext|>"
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.sentinel_ids) == (None, None, None, [])
    for t in TEXTS:
        ids = tok.encode(t)
        assert tok.decode(ids) == t
        assert 0 not in ids  # the literal <|endoftext|> is never the special id
    assert len(tok.encode("Straße und Bundesregierung")) < len(
        "Straße und Bundesregierung".encode()
    )
    assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]
    assert tok.encode_batch(TEXTS, num_threads=2) == [tok.encode(t) for t in TEXTS]


def test_hf_special_tokens_are_found(tmp_path):
    from tokenizers import Tokenizer as HFLib
    from tokenizers import models, pre_tokenizers

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "<s>": 3, "hello": 4, "world": 5}
    t = HFLib(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.add_special_tokens(["<pad>", "</s>", "<unk>", "<s>"])
    t.add_tokens(["<extra_id_1>", "<extra_id_0>"])  # ids 6, 7: the last two, descending
    t.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path / "tokenizer.json")
    assert (tok.pad_id, tok.eos_id, tok.unk_id, tok.bos_id, tok.eod_id) == (0, 1, 2, 3, 1)
    assert tok.sentinel_ids == [7, 6]
    assert tok.encode("hello there world") == [4, 2, 5]
    ids = tok.encode("hello </s> <extra_id_0>")  # special-token text is text: '</', 's', '>'
    assert 1 not in ids and ids == [4, 2, 2, 2, 7]

    plain = HFLib(models.WordLevel({"a": 0, "b": 1}, unk_token="a"))
    plain.save(str(tmp_path / "plain.json"))
    tok = load_tokenizer(tmp_path / "plain.json")
    assert (tok.pad_id, tok.eos_id, tok.eod_id, tok.bos_id) == (None, None, None, None)
    assert tok.unk_id == 0 and tok.name == "plain"


def test_cli_train_sentencepiece(tmp_path, capsys):
    out = tmp_path / "sp"
    args = [
        "--input",
        str(C4_DE),
        "--output",
        str(out),
        "--vocab-size",
        "500",
        "--max-documents",
        "30",
    ]
    rc = main(["train-tokenizer", *args])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["vocab_size"] == 500 and d["n_sentinels"] == 100 and d["eod_id"] == 1
    assert load_tokenizer(str(out) + ".model").sentinel_ids[0] == 499


def test_cli_train_bpe_and_usage_errors(tmp_path, capsys):
    rc = main(
        [
            "train-tokenizer",
            "--type",
            "bpe",
            "--input",
            str(C4_DE),
            "--output",
            str(tmp_path / "b"),
            "--vocab-size",
            "400",
        ]
    )
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["vocab_size"] == 400 and d["kind"] == "hf-tokenizers"
    assert (tmp_path / "b" / "tokenizer.json").is_file()
    rc = main(
        [
            "train-tokenizer",
            "--input",
            str(C4_DE),
            "--output",
            str(tmp_path / "c"),
            "--vocab-size",
            "0",
        ]
    )
    assert rc == 2 and "--vocab-size 0" in capsys.readouterr().err
    rc = main(
        [
            "train-tokenizer",
            "--input",
            str(tmp_path / "missing.jsonl"),
            "--output",
            str(tmp_path / "d"),
            "--vocab-size",
            "500",
        ]
    )
    assert rc == 2
