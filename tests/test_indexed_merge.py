"""merge_datasets and `dataprep merge` against megatron-core's `IndexedDatasetBuilder.add_index`."""

import json
import os
import warnings

import numpy as np
import pytest

from dataprep.cli import main
from dataprep.errors import DataprepError, UsageError
from dataprep.fileio import write_json_atomic
from dataprep.indexed import IndexedDatasetReader, IndexedDatasetWriter, merge_datasets
from dataprep.manifest import manifest_path


@pytest.fixture(scope="session")
def megatron():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset


def make_dataset(prefix, seed, *, dtype=np.uint16, n_docs=25, tokenizer=None):
    """A small dataset with empty documents and multi-sentence documents; returns its documents."""
    rng = np.random.default_rng(seed)
    docs = []
    with IndexedDatasetWriter(prefix, dtype=dtype) as w:
        for _ in range(n_docs):
            n_sent = int(rng.integers(0, 4))
            lengths = rng.integers(1, 20, size=n_sent).tolist()
            tokens = rng.integers(0, 50000, size=sum(lengths))
            w.add_document(tokens, sequence_lengths=lengths)
            docs.append(tokens.tolist())
    if tokenizer is not None:
        write_json_atomic(manifest_path(prefix), {"tokenizer": tokenizer, "max_token_id": 49999})
    return docs


def read_bytes(prefix):
    with open(prefix + ".bin", "rb") as b, open(prefix + ".idx", "rb") as i:
        return b.read(), i.read()


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_merge_equals_megatron_add_index(tmp_path, megatron, dtype):
    prefixes = [str(tmp_path / f"part_{i}") for i in range(3)]
    docs = [make_dataset(p, seed, dtype=dtype) for seed, p in enumerate(prefixes)]
    make_dataset(str(tmp_path / "empty"), 0, dtype=dtype, n_docs=0)
    prefixes.insert(1, str(tmp_path / "empty"))

    summary = merge_datasets(prefixes, str(tmp_path / "ours"))
    builder = megatron.IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=dtype)
    for p in prefixes:
        builder.add_index(p)
    builder.finalize(str(tmp_path / "theirs.idx"))
    assert read_bytes(str(tmp_path / "ours")) == read_bytes(str(tmp_path / "theirs"))

    r = IndexedDatasetReader(str(tmp_path / "ours"))
    all_docs = [d for part in docs for d in part]
    assert [r.get_document(i).tolist() for i in range(r.num_documents)] == all_docs
    assert (summary.num_documents, summary.num_sequences) == (r.num_documents, len(r))
    assert summary.num_tokens == r.num_tokens == sum(map(len, all_docs))
    assert [s.num_documents for s in summary.sources] == [25, 0, 25, 25]
    ds = megatron.IndexedDataset(str(tmp_path / "ours"))  # keep it alive: its __del__ unmaps
    assert ds.document_indices.tolist() == r.document_indices.tolist()


def test_merge_rejects_mismatched_dtypes_before_writing(tmp_path):
    make_dataset(str(tmp_path / "a"), 0, dtype=np.uint16)
    make_dataset(str(tmp_path / "b"), 1, dtype=np.int32)
    with pytest.raises(DataprepError, match=r"a \(dtype uint16\) with .*b \(dtype int32\)"):
        merge_datasets([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "out"))
    assert not any(name.startswith("out") for name in os.listdir(tmp_path))


def test_merge_rejects_different_tokenizers(tmp_path):
    make_dataset(str(tmp_path / "a"), 0, tokenizer={"name": "gpt2", "identity": "sha256:aa"})
    make_dataset(str(tmp_path / "b"), 1, tokenizer={"name": "gpt2", "identity": "sha256:bb"})
    make_dataset(str(tmp_path / "c"), 2)  # no manifest (e.g. built by Megatron): not compared
    with pytest.raises(DataprepError, match=r"a with .*b: .*different tokenizers .*sha256:aa"):
        merge_datasets([str(tmp_path / p) for p in "acb"], str(tmp_path / "out"))
    summary = merge_datasets([str(tmp_path / p) for p in "ac"], str(tmp_path / "out"))
    assert summary.tokenizer == {"name": "gpt2", "identity": "sha256:aa"}


