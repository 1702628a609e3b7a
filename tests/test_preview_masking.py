"""`dataprep preview-masking` in-process, and the rendering helpers of dataprep/preview.py."""

import io
import json

import numpy as np
import pytest

from dataprep.cli import main
from dataprep.errors import UsageError
from dataprep.fileio import write_json_atomic
from dataprep.indexed import IndexedDatasetReader, IndexedDatasetWriter
from dataprep.manifest import manifest_path
from dataprep.preview import decode_pieces, highlight, render_ids, use_color
from dataprep.sampling.t5_samples import T5Samples
from dataprep.tokenizers import load_tokenizer

TEXTS = [
    "La capitale de la France est Paris. Le chat dort sur le tapis rouge.",
    "The quick brown fox jumps over the lazy dog, again and again.",
    "東京は日本の首都です。 Berlin ist die Hauptstadt von Deutschland!",
    "Ein kleiner Satz, noch einer; und dann: das Ende.",
]


@pytest.fixture(scope="module")
def spm_model():
    """The shipped mT5-convention SentencePiece (8000 ids, <extra_id_0> = 7999)."""
    return "mt5-toy"


@pytest.fixture(scope="module")
def tok(spm_model):
    return load_tokenizer(spm_model)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, spm_model, tok):
    """A dataset of 200 documents (EOS appended) with a build manifest naming the tokenizer."""
    prefix = str(tmp_path_factory.mktemp("ds") / "toy_text_document")
    with IndexedDatasetWriter(prefix, dtype=np.uint16) as w:
        for i in range(200):
            w.add_document(np.array(tok.encode(TEXTS[i % len(TEXTS)]) + [tok.eos_id]))
    write_json_atomic(manifest_path(prefix), {"tokenizer": {"spec": spm_model}})
    return prefix


def run_cli(capsys, *argv):
    code = main(["preview-masking", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_json_samples_are_exact(capsys, dataset, tok):
    code, out, err = run_cli(capsys, dataset, "--json", "--seq-length", 64, "--num-samples", 4)
    assert code == 0, err
    recs = records(out)
    assert [r["index"] for r in recs] == [0, 1, 2, 3]
    corpus = IndexedDatasetReader(dataset).tokens()
    tokens_length, targets_length = T5Samples.lengths_for(64)
    for r in recs:
        k = r["index"]
        assert r["tokens"] == corpus[k * tokens_length : (k + 1) * tokens_length].tolist()
        assert len(r["inputs"]) == 64 and len(r["targets"]) == targets_length
        assert r["inputs"][-1] == r["targets"][-1] == tok.eos_id
        assert r["sentinels"] == tok.sentinel_ids[: r["num_spans"]]
        assert r["noise_density"] == pytest.approx(r["num_noise"] / tokens_length, abs=1e-6)
        # inputs and targets interleave back into the raw tokens
        sset = set(tok.sentinel_ids)
        clean, noise, cur = [], [], []
        for i in r["inputs"][:-1]:
            if i in sset:
                clean.append(cur)
                cur = []
            else:
                cur.append(i)
        clean.append(cur)
        cur = []
        for i in r["targets"][1:-1]:
            if i in sset:
                noise.append(cur)
                cur = []
            else:
                cur.append(i)
        noise.append(cur)
        rebuilt = [t for c, n in zip(clean, noise + [[]], strict=True) for t in c + n]
        assert rebuilt == r["tokens"]
        # texts: the decoded ids with sentinels and EOS visible as markers, and no colour codes
        assert r["text"].replace("</s>", "") == tok.decode(r["tokens"])
        assert r["inputs_text"].count("<extra_id_") == r["num_spans"]
        assert r["targets_text"].startswith("<extra_id_0>") and r["targets_text"].endswith("</s>")
        assert "\x1b" not in out


def test_start_and_seed(capsys, dataset, tok):
    _, out, _ = run_cli(capsys, dataset, "--json", "--seq-length", 64, "--num-samples", 3)
    _, out2, _ = run_cli(
        capsys, dataset, "--json", "--seq-length", 64, "--start", 2, "--num-samples", 1
    )
    assert records(out)[2] == records(out2)[0]  # a sample is the same whatever else is shown
    _, out3, _ = run_cli(
        capsys, dataset, "--json", "--seq-length", 64, "--num-samples", 3, "--seed", 99
    )
    assert [r["inputs"] for r in records(out3)] != [r["inputs"] for r in records(out)]
    # the same as the library computes for (seed, k)
    samples = T5Samples(dataset, sentinel_ids=tok.sentinel_ids, eos_id=tok.eos_id, inputs_length=64)
    assert records(out)[1]["inputs"] == samples[1].inputs.tolist()


def test_text_output_plain_and_colour(capsys, dataset, spm_model):
    code, out, _ = run_cli(capsys, dataset, "--seq-length", 64, "--num-samples", 2, "--no-color")
    assert code == 0
    assert "=== sample 0" in out and "=== sample 1" in out and "=== sample 2" not in out
    assert "<extra_id_0>" in out and "\x1b" not in out
    assert "encoder input 64 ids, decoder target 14 ids" in out
    assert "--- original text" in out and "--- decoder target" in out
    code, out, _ = run_cli(
        capsys,
        dataset,
        "--seq-length",
        64,
        "--num-samples",
        1,
        "--color",
        "--tokenizer",
        spm_model,
    )
    assert code == 0 and "\x1b[1;36m<extra_id_0>\x1b[0m" in out


def test_input_file_mode(capsys, tmp_path, spm_model, tok):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"body": t}) + "\n" for t in TEXTS * 20), encoding="utf-8")
    code, out, err = run_cli(
        capsys,
        "--input",
        path,
        "--json-keys",
        "body",
        "--tokenizer",
        spm_model,
        "--json",
        "--seq-length",
        32,
        "--num-samples",
        2,
        "--start",
        1,
    )
    assert code == 0, err
    flat = np.concatenate([tok.encode(t) for t in TEXTS * 20])  # no separator between documents
    samples = T5Samples(flat, sentinel_ids=tok.sentinel_ids, eos_id=tok.eos_id, inputs_length=32)
    recs = records(out)
    assert [r["index"] for r in recs] == [1, 2]
    for r in recs:
        assert r["tokens"] == samples[r["index"]].tokens.tolist()
        assert r["targets"] == samples[r["index"]].targets.tolist()


