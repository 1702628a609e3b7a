"""`dataprep report`: the picture, its panels and the figures behind them, on tiny real builds."""

from __future__ import annotations

import base64
import gzip
import json
import re

import numpy as np
import pytest
import zstandard

from dataprep.cli import main
from dataprep.fileio import write_json_atomic
from dataprep.manifest import load_manifest, manifest_path
from dataprep.report import collect_report, count_token_ids
from dataprep.report_figure import draw_report, printable
from dataprep.tokenizers import load_tokenizer

# (pile_set_name, text); "" is an empty text (a counted skip), None a malformed line
PILE = [
    ("Github", "def f(x):\n    return x + 1\n" * 5),
    ("Pile-CC", "The quick brown fox jumps over the lazy dog. " * 8),
    ("Github", None),
    ("Pile-CC", ""),
    ("Gutenberg (PG-19)", "It was the best of times, it was the worst of times. " * 12),
    ("Github", "import numpy as np\nprint(np.arange(3))\n" * 3),
    ("Pile-CC", "Weather today: sunny, 21 degrees. " * 4),
]


def _write_pile(path, records) -> None:
    lines = []
    for name, text in records:
        if text is None:
            lines.append('{"text": broken')
        else:
            lines.append(json.dumps({"text": text, "meta": {"pile_set_name": name}}))
    path.write_bytes(zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode()))


@pytest.fixture(scope="module")
def pile(tmp_path_factory):
    d = tmp_path_factory.mktemp("report_pile")
    _write_pile(d / "00.jsonl.zst", PILE[:4])
    _write_pile(d / "01.jsonl.zst", PILE[4:])
    prefix = str(d / "out" / "pile")
    argv = ["build-index", "--input", str(d), "--output-prefix", prefix, "--append-eod"]
    assert main([*argv, "--workers", "1", "--skip-bad-records", "--no-progress"]) == 0
    return prefix + "_text_document"


@pytest.fixture(scope="module")
def mc4(tmp_path_factory):
    d = tmp_path_factory.mktemp("report_mc4")
    texts = {
        "de": ["Der schnelle braune Fuchs springt über den faulen Hund. " * 30] * 4,
        "ru": ["Съешь же ещё этих мягких французских булок, да выпей чаю. " * 30] * 2,
    }
    for lang, docs in texts.items():
        with gzip.open(d / f"c4-{lang}.tfrecord-00000-of-00001.json.gz", "wt") as f:
            for t in docs:
                f.write(json.dumps({"text": t, "url": "u", "timestamp": "t"}) + "\n")
    prefix = str(d / "out" / "mc4")
    argv = ["build-index", "--input", str(d), "--output-prefix", prefix, "--tokenizer", "mt5-toy"]
    assert main([*argv, "--append-eod", "--workers", "1", "--no-progress"]) == 0
    return prefix + "_text_document", texts


def _expected_pile_mix():
    tok = load_tokenizer("gpt2")
    mix: dict[str, list[int]] = {}
    for name, text in PILE:
        if text:  # the malformed line and the empty text are skipped by the build
            acc = mix.setdefault(name, [0, 0])
            acc[0] += 1
            acc[1] += len(tok.encode(text)) + 1  # + EOD
    return {k: tuple(v) for k, v in mix.items()}


def test_pile_mix_is_read_back_by_provenance(pile):
    data = collect_report(pile)
    assert data.mix_by == "pile_set_name" and data.mix_note == ""
    assert data.mix == _expected_pile_mix()
    assert data.skipped == {"empty_text": 1, "not_json": 1}
    assert data.duplicates is None
    assert data.t5 is None and "has no sentinels" in data.t5_note
    # token-id counts are over every token, and the top id is decoded with the manifest's tokenizer
    assert data.tokens_counted == data.num_tokens == sum(t for _, t in data.mix.values())
    top_id, top_count, piece = data.top_ids[0]
    assert top_count == int(data.token_counts.max())
    assert piece == load_tokenizer("gpt2").decode([top_id]).replace(" ", "\u2423")


def test_pile_mix_without_reread_is_by_input_file(pile):
    data = collect_report(pile, reread=False)
    assert data.mix_by == "input file" and "--no-reread" in data.mix_note
    assert {k: v[0] for k, v in data.mix.items()} == {"00.jsonl.zst": 2, "01.jsonl.zst": 3}