def test_merge_refuses_existing_output_unless_overwrite(tmp_path):
    a = str(tmp_path / "a")
    make_dataset(a, 0)
    out = str(tmp_path / "out")
    merge_datasets([a], out)
    with pytest.raises(DataprepError, match="already exist; pass overwrite"):
        merge_datasets([a, a], out)
    assert IndexedDatasetReader(out).num_documents == 25
    merge_datasets([a, a], out, overwrite=True)
    assert IndexedDatasetReader(out).num_documents == 50
    with pytest.raises(UsageError, match="is also an input"):
        merge_datasets([a, out], out, overwrite=True)
    with pytest.raises(DataprepError, match="missing"):
        merge_datasets([a, str(tmp_path / "nope")], str(tmp_path / "out2"))


# ---------------------------------------------------------------------------- the CLI
def test_cli_merges_a_directory_in_sorted_order(tmp_path, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    tok = {"name": "gpt2", "identity": "sha256:aa", "spec": "gpt2"}
    docs = {
        name: make_dataset(str(shards / name), seed, tokenizer=tok)
        for seed, name in enumerate(["s2", "s0", "s1"])
    }
    (shards / "notes.txt").write_text("ignored")
    out = str(tmp_path / "merged")

    assert main(["merge", "--input", str(shards), "--output-prefix", out]) == 0
    stdout = capsys.readouterr().out
    assert "merged 3 datasets" in stdout and "75 documents" in stdout
    r = IndexedDatasetReader(out)
    expected = docs["s0"] + docs["s1"] + docs["s2"]
    assert [r.get_document(i).tolist() for i in range(r.num_documents)] == expected

    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["documents"] == 75 and manifest["tokens"] == r.num_tokens
    assert manifest["sequences"] == len(r) and manifest["dtype"] == "uint16"
    assert [os.path.basename(s["prefix"]) for s in manifest["sources"]] == ["s0", "s1", "s2"]
    assert manifest["tokenizer"] == tok and manifest["max_token_id"] == 49999

    # explicit prefixes (a .bin suffix is accepted) keep the given order; an existing output needs
    # --overwrite (a usage error, exit 2, as in build-index, and a one-line message)
    args = ["merge", "--input", str(shards / "s1.bin"), str(shards / "s0"), "--output-prefix", out]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    r = IndexedDatasetReader(out)
    assert [r.get_document(i).tolist() for i in range(r.num_documents)] == docs["s1"] + docs["s0"]


def test_cli_names_a_half_pair_in_a_directory(tmp_path, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    make_dataset(str(shards / "a"), 0)
    make_dataset(str(shards / "b"), 1)
    os.remove(shards / "b.idx")
    assert main(["merge", "--input", str(shards), "--output-prefix", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "b: has a .bin but no .idx" in err
    assert not (tmp_path / "m.bin").exists()


def test_cli_merge_has_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["merge", "--help"])
    assert e.value.code == 0
    assert "--output-prefix" in capsys.readouterr().out


# ------------------------------------------------------------- provenance and manifests
def write_pile_zst(path, texts):
    import zstandard

    lines = "".join(
        json.dumps({"text": t, "meta": {"pile_set_name": "Pile-CC"}}) + "\n" for t in texts
    )
    path.write_bytes(zstandard.ZstdCompressor().compress(lines.encode("utf-8")))
    return path


def build(tmp_path, name, files):
    """build-index over {file name: texts}; returns the dataset prefix."""
    paths = [str(write_pile_zst(tmp_path / f, texts)) for f, texts in files.items()]
    out = str(tmp_path / name)
    assert (
        main(
            [
                "build-index",
                "--no-progress",
                "--workers",
                "1",
                "--input",
                *paths,
                "--output-prefix",
                out,
            ]
        )
        == 0
    )
    return out + "_text_document"


def source_text(manifest, file_index, line):
    """The text of record `line` (1-based) of input `file_index`, read with plain zstandard."""
    import zstandard

    path = manifest["inputs"][file_index]["path"]
    with open(path, "rb") as f:
        raw = zstandard.ZstdDecompressor().stream_reader(f).read().decode("utf-8")
    return json.loads(raw.splitlines()[line - 1])["text"]


@pytest.fixture
def two_builds(tmp_path):
    a = build(
        tmp_path,
        "a",
        {
            "a0.jsonl.zst": ["alpha one", "", "alpha two"],
            "a1.jsonl.zst": ["alpha three", "alpha four"],
        },
    )
    b = build(tmp_path, "b", {"b0.jsonl.zst": ["", "beta one. Ünïcödé 日本語", "beta two"]})
    return a, b


def test_merge_writes_rebased_provenance_and_summed_manifest(tmp_path, two_builds, capsys):
    from dataprep.manifest import load_manifest, provenance_path
    from dataprep.tokenizers import load_tokenizer

    a, b = two_builds
    out = str(tmp_path / "merged")
    capsys.readouterr()
    assert main(["merge", "--input", a, b, "--output-prefix", out]) == 0
    stdout = capsys.readouterr().out
    assert f"provenance: {out}.provenance.npy" in stdout and "warning" not in stdout

    ma, mb, merged = load_manifest(a), load_manifest(b), load_manifest(out)
    pa, pb = np.load(provenance_path(a)), np.load(provenance_path(b))
    prov = np.load(provenance_path(out))
    assert len(ma["inputs"]) == 2
    assert prov.tolist() == pa.tolist() + (pb + [len(ma["inputs"]), 0]).tolist()
    assert prov.tolist() == [[0, 1], [0, 3], [1, 1], [1, 2], [2, 2], [2, 3]]

    assert merged["inputs"] == ma["inputs"] + mb["inputs"]
    assert merged["merged_from"] == [a, b] and merged["provenance"] == "merged.provenance.npy"
    for key in ("documents", "sequences", "tokens"):
        assert merged[key] == ma[key] + mb[key]
    assert merged["skipped_documents"] == {"empty_text": 2}
    assert merged["read"]["documents"] == ma["read"]["documents"] + mb["read"]["documents"]
    assert merged["tokenizer"] == ma["tokenizer"] and merged["dtype"] == "uint16"
    assert merged["level"] == ma["level"] and merged["max_token_id"] == max(
        ma["max_token_id"], mb["max_token_id"]
    )

    # row i names document i's source line: decode documents and read the lines back
    r = IndexedDatasetReader(out)
    tok = load_tokenizer(merged["tokenizer"]["spec"])
    for i in (0, 3, 4, 5):
        file_index, line = prov[i]
        assert tok.decode(r.get_document(i)) == source_text(merged, file_index, line)
    assert source_text(merged, *prov[4]) == "beta one. Ünïcödé 日本語"

    # inspect reads the merged manifest and provenance
    assert main(["inspect", out, "--doc", "4"]) == 0
    shown = capsys.readouterr().out
    assert "from b0.jsonl.zst:2" in shown and "from 3 input file(s)" in shown

    # a merge of merges rebases again
    nested = str(tmp_path / "nested")
    assert main(["merge", "--input", b, out, "--output-prefix", nested]) == 0
    assert np.load(provenance_path(nested)).tolist() == pb.tolist() + (prov + [1, 0]).tolist()
    assert load_manifest(nested)["inputs"] == mb["inputs"] + merged["inputs"]


def test_merge_without_provenance_in_a_source_warns_and_writes_none(
    tmp_path, two_builds, capsys, caplog
):
    from dataprep.manifest import load_manifest, provenance_path

    a, b = two_builds
    megatron_made = str(tmp_path / "megatron_made")
    make_dataset(megatron_made, 0)  # no manifest, no provenance
    out = str(tmp_path / "merged")
    capsys.readouterr()
    assert main(["merge", "--input", a, megatron_made, b, "--output-prefix", out]) == 0
    captured = capsys.readouterr()
    assert "warning: no provenance written: 1 of 3 sources" in captured.out
    assert f"{megatron_made}: no build manifest" in captured.out
    assert any(megatron_made in r.message for r in caplog.records if r.levelname == "WARNING")
    assert not provenance_path(out).exists()
    merged = load_manifest(out)
    assert merged["provenance"] is None and merged["merged_from"] == [a, megatron_made, b]
    assert merged["documents"] == IndexedDatasetReader(out).num_documents == 4 + 25 + 2
    assert [s["provenance"] for s in merged["sources"]] == [True, False, True]

    # a provenance file that does not match its .bin/.idx is never merged; a stale merged
    # provenance from an earlier run is removed on --overwrite
    assert main(["merge", "--input", a, b, "--output-prefix", out, "--overwrite"]) == 0
    assert provenance_path(out).exists()
    np.save(provenance_path(b), np.zeros((5, 2), np.int64))
    capsys.readouterr()
    assert main(["merge", "--input", a, b, "--output-prefix", out, "--overwrite"]) == 0
    assert "expected (2, 2) integers" in capsys.readouterr().out
    assert not provenance_path(out).exists()
    os.remove(provenance_path(b))
    merge_datasets([a, b], out, overwrite=True)
    assert not provenance_path(out).exists()
    assert load_manifest(out)["sources"][1]["provenance"] is False