def test_prompt_mode(capsys, spm_model, tok):
    code, out, _ = run_cli(
        capsys,
        "--prompt",
        "La capitale de la France est <mask>.",
        "--tokenizer",
        spm_model,
        "--json",
    )
    assert code == 0
    r = json.loads(out)
    x0 = tok.sentinel_ids[0]
    assert x0 == tok.vocab_size - 1 == 7999  # <extra_id_0> is the last id of mt5-toy
    assert r["inputs"][-3:] == [x0, tok.encode(".")[-1], tok.eos_id]  # "... <extra_id_0> . </s>"
    assert r["sentinels"] == [x0] and r["inputs"].count(x0) == 1 and r["inputs"][-1] == tok.eos_id
    assert r["pieces"] == [tok.id_to_piece(i) for i in r["inputs"]]
    assert tok.decode(r["inputs"]) == "La capitale de la France est <extra_id_0>."
    assert r["nemo_compatible"] is False  # "<mask>." is not a whitespace word equal to <mask>
    # mid-word and repeated masks are numbered in order
    _, out, _ = run_cli(capsys, "--prompt", "x<mask>y <mask>", "--tokenizer", spm_model, "--json")
    r = json.loads(out)
    assert r["sentinels"] == tok.sentinel_ids[:2] and r["nemo_compatible"] is False
    _, out, _ = run_cli(capsys, "--prompt", "est <mask> .", "--tokenizer", spm_model, "--json")
    assert json.loads(out)["nemo_compatible"] is True
    code, out, _ = run_cli(capsys, "--prompt", "est <mask>.", "--tokenizer", spm_model)
    assert code == 0 and "<extra_id_0>" in out and str(x0) in out
    assert "note: NeMo's megatron_t5_eval would leave '<mask>.'" in out


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["--noise-density", 0], 2, "--noise-density 0.0 must be strictly between 0 and 1"),
        (["--noise-density", 1], 2, "--noise-density 1.0 must be strictly between 0 and 1"),
        (["--mean-noise-span-length", 0], 2, "--mean-noise-span-length 0.0 must be > 0"),
        (["--seq-length", 0], 2, "--seq-length 0 must be >= 3: an encoder input needs"),
        (["--seq-length", 1], 2, "--seq-length 1 must be >= 3: an encoder input needs"),
        (["--seq-length", 2], 2, "--seq-length 2 must be >= 3: an encoder input needs"),
        (["--seq-length", 4096], 2, "makes 227 noise spans per sample but the tokenizer has 100"),
        (["--tokenizer", "gpt2"], 2, "tokenizer gpt2 has no sentinel pieces"),
        (["--start", 10**6, "--seq-length", 64], 2, "--start 1000000 is past the last sample"),
    ],
)
def test_bad_input(capsys, dataset, argv, code, message):
    got, out, err = run_cli(capsys, dataset, *argv)
    assert got == code
    assert out == ""
    assert err.count("\n") == 1 and message in err


