"""`dataprep preview-samples`, run in-process on a small GPT-2 dataset written in tmp_path."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from dataprep.cli import main
from dataprep.fileio import write_json_atomic
from dataprep.indexed import IndexedDatasetWriter
from dataprep.manifest import manifest_path
from dataprep.sampling import GPTSamples, GPTSamplesConfig, build_gpt_samples
from dataprep.tokenizers import load_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé text, 東京 and emoji 🙂 travel together.",
    "Short.",
    "A somewhat longer document that talks about tokenizers, samples and epochs " * 3,
    "x",
    "Megatron concatenates documents and cuts them into windows of seq_length + 1 tokens.",
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gpt2")


def write(prefix, tok, texts, *, manifest=True):
    with IndexedDatasetWriter(prefix, dtype=np.uint16) as w:
        for t in texts:
            w.add_document(np.array([*tok.encode(t), tok.eod_id], dtype=np.uint16))
    if manifest:
        write_json_atomic(manifest_path(prefix), {"tokenizer": {"spec": "gpt2"}})
    return str(prefix)


@pytest.fixture
def dataset(tmp_path, tok):
    return write(tmp_path / "toy", tok, TEXTS * 4)


def test_json_records_are_the_library_samples(dataset, tok, tmp_path, capsys):
    argv = ["preview-samples", dataset, "--seq-length", "16", "--split", "1", "--num-samples", "4"]
    argv += ["--start", "2", "--json", "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert len(lines) == 4
    config = GPTSamplesConfig(seq_length=16, seed=1234, split="1", cache_dir=None)
    samples = GPTSamples(dataset, num_samples=6, split_name="train", config=config)
    for k, line in zip(range(2, 6), lines, strict=True):
        r = json.loads(line)
        assert r["index"] == k
        assert r["tokens"] == samples[k].tolist() and len(r["tokens"]) == 17
        assert r["text"] == tok.decode(r["tokens"])
        docs = [(d["document"], d["start"], d["end"]) for d in r["documents"]]
        assert docs == samples.sample_documents(k)
        assert sum(e - s for _, s, e in docs) == 17


def test_plain_output_marks_document_boundaries_without_ansi(dataset, capsys):
    assert (
        main(["preview-samples", dataset, "--seq-length", "40", "--no-color", "--split", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    assert out.count("--- sample") == 3
    assert "\u2502doc " in out
    assert "tokenizer gpt2" in out


def test_color_output_uses_ansi(dataset, capsys):
    assert main(["preview-samples", dataset, "--seq-length", "40", "--color", "--split", "1"]) == 0
    assert "\x1b[" in capsys.readouterr().out


def test_blend_records_name_their_dataset(tmp_path, tok, capsys):
    a = write(tmp_path / "a", tok, TEXTS * 3)
    b = write(tmp_path / "b", tok, TEXTS[::-1] * 3)
    argv = ["preview-samples", "--data-path", "0.6", a, "0.4", b, "--seq-length", "8"]
    argv += ["--split", "1", "--num-samples", "10", "--json"]
    assert main(argv) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.strip().split("\n")]
    blend = build_gpt_samples(
        ["0.6", a, "0.4", b], seq_length=8, num_samples=10, split="1", split_name="train", seed=1234
    )
    assert [r["dataset"] for r in records] == blend.dataset_index[:10].tolist()
    assert [r["tokens"] for r in records] == [blend[i].tolist() for i in range(10)]


def test_errors_are_one_line_with_exit_codes(tmp_path, tok, dataset, capsys):
    bare = write(tmp_path / "bare", tok, TEXTS, manifest=False)
    assert main(["preview-samples", bare, "--seq-length", "8", "--split", "1"]) == 2
    assert "pass --tokenizer" in capsys.readouterr().err
    missing = str(tmp_path / "nothing_here")
    assert main(["preview-samples", "--data-path", "1", dataset, "1", missing]) == 2
    assert "no dataset has that prefix" in capsys.readouterr().err
    assert main(["preview-samples", dataset, "--seq-length", "0"]) == 2
    assert main(["preview-samples", dataset, "--split", "a,b"]) == 2
    assert main(["preview-samples", dataset, "--data-path", dataset]) == 2
    assert main(["preview-samples", dataset, "--split", "1", "--seq-length", "100000"]) == 1
    err = capsys.readouterr().err
    assert "one sample needs seq_length+1 = 100001" in err
    assert (
        main(
            [
                "preview-samples",
                dataset,
                "--split",
                "1",
                "--seq-length",
                "8",
                "--start",
                "1000",
                "--train-samples",
                "5",
            ]
        )
        == 2
    )
    assert "past the last sample" in capsys.readouterr().err


def test_alpha_weights_by_size_and_prints_the_mix(tmp_path, tok, capsys):
    big = write(tmp_path / "big", tok, TEXTS * 8)
    small = write(tmp_path / "small", tok, TEXTS)
    argv = ["preview-samples", "--data-path", big, small, "--seq-length", "8", "--split", "1"]
    assert main([*argv, "--num-samples", "200", "--alpha", "0.3"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "blend of 2 datasets" in header
    mix = [float(x) for x in re.findall(r"big (\d\.\d+), .*small (\d\.\d+)\)", header)[0]]
    # tokens 8:1, so weights 8**0.3 : 1 = 0.653 : 0.347 (by size it would be 0.889 : 0.111)
    assert mix[0] == pytest.approx(8**0.3 / (8**0.3 + 1), abs=0.01)
    assert main([*argv, "--alpha", "1.5"]) == 2
    assert "--alpha 1.5" in capsys.readouterr().err
    assert main(["preview-samples", "--data-path", "1", big, "1", small, "--alpha", "0.3"]) == 2
    assert "without weights" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [("--eod-mask-loss",), ("--reset-position-ids",),
                                   ("--reset-attention-mask",),
                                   ("--eod-mask-loss", "--reset-position-ids",
                                    "--reset-attention-mask")])  # fmt: skip
def test_packed_data_fields_are_megatron_cores(dataset, tok, tmp_path, capsys, flags):
    """loss_mask, position_ids and attention_mask of each record equal what megatron-core's
    GPTDataset returns for the same sample with the same config flags."""
    mc = pytest.importorskip("megatron.core.datasets.gpt_dataset")
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )

    class Tok:  # the attributes GPTDataset reads
        vocab_size, eod, eos, pad = tok.vocab_size, tok.eod_id, tok.eod_id, -1
        unique_identifiers = {"class": "gpt2"}

    argv = ["preview-samples", dataset, "--seq-length", "16", "--split", "1", "--num-samples",
            "6", "--json", *flags]  # fmt: skip
    assert main(argv) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.strip().split("\n")]
    cfg = mc.GPTDatasetConfig(
        random_seed=1234, sequence_length=16, blend=([dataset], None), split="1",
        reset_position_ids="--reset-position-ids" in flags,
        reset_attention_mask="--reset-attention-mask" in flags,
        eod_mask_loss="--eod-mask-loss" in flags, create_attention_mask=True,
        tokenizer=Tok(), path_to_cache=str(tmp_path / "mc"), mmap_bin_files=True,
    )  # fmt: skip
    (train, _, _) = BlendedMegatronDatasetBuilder(mc.GPTDataset, [6, 0, 0], lambda: True,
                                                  cfg).build()  # fmt: skip
    assert any(tok.eod_id in r["tokens"][:-1] for r in records)  # the flags have work to do
    for r in records:
        item = train[r["index"]]
        assert r["tokens"][:-1] == item["tokens"].tolist()
        assert r["loss_mask"] == item["loss_mask"].tolist()
        assert r["position_ids"] == item["position_ids"].tolist()
        assert r["attention_mask"] == item["attention_mask"][0].int().tolist()
