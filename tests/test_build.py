"""build-index end to end: megatron-core reads what we write, bytes independent of --workers,
resume, skips."""

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import zstandard

from dataprep.cli import main

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from megatron.core.datasets.indexed_dataset import IndexedDataset

REPO = Path(__file__).resolve().parents[1]

TEXTS = [
    "Hello world. This is the first document.",
    "Second document: 日本語のテキスト、中文文本。",
    "Emoji 👩‍👩‍👧 and flags 🇯🇵🇫🇷, NBSP\u00a0here, zero\u200bwidth.",
    "A literal <|endoftext|> inside text is ordinary text.",
    "Arabic مرحبا بالعالم and Devanagari नमस्ते दुनिया.\r\nCRLF line.   Whitespace   runs.",
    "Dr. Smith went home. He slept! Did he dream? Yes.",
]


def write_zst(path: Path, records: list, frames: int = 1) -> Path:
    lines = [
        (json.dumps(r, ensure_ascii=False) if not isinstance(r, str) else r) + "\n" for r in records
    ]
    cctx = zstandard.ZstdCompressor(level=3)
    per = max(1, -(-len(lines) // frames))
    with open(path, "wb") as f:
        for i in range(0, len(lines), per):
            f.write(cctx.compress("".join(lines[i : i + per]).encode("utf-8")))
    return path


def pile(texts, set_name="Pile-CC"):
    return [{"text": t, "meta": {"pile_set_name": set_name}} for t in texts]


@pytest.fixture(scope="module")
def hf_gpt2():
    from tokenizers import Tokenizer, models, pre_tokenizers

    d = REPO / "tokenizer_assets" / "gpt2"
    tok = Tokenizer(models.BPE.from_file(str(d / "vocab.json"), str(d / "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return tok


def run_build(*args) -> int:
    return main(["build-index", "--no-progress", *map(str, args)])


def test_megatron_reads_our_build(tmp_path, hf_gpt2, capsys):
    src = write_zst(tmp_path / "00.jsonl.zst", pile(TEXTS), frames=2)
    out = tmp_path / "out" / "toy"
    assert run_build("--input", src, "--output-prefix", out, "--append-eod", "--workers", 1) == 0
    summary = capsys.readouterr().out
    assert "6 documents" in summary
    prefix = str(out) + "_text_document"
    ds = IndexedDataset(prefix)
    assert ds.index.dtype == np.uint16
    assert len(ds) == len(TEXTS)
    assert ds.document_indices.tolist() == list(range(len(TEXTS) + 1))
    for i, text in enumerate(TEXTS):
        expected = hf_gpt2.encode(text).ids + [50256]
        assert ds[i].tolist() == expected
    # the literal special token is text, not the EOD id
    assert ds[3].tolist().count(50256) == 1
    manifest = json.loads(Path(prefix + ".json").read_text())
    assert manifest["documents"] == 6 and manifest["tokenizer"]["vocab_size"] == 50257
    assert manifest["max_token_id"] == 50256
    assert (
        manifest["inputs"][0]["name"] == "00.jsonl.zst"
        and len(manifest["inputs"][0]["sha256"]) == 64
    )
    prov = np.load(prefix + ".provenance.npy")
    assert prov.tolist() == [[0, line] for line in range(1, 7)]


def test_output_bytes_do_not_depend_on_workers(tmp_path):
    texts = [
        f"Document {i}: " + " ".join(TEXTS[i % len(TEXTS)] for _ in range(i % 5 + 1))
        for i in range(300)
    ]
    write_zst(tmp_path / "a.jsonl.zst", pile(texts[:150]))
    write_zst(tmp_path / "b.jsonl.zst", pile(texts[150:]), frames=3)
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert (
            run_build(
                "--input",
                tmp_path / "*.jsonl.zst",
                "--output-prefix",
                out,
                "--append-eod",
                "--workers",
                workers,
                "--chunk-mb",
                0.002,
            )
            == 0
        )
        outs.append(str(out) + "_text_document")
    for suffix in (".bin", ".idx"):
        assert Path(outs[0] + suffix).read_bytes() == Path(outs[1] + suffix).read_bytes()
    assert len(IndexedDataset(outs[0])) == 300


def test_several_json_keys_and_sentences(tmp_path, hf_gpt2):
    src = tmp_path / "x.jsonl"
    src.write_text(
        "".join(json.dumps({"text": t, "title": f"Title {i}"}) + "\n" for i, t in enumerate(TEXTS))
    )
    out = tmp_path / "k"
    assert (
        run_build(
            "--input",
            src,
            "--output-prefix",
            out,
            "--json-keys",
            "text",
            "title",
            "--split-sentences",
            "--workers",
            1,
        )
        == 0
    )
    text_ds = IndexedDataset(str(out) + "_text_sentence")
    title_ds = IndexedDataset(str(out) + "_title_sentence")
    assert len(title_ds.document_indices) == len(TEXTS) + 1
    # the last document has four sentences, each its own sequence
    di = text_ds.document_indices
    last = [text_ds[j].tolist() for j in range(di[-2], di[-1])]
    assert last == [
        hf_gpt2.encode(s).ids
        for s in ["Dr. Smith went home.", "He slept!", "Did he dream?", "Yes."]
    ]


def test_bad_record_stops_with_file_and_line(tmp_path, capsys):
    src = write_zst(
        tmp_path / "bad.jsonl.zst", [*pile(TEXTS[:2]), '{"text": "unterminated', *pile(TEXTS[2:])]
    )
    out = tmp_path / "o"
    assert run_build("--input", src, "--output-prefix", out, "--workers", 1) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl.zst:3" in err and "Traceback" not in err
    assert not Path(str(out) + "_text_document.bin").exists()
    assert not Path(str(out) + "_text_document.idx").exists()
    assert list(tmp_path.glob("o*")) == []  # nothing finished, so nothing is left behind
    # skipping counts the record instead
    assert (
        run_build(
            "--input",
            src,
            "--output-prefix",
            out,
            "--workers",
            1,
            "--skip-bad-records",
            "--overwrite",
        )
        == 0
    )
    assert "skipped records: not_json=1" in capsys.readouterr().out
    manifest = json.loads(Path(str(out) + "_text_document.json").read_text())
    assert manifest["documents"] == len(TEXTS)
    assert sum(manifest["read"]["skipped"].values()) == 1


def test_empty_text_is_a_counted_skip_and_filters_count(tmp_path):
    records = pile(["", "kept one"]) + pile(["filtered out"], "Github") + pile(["kept two"])
    src = write_zst(tmp_path / "e.jsonl.zst", records)
    out = tmp_path / "e"
    assert (
        run_build(
            "--input",
            src,
            "--output-prefix",
            out,
            "--workers",
            1,
            "--filter",
            "pile_set_name=Pile-CC",
        )
        == 0
    )
    manifest = json.loads(Path(str(out) + "_text_document.json").read_text())
    assert manifest["documents"] == 2
    assert manifest["skipped_documents"] == {"empty_text": 1}
    assert manifest["read"]["skipped"].get("filtered") == 1
    prov = np.load(str(out) + "_text_document.provenance.npy")
    assert prov[:, 1].tolist() == [2, 4]


def test_user_mistakes_are_one_line_errors(tmp_path, capsys):
    assert (
        run_build("--input", tmp_path / "nothing-*.jsonl", "--output-prefix", tmp_path / "o") == 2
    )
    assert "nothing-*.jsonl" in capsys.readouterr().err
    src = write_zst(tmp_path / "a.jsonl.zst", pile(TEXTS))
    assert run_build("--input", src, "--output-prefix", tmp_path / "o", "--workers", 1) == 0
    capsys.readouterr()
    assert run_build("--input", src, "--output-prefix", tmp_path / "o", "--workers", 1) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        run_build("--input", src, "--output-prefix", tmp_path / "p", "--tokenizer", "no-such-tok")
        == 2
    )


def test_resume_after_failure_gives_identical_bytes(tmp_path):
    texts = [f"Doc {i} " + TEXTS[i % len(TEXTS)] for i in range(60)]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for j in range(3):
        write_zst(inputs / f"{j:02d}.jsonl.zst", pile(texts[20 * j : 20 * j + 20]))
    ref = tmp_path / "ref"
    assert run_build("--input", inputs, "--output-prefix", ref, "--workers", 1, "--append-eod") == 0

    good = (inputs / "02.jsonl.zst").read_bytes()
    (inputs / "02.jsonl.zst").write_bytes(
        good[: len(good) // 2]
    )  # truncated shard: the build stops there
    out = tmp_path / "res"
    assert run_build("--input", inputs, "--output-prefix", out, "--workers", 2, "--append-eod") == 1
    assert not Path(str(out) + "_text_document.idx").exists()
    (inputs / "02.jsonl.zst").write_bytes(good)
    assert (
        run_build(
            "--input", inputs, "--output-prefix", out, "--workers", 2, "--append-eod", "--resume"
        )
        == 0
    )
    for suffix in (".bin", ".idx"):
        a = Path(str(ref) + "_text_document" + suffix).read_bytes()
        assert a == Path(str(out) + "_text_document" + suffix).read_bytes()
    assert not Path(str(out) + ".dataprep-build").exists()


def test_long_document_is_cut_without_changing_ids(tmp_path, hf_gpt2, monkeypatch):
    import dataprep.build.encode as build

    monkeypatch.setattr(build, "LONG_DOCUMENT_CHARS", 500)
    monkeypatch.setattr(build, "LONG_DOCUMENT_PIECE", 100)
    text = " ".join(TEXTS) * 10 + "  double  spaces\tand tabs. " * 20
    src = tmp_path / "long.jsonl"
    src.write_text(json.dumps({"text": text}) + "\n")
    assert run_build("--input", src, "--output-prefix", tmp_path / "l", "--workers", 1) == 0
    # keep the dataset alive: megatron-core closes its mmap in __del__, invalidating returned views
    ds = IndexedDataset(str(tmp_path / "l") + "_text_document")
    assert ds[0].tolist() == hf_gpt2.encode(text).ids


def test_mc4_gzip_and_inspect(tmp_path, capsys):
    d = tmp_path / "mc4"
    d.mkdir()
    for lang, text in (
        ("ja", "日本語の文章です。"),
        ("ru", "Русский текст."),
        ("en", "English text."),
    ):
        with gzip.open(
            d / f"c4-{lang}.tfrecord-00000-of-00001.json.gz", "wt", encoding="utf-8"
        ) as f:
            f.write(
                json.dumps({"text": text, "timestamp": "2020-01-01T00:00:00Z", "url": "x"}) + "\n"
            )
    out = tmp_path / "m"
    assert (
        run_build("--input", d, "--output-prefix", out, "--languages", "ja,ru", "--workers", 1) == 0
    )
    capsys.readouterr()
    prefix = str(out) + "_text_document"
    assert main(["inspect", prefix, "--doc", "1"]) == 0
    shown = capsys.readouterr().out
    assert "2 documents" in shown and "Русский текст." in shown and "c4-ru" in shown
    assert main(["inspect", prefix, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["documents"] == 2 and info["dtype"] == "uint16"


def test_megatron_style_tokenizer_flags(tmp_path):
    src = write_zst(tmp_path / "a.jsonl.zst", pile(TEXTS[:2]))
    d = REPO / "tokenizer_assets" / "gpt2"
    assert (
        run_build(
            "--input",
            src,
            "--output-prefix",
            tmp_path / "m",
            "--tokenizer-type",
            "GPT2BPETokenizer",
            "--vocab-file",
            d / "vocab.json",
            "--merge-file",
            d / "merges.txt",
            "--workers",
            1,
        )
        == 0
    )
    manifest = json.loads(Path(str(tmp_path / "m") + "_text_document.json").read_text())
    assert manifest["tokenizer"]["spec"] == "gpt2"


def _records_with_problems(n: int = 200) -> list:
    """Pile records with bad ones spread over the file: not JSON, not an object, missing key,
    null text, empty text, a filtered-out set and blank lines."""
    records: list = []
    for i in range(n):
        if i % 37 == 5:
            records.append('{"text": "cut off')
        elif i % 41 == 7:
            records.append("[1, 2]")
        elif i % 43 == 9:
            records.append({"body": "no text key", "meta": {"pile_set_name": "Pile-CC"}})
        elif i % 47 == 11:
            records.append({"text": None, "meta": {"pile_set_name": "Pile-CC"}})
        elif i % 31 == 3:
            records.append({"text": "", "meta": {"pile_set_name": "Pile-CC"}})
        elif i % 29 == 13:
            records.append("")
        else:
            name = "Github" if i % 5 == 0 else "Pile-CC"
            records.append(
                {"text": f"Doc {i}. " + TEXTS[i % len(TEXTS)], "meta": {"pile_set_name": name}}
            )
    return records


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_records_are_the_same_whatever_the_workers(tmp_path, workers, capsys):
    """Workers parse blocks of lines: errors, skip counts and provenance must be what a single
    sequential read gives, whatever the block size and the number of workers."""
    src = write_zst(tmp_path / "in.jsonl.zst", _records_with_problems(), frames=4)
    first_bad = 6  # line of record 5, the first bad one
    # by default the first bad record stops the build, naming its line
    out = tmp_path / f"fail{workers}"
    args = ["--input", src, "--workers", workers, "--chunk-mb", 0.0005]
    assert run_build(*args, "--output-prefix", out) == 1
    err = capsys.readouterr().err
    assert f"in.jsonl.zst:{first_bad}" in err and "Traceback" not in err
    assert not Path(str(out) + "_text_document.bin").exists()
    # with --skip-bad-records every kind is counted, and the result equals a one-block read
    ref, got = tmp_path / f"ref{workers}", tmp_path / f"got{workers}"
    common = ["--input", src, "--skip-bad-records", "--filter", "pile_set_name=Pile-CC"]
    assert run_build(*common, "--workers", 1, "--chunk-mb", 64, "--output-prefix", ref) == 0
    assert (
        run_build(*common, "--workers", workers, "--chunk-mb", 0.0005, "--output-prefix", got) == 0
    )
    a, b = (json.loads(Path(str(p) + "_text_document.json").read_text()) for p in (ref, got))
    assert a["read"] == b["read"] and a["skipped_documents"] == b["skipped_documents"]
    assert set(a["read"]["skipped"]) == {
        "not_json",
        "not_object",
        "missing_key",
        "null_text",
        "blank_line",
        "filtered",
    }
    assert a["skipped_documents"] == {
        "empty_text": sum(
            1
            for i in range(200)
            if i % 31 == 3 and i % 37 != 5 and i % 41 != 7 and i % 43 != 9 and i % 47 != 11
        )
    }
    for suffix in (".bin", ".idx", ".provenance.npy"):
        assert (
            Path(str(ref) + "_text_document" + suffix).read_bytes()
            == Path(str(got) + "_text_document" + suffix).read_bytes()
        )


def test_truncated_file_reports_an_earlier_bad_record_first(tmp_path, capsys):
    """A bad record before the point where a stream breaks is the first error, as when reading
    line by line, even though the main process finds the break while workers still parse."""
    # several zstd blocks (128 KiB of text each), so lines come out before the break
    records = [{"text": f"Doc {i} " + " ".join(TEXTS)} for i in range(2000)]
    records[3] = "not json at all"
    blob = write_zst(tmp_path / "t.jsonl.zst", records).read_bytes()
    (tmp_path / "t.jsonl.zst").write_bytes(blob[: len(blob) - 50])
    args = ["--input", tmp_path / "t.jsonl.zst", "--output-prefix", tmp_path / "o"]
    args += ["--workers", 2, "--chunk-mb", 0.001]
    assert run_build(*args) == 1
    err = capsys.readouterr().err
    assert "t.jsonl.zst:4" in err and "not JSON" in err
    # skipping bad records, the truncation is the error
    assert run_build(*args, "--skip-bad-records") == 1
    assert "truncated" in capsys.readouterr().err


def test_parquet_inputs_give_the_jsonl_bytes_and_tasks_pickle(tmp_path):
    """Parquet texts go to the workers as TextTasks, JSON Lines as BlockTasks: same dataset."""
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataprep.build.tasks import TaskOptions, TextTask

    texts = [t if i % 4 else "" for i, t in enumerate(TEXTS * 5)]
    pq.write_table(pa.table({"text": texts}), tmp_path / "a.parquet")
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    for name in ("a.parquet", "a.jsonl"):
        args = ["--input", tmp_path / name, "--workers", 2, "--chunk-mb", 0.0001, "--append-eod"]
        assert run_build(*args, "--output-prefix", tmp_path / name.replace(".", "_")) == 0
    for suffix in (".bin", ".idx", ".provenance.npy"):
        a = Path(f"{tmp_path / 'a_parquet'}_text_document{suffix}").read_bytes()
        assert a == Path(f"{tmp_path / 'a_jsonl'}_text_document{suffix}").read_bytes()
    task = TextTask(TaskOptions(False, False, True, "<u2"), {"text": ["x"]}, {"text": [1]}, {})
    again = pickle.loads(pickle.dumps(task))
    assert (again.options, again.texts, again.lines) == (task.options, task.texts, task.lines)