def test_changed_input_is_said_not_guessed(pile, tmp_path):
    prefix = str(tmp_path / "copy")
    for suffix in (".bin", ".idx", ".provenance.npy"):
        (tmp_path / f"copy{suffix}").write_bytes(open(pile + suffix, "rb").read())
    manifest = load_manifest(pile)
    manifest["inputs"][1]["size"] += 1  # as if 01.jsonl.zst had been rewritten since the build
    write_json_atomic(manifest_path(prefix), manifest)
    data = collect_report(prefix)
    assert "01.jsonl.zst: changed since the build" in data.mix_note
    assert data.mix["(unknown)"][0] == 3 and data.mix["Github"][0] == 1


def test_mc4_language_mix_and_t5_masking(mc4):
    prefix, texts = mc4
    data = collect_report(prefix, seq_length=64, t5_samples=50)
    assert data.mix_by == "language"
    assert {k: v[0] for k, v in data.mix.items()} == {"de": 4, "ru": 2}
    t5 = data.t5
    assert t5 is not None and t5["samples"] == min(50, t5["of"])
    # every sample has round(tokens_length * 0.15) noise tokens, so the achieved density is fixed
    n = t5["tokens_length"]
    assert np.allclose(t5["densities"], round(n * 0.15) / n)
    assert t5["span_lengths"].min() >= 1
    assert 2.0 < t5["span_lengths"].mean() < 4.5  # T5 mean noise span length 3


def test_duplicates_recorded_in_the_manifest_are_shown(pile, tmp_path):
    prefix = str(tmp_path / "dedup")
    for suffix in (".bin", ".idx", ".provenance.npy"):
        (tmp_path / f"dedup{suffix}").write_bytes(open(pile + suffix, "rb").read())
    manifest = load_manifest(pile)
    manifest["dedup"] = {"method": "exact", "exact_duplicates": 3}
    manifest["skipped_documents"] = {"near_duplicate": 2}
    write_json_atomic(manifest_path(prefix), manifest)
    data = collect_report(prefix)
    assert data.duplicates == {"exact_duplicates": 3, "near_duplicate": 2}
    _, panels = draw_report(data)
    assert len(panels["duplicates removed"].patches) == 2


def test_duplicates_removed_by_build_index_dedup_are_shown(tmp_path):
    from dataprep.cli import main

    docs = ["alpha beta gamma", "  alpha beta gamma\n", "delta epsilon", "zeta", "delta epsilon"]
    src = tmp_path / "dups.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs), encoding="utf-8")
    assert main(["build-index", "--input", str(src), "--output-prefix", str(tmp_path / "d"),
                 "--tokenizer", "gpt2", "--dedup", "exact", "--no-progress"]) == 0  # fmt: skip
    data = collect_report(str(tmp_path / "d_text_document"))
    assert data.duplicates == {"exact (--dedup exact)": 2, "near (--dedup exact)": 0}
    _, panels = draw_report(data)
    assert len(panels["duplicates removed"].patches) == 2


def test_every_panel_is_drawn(pile, mc4):
    for prefix in (pile, mc4[0]):
        data = collect_report(prefix, seq_length=64)
        fig, panels = draw_report(data)
        assert len(panels) == 9
        for title, ax in panels.items():
            assert title and ax.get_title(loc="left") == title
            drawn = ax.patches + ax.lines + ax.texts + ax.collections
            assert drawn, f"panel {title!r} is empty"
    t5 = panels["T5 masking: noise span lengths"]
    assert sum(p.get_height() for p in t5.patches) == data.t5["span_lengths"].size