def test_dataset_shorter_than_one_sample(capsys, tmp_path, spm_model, tok):
    prefix = str(tmp_path / "short")
    with IndexedDatasetWriter(prefix, dtype=np.uint16) as w:
        w.add_document(np.array(tok.encode(TEXTS[0]) + [tok.eos_id]))
    n = len(tok.encode(TEXTS[0])) + 1
    code, out, err = run_cli(capsys, prefix, "--tokenizer", spm_model)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert f"has {n} tokens, fewer than the 568 raw tokens one sample of encoder length 512" in err


def test_bad_usage_before_any_work(capsys, tmp_path, spm_model):
    missing = tmp_path / "nothing_here"
    # flags are checked before the dataset is opened (it does not exist)
    code, _, err = run_cli(capsys, missing, "--noise-density", 1.5)
    assert code == 2 and "--noise-density 1.5" in err
    code, _, err = run_cli(capsys)
    assert code == 2 and "give a dataset PREFIX or --input FILE" in err
    code, _, err = run_cli(capsys, "--input", missing)
    assert code == 2 and "--input needs --tokenizer" in err
    code, _, err = run_cli(capsys, "--prompt", "no marker here", "--tokenizer", spm_model)
    assert code == 2 and "has no <mask> marker" in err
    code, _, err = run_cli(capsys, "--input", tmp_path, "--tokenizer", spm_model)
    assert code == 2 and "is a directory" in err
    code, _, err = run_cli(capsys, "--input", missing, "--tokenizer", spm_model)
    assert code == 2 and f"--input {missing} does not exist" in err
    code, _, err = run_cli(capsys, missing)  # the prefix is named before the manifest is sought
    assert code == 2 and "no dataset has that prefix" in err


def test_min_seq_length_is_t5s(capsys, dataset):
    # the bound the flag check states is the one T5Samples.lengths_for enforces
    from dataprep.sampling.t5_samples import MIN_INPUTS_LENGTH as MIN_SEQ_LENGTH

    for density in (0.01, 0.15, 0.5, 0.9):
        assert T5Samples.lengths_for(MIN_SEQ_LENGTH, noise_density=density)[0] >= 2
        with pytest.raises(UsageError):
            T5Samples.lengths_for(MIN_SEQ_LENGTH - 1, noise_density=density)
    code, out, _ = run_cli(capsys, dataset, "--seq-length", MIN_SEQ_LENGTH, "--num-samples", 1)
    assert code == 0 and "encoder input 3 ids" in out


def test_prefix_without_manifest_needs_tokenizer(capsys, tmp_path, tok):
    prefix = str(tmp_path / "bare")
    with IndexedDatasetWriter(prefix, dtype=np.uint16) as w:
        w.add_document(np.array(tok.encode(TEXTS[0]) + [tok.eos_id]))
    code, out, err = run_cli(capsys, prefix)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "no build manifest (bare.json) names the tokenizer; pass --tokenizer" in err


def test_use_color_and_highlight(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert use_color(Tty()) is True and use_color(io.StringIO()) is False
    assert use_color(io.StringIO(), True) is True and use_color(Tty(), False) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_color(Tty()) is False
    assert highlight("x", "bold cyan") == "\x1b[1;36mx\x1b[0m"
    assert highlight("x", "bold cyan", color=False) == "x"
    with pytest.raises(ValueError, match="unknown style 'blinking'"):
        highlight("x", "blinking")


def test_render_ids_keeps_the_decoded_text(tok):
    ids = tok.encode(TEXTS[0] + " " + TEXTS[2])
    for cuts in ([], [1], [3, 4, 10], list(range(len(ids)))):
        assert "".join(decode_pieces(tok.decode, ids, cuts)) == tok.decode(ids)
    marked = ids[:5] + [tok.sentinel_ids[3]] + ids[5:] + [tok.eos_id]
    plain = render_ids(
        tok.decode,
        marked,
        marks={tok.sentinel_ids[3]: ("<extra_id_3>", "cyan"), tok.eos_id: ("</s>", "dim")},
        color=False,
    )
    assert plain == tok.decode(marked) + "</s>"
    # a sentinel between the bytes of a byte-fallback character: the text is still decode's own
    ids = tok.encode("a \U0001d11e b")  # ▁a ▁ <0xF0> <0x9D> <0x84> <0x9E> ▁b
    assert sum(tok.id_to_piece(i).startswith("<0x") for i in ids) == 4
    split = ids[:4] + [tok.sentinel_ids[0]] + ids[4:]
    marks = {tok.sentinel_ids[0]: ("<extra_id_0>", "cyan")}
    assert render_ids(tok.decode, split, marks=marks, color=False) == tok.decode(split)
    ranged = render_ids(tok.decode, ids, ranges=[(2, 6, "underline")], color=True)
    assert ranged.replace("\x1b[4m", "").replace("\x1b[0m", "") == tok.decode(ids)
    assert render_ids(lambda ids: "a\x1bb", [1], color=False) == "a\\x1bb"
