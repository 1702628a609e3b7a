"""build-index --dedup: exact copies (after NFC and trimming only) and near-duplicates (MinHash
LSH over word 5-grams) are left out in input order, counted, and listed by inspect --duplicates;
the result does not depend on --workers, chunking or --resume."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from dataprep.cli import main
from dataprep.dedup import normalize
from tests.test_build import pile, run_build, write_zst

WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()
)


def essay(seed: int, n: int = 200) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(n))


def edited(text: str, changes: int, seed: int) -> str:
    words = text.split()
    rng = random.Random(seed)
    for i in rng.sample(range(len(words)), changes):
        words[i] = "CHANGED"
    return " ".join(words)


def manifest(prefix) -> dict:
    return json.loads(Path(f"{prefix}_text_document.json").read_text())


def test_normalize_is_nfc_and_trimming_only():
    assert normalize(" Caf\u0065\u0301\n") == "Caf\u00e9"
    assert normalize("a  b") == "a  b" and normalize("A") != normalize("a")


def test_exact_dedup_counts_and_lists_both_copies(tmp_path, capsys):
    a = [essay(i, 30) for i in range(5)]
    cafe = "Un caf\u00e9 noir, s'il vous pla\u00eet."
    write_zst(tmp_path / "0.jsonl.zst", pile([a[0], a[1], cafe, a[2]]))
    copies = [
        a[1],  # exact
        "  " + a[0] + "\n",  # whitespace around it
        "Un cafe\u0301 noir, s'il vous pla\u00eet.",  # NFD spelling of the same text
        a[2].replace(" ", "  ", 1),  # inner whitespace differs: not a copy
        a[3],
    ]
    write_zst(tmp_path / "1.jsonl.zst", pile(copies))
    out = tmp_path / "o"
    args = ["--input", tmp_path, "--output-prefix", out, "--dedup", "exact", "--workers", 1]
    assert run_build(*args) == 0
    assert "duplicate_exact=3" in capsys.readouterr().out
    m = manifest(out)
    assert m["documents"] == 6 and m["dedup"]["removed"] == {"exact": 3, "near": 0}
    prov = np.load(f"{out}_text_document.provenance.npy").tolist()
    assert prov == [[0, 1], [0, 2], [0, 3], [0, 4], [1, 4], [1, 5]]
    pairs = np.load(f"{out}_text_document.duplicates.npy").tolist()
    assert pairs == [[1, 1, 0, 2, 0], [1, 2, 0, 1, 0], [1, 3, 0, 3, 0]]
    assert main(["inspect", f"{out}_text_document", "--duplicates", "2"]) == 0
    shown = capsys.readouterr().out
    assert "duplicates removed (exact): 3 (exact 3, near 0)" in shown
    assert "exact: 1.jsonl.zst:1 repeats 0.jsonl.zst:2 (document 1)" in shown
    assert (
        "1.jsonl.zst:2 repeats 0.jsonl.zst:1 (document 0)" in shown and "1.jsonl.zst:3" not in shown
    )


def test_minhash_finds_edited_copies_the_same_way_for_any_workers(tmp_path):
    originals = [essay(i) for i in range(20)]
    texts = originals + [edited(originals[i], 2, i) for i in (3, 7)]  # ~0.95 Jaccard
    texts += [edited(originals[5], 60, 5)]  # 60 of 200 words changed: not a copy at 0.8
    texts += [originals[9]]
    write_zst(tmp_path / "a.jsonl.zst", pile(texts))
    runs = []
    for workers, chunk in ((1, 64), (2, 0.002)):
        out = tmp_path / f"w{workers}"
        args = ["--input", tmp_path / "a.jsonl.zst", "--output-prefix", out, "--dedup", "minhash"]
        assert run_build(*args, "--workers", workers, "--chunk-mb", chunk) == 0
        runs.append(out)
    for suffix in (".bin", ".idx", ".provenance.npy", ".duplicates.npy"):
        a, b = (Path(f"{p}_text_document{suffix}").read_bytes() for p in runs)
        assert a == b
    m = manifest(runs[0])
    assert m["dedup"]["removed"] == {"exact": 1, "near": 2} and m["documents"] == 21
    pairs = np.load(f"{runs[0]}_text_document.duplicates.npy").tolist()
    assert pairs == [[0, 21, 0, 4, 1], [0, 22, 0, 8, 1], [0, 24, 0, 10, 0]]
    # a stricter threshold keeps the edited copies
    strict = tmp_path / "strict"
    args = ["--input", tmp_path / "a.jsonl.zst", "--output-prefix", strict, "--dedup", "minhash"]
    assert run_build(*args, "--dedup-threshold", 0.95, "--workers", 1) == 0
    assert manifest(strict)["dedup"]["removed"] == {"exact": 1, "near": 0}


@pytest.mark.parametrize("mode", ["exact", "minhash"])
def test_dedup_resumes_with_the_same_result(tmp_path, mode):
    originals = [essay(i, 80) for i in range(12)]
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_zst(inputs / "0.jsonl.zst", pile(originals[:6]))
    write_zst(inputs / "1.jsonl.zst", pile(originals[6:] + [originals[1]]))
    write_zst(inputs / "2.jsonl.zst", pile([originals[2], edited(originals[7], 1, 0), "new"]))
    common = ["--input", inputs, "--dedup", mode, "--workers", 1]
    assert run_build(*common, "--output-prefix", tmp_path / "ref") == 0
    good = (inputs / "2.jsonl.zst").read_bytes()
    (inputs / "2.jsonl.zst").write_bytes(good[:20])
    out = tmp_path / "res"
    assert run_build(*common, "--output-prefix", out) == 1
    (inputs / "2.jsonl.zst").write_bytes(good)
    assert run_build(*common, "--output-prefix", out, "--resume") == 0
    for suffix in (".bin", ".idx", ".provenance.npy", ".duplicates.npy"):
        a, b = (Path(f"{p}_text_document{suffix}").read_bytes() for p in (tmp_path / "ref", out))
        assert a == b
    removed = manifest(out)["dedup"]["removed"]
    assert removed == ({"exact": 2, "near": 1} if mode == "minhash" else {"exact": 2, "near": 0})


def test_inspect_duplicates_without_dedup_is_a_usage_error(tmp_path, capsys):
    write_zst(tmp_path / "a.jsonl.zst", pile(["one", "two"]))
    assert run_build("--input", tmp_path, "--output-prefix", tmp_path / "o", "--workers", 1) == 0
    assert main(["inspect", f"{tmp_path / 'o'}_text_document", "--duplicates"]) == 2
    assert "built without --dedup" in capsys.readouterr().err


def test_a_threshold_minhash_cannot_band_is_one_line_naming_the_flags(tmp_path, capsys):
    write_zst(tmp_path / "a.jsonl.zst", [pile("one text")])
    args = ["--input", tmp_path / "a.jsonl.zst", "--output-prefix", tmp_path / "o"]
    assert run_build(*args, "--dedup", "minhash", "--dedup-threshold", 0.999, "--workers", 1) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(
        "dataprep build-index: error: --dedup-threshold 0.999: MinHash LSH cannot"
    )
    assert err.endswith("or --dedup exact for identical texts")