def test_command_writes_png_and_self_contained_html(pile, tmp_path, capsys):
    import matplotlib.image

    png, page = tmp_path / "r.png", tmp_path / "r.html"
    assert main(["report", pile, "--output", str(png), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert f"{png}:" in out and "mix by pile_set_name (tokens): " in out and "Github" in out
    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (936, 1224) and 20_000 < png.stat().st_size < 200_000
    assert image[..., :3].std() > 0.05  # not a blank canvas
    text = page.read_text(encoding="utf-8")
    embedded = re.search(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert embedded and base64.b64decode(embedded[1]) == png.read_bytes()
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", text) and "<script" not in text
    assert load_manifest(pile)["inputs"][0]["sha256"] in text  # the manifest is on the page


def test_default_output_is_beside_the_dataset(pile, capsys):
    assert main(["report", pile, "--no-reread"]) == 0
    assert f"{pile}.report.png:" in capsys.readouterr().out


def test_count_token_ids_samples_evenly_spaced_blocks():
    tokens = np.arange(10 << 20) % 7
    counts, counted = count_token_ids(tokens, max_tokens=3 << 20)
    assert counted == 3 << 20 and counts.sum() == counted
    assert (
        count_token_ids(tokens[:100], max_tokens=1000)[0].tolist()
        == np.bincount(tokens[:100]).tolist()
    )


def test_printable_escapes_what_the_font_cannot_draw():
    assert printable("abc") == "abc"
    assert printable("\u4e2d") == "U+4E2D"  # CJK: not in the default DejaVu Sans


def test_gone_input_is_said_not_guessed(pile, tmp_path):
    prefix = str(tmp_path / "gone")
    for suffix in (".bin", ".idx", ".provenance.npy"):
        (tmp_path / f"gone{suffix}").write_bytes(open(pile + suffix, "rb").read())
    manifest = load_manifest(pile)
    manifest["inputs"][0]["path"] = str(tmp_path / "moved" / "00.jsonl.zst")
    write_json_atomic(manifest_path(prefix), manifest)
    data = collect_report(prefix)
    assert data.mix_by == "pile_set_name"
    assert "1 input(s) no longer found (00.jsonl.zst)" in data.mix_note
    expected = _expected_pile_mix()
    assert data.mix["(unknown)"][0] == 2  # 00.jsonl.zst's two documents
    assert data.mix["Gutenberg (PG-19)"] == expected["Gutenberg (PG-19)"]


def test_dataset_without_manifest_still_draws_every_panel(tmp_path, capsys):
    from dataprep.indexed import IndexedDatasetWriter

    prefix = str(tmp_path / "megatron_made")
    with IndexedDatasetWriter(prefix, dtype=np.uint16) as w:
        for n in (5, 50, 500):
            w.add_document(np.arange(n) % 100)
    data = collect_report(prefix)
    assert data.manifest is None and data.mix == {} and "no build manifest" in data.mix_note
    assert data.top_ids[0][2] == ""  # no tokenizer to decode with
    assert data.t5 is None and "pass --tokenizer" in data.t5_note
    _, panels = draw_report(data)
    assert all(ax.patches + ax.lines + ax.texts for ax in panels.values())
    assert panels["build"].texts[0].get_text().startswith("no build manifest")
    assert main(["report", prefix, "--output", str(tmp_path / "r.png")]) == 0


def test_a_manifest_tokenizer_that_is_gone_is_a_note(pile, tmp_path, capsys):
    prefix = str(tmp_path / "moved_tok")
    for suffix in (".bin", ".idx", ".provenance.npy"):
        (tmp_path / f"moved_tok{suffix}").write_bytes(open(pile + suffix, "rb").read())
    manifest = load_manifest(pile)
    manifest["tokenizer"]["spec"] = str(tmp_path / "gone.model")
    write_json_atomic(manifest_path(prefix), manifest)
    data = collect_report(prefix)
    assert data.tokenizer_name is None and "cannot be loaded" in data.t5_note
    assert main(["report", prefix, "--tokenizer", str(tmp_path / "gone.model")]) == 2


def test_length_marks_are_the_percentiles_inspect_prints(pile, capsys):
    data = collect_report(pile)
    assert main(["inspect", pile, "--json"]) == 0
    inspected = json.loads(capsys.readouterr().out)["document_length"]
    _, panels = draw_report(data)
    (hist,) = [ax for title, ax in panels.items() if "length" in title.lower()][:1]
    legend = [t.get_text() for t in hist.get_legend().get_texts()]
    assert legend == [f"p{q} {inspected[f'p{q}']:,}" for q in (50, 90, 99)]
    assert all(v in set(data.doc_lengths.tolist()) for v in inspected.values())  # real lengths


def test_token_labels_are_text_or_escaped_bytes_not_the_byte_level_alphabet():
    """GPT-2's id 447 is the bytes e2 80 (the start of '’'): shown as \\xe2\\x80, not as its
    vocab.json key 'âĢ'; SentencePiece's byte fallback <0xC3> likewise; controls escaped."""
    from dataprep.report import _piece

    gpt2, spm = load_tokenizer("gpt2"), load_tokenizer("mt5-toy")
    assert _piece(gpt2, 447) == "\\xe2\\x80"
    assert _piece(gpt2, 30325) == "\u2423\\xf0\\x9f\\x98"  # ' ' + 3 of the 4 bytes of an emoji
    assert _piece(gpt2, 9468) == "\u2423welf" and _piece(gpt2, 198) == "\\n"
    fallback = next(i for i in range(spm.vocab_size) if spm.id_to_piece(i) == "<0xC3>")
    assert _piece(spm, fallback) == "\\xc3"
    nul = next(i for i in range(spm.vocab_size) if spm.id_to_piece(i) == "<0x00>")
    assert _piece(spm, nul) == "\\x00"
    shifted = re.compile("[\u0100-\u0143]")  # the byte-level alphabet's stand-ins for bytes
    assert not any(shifted.search(_piece(gpt2, i)) for i in range(256, 5000))
