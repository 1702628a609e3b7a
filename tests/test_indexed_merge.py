"""merge_datasets and `dataprep merge` against megatron-core's `IndexedDatasetBuilder.add_index`."""

import json
import os
import warnings

import numpy as np
import pytest

from dataprep.cli import main
from dataprep.errors import DataprepError, UsageError
from dataprep.indexed import IndexedDatasetReader, IndexedDatasetWriter, merge_datasets
from dataprep.manifest import manifest_path, write_json_atomic


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
    with pytest.raises(DataprepError, match="already exist; pass --overwrite"):
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
    # --overwrite (exit 1 and a one-line message)
    args = ["merge", "--input", str(shards / "s1.bin"), str(shards / "s0"), "--output-prefix", out]
    assert main(args) == 1
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
