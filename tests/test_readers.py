"""Tests for dataprep/readers: formats, compression, bad records and bad files, inputs, memory."""

from __future__ import annotations

import gzip
import json
import logging
import os
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from dataprep.documents import Document
from dataprep.errors import ReadError, UsageError
from dataprep.readers import (
    FILE_ERROR_KINDS,
    RECORD_ERROR_KINDS,
    ReadStats,
    detect_format,
    expand_inputs,
    iter_documents,
)
from dataprep.readers import jsonl as jsonl_module
from dataprep.readers import records as records_module
from dataprep.readers.mc4 import mc4_language

LONG = "long line " * 120_000  # 1.2 MB of text on one line
TEXTS = [
    "hello world",
    "",
    "日本語のテキスト。中文文本。한국어",
    "emoji \U0001f600\U0001f680 ok",
    LONG,
    "x",
]
SHORT = [t for t in TEXTS if t is not LONG]


def jsonl_bytes(records) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def write_zst(path, data: bytes, *, frames: int = 1, **compressor) -> bytes:
    """data as `frames` independent zstd frames (cut at arbitrary byte positions, not at lines)."""
    cctx = zstandard.ZstdCompressor(**compressor)
    step = max(1, -(-len(data) // frames))
    blob = b"".join(cctx.compress(data[i : i + step]) for i in range(0, len(data), step))
    blob = blob or cctx.compress(b"")
    path.write_bytes(blob)
    return blob


def write_gz(path, data: bytes, *, members: int = 1) -> bytes:
    step = -(-len(data) // members)
    blob = b"".join(gzip.compress(data[i : i + step]) for i in range(0, len(data), step))
    path.write_bytes(blob)
    return blob


def pile_records(texts=TEXTS, sets=("Pile-CC", "Github")):
    return [
        {"text": t, "meta": {"pile_set_name": sets[i % len(sets)]}} for i, t in enumerate(texts)
    ]


def read_all(path, **options):
    return list(iter_documents(path, **options))


def read_error(path, **options) -> ReadError:
    with pytest.raises(ReadError) as info:
        read_all(path, **options)
    return info.value


# --- formats and round trips -------------------------------------------------------------------


def test_multi_frame_zst_pile_round_trip(tmp_path):
    path = tmp_path / "00.jsonl.zst"
    write_zst(path, jsonl_bytes(pile_records()), frames=5)
    stats = ReadStats()
    docs = read_all(path, stats=stats)
    assert [d.text for d in docs] == TEXTS
    assert [d.line for d in docs] == [1, 2, 3, 4, 5, 6]
    assert docs[2].id == "00.jsonl.zst:3"
    assert docs[0].source == str(path)
    assert docs[0].metadata == {"pile_set_name": "Pile-CC"}
    assert docs[1].fields == {"text": ""}
    assert stats.documents == 6
    assert stats.bytes == len(jsonl_bytes(pile_records()))
    assert stats.files == 1 and not stats.skipped and not stats.files_skipped


def test_multi_member_gz_mc4(tmp_path):
    records = [
        {"text": t, "url": f"https://e/{i}", "timestamp": "2020-01-01"} for i, t in enumerate(TEXTS)
    ]
    path = tmp_path / "c4-ja.tfrecord-00000-of-01024.json.gz"
    write_gz(path, jsonl_bytes(records), members=4)
    assert detect_format(path) == "mc4"
    docs = read_all(path)
    assert [d.text for d in docs] == TEXTS
    assert docs[3].metadata == {"url": "https://e/3", "timestamp": "2020-01-01", "language": "ja"}


def test_gzip_nul_padding_is_allowed(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl_bytes([{"text": "a"}])) + b"\0" * 1000)
    assert [d.text for d in read_all(path)] == ["a"]


def test_plain_jsonl_crlf_bom_and_last_line_without_newline(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "a"}\r\n{"text": "b"}\r\n\n{"text": "c"}')
    stats = ReadStats()
    docs = read_all(path, stats=stats)
    assert [(d.text, d.line) for d in docs] == [("a", 1), ("b", 2), ("c", 4)]
    assert stats.skipped == {"blank_line": 1}


def test_zstd_large_window_frames(tmp_path):
    """Pile shards need a window over zstd's default limit (2**27); we allow up to 2**31."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=30)
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()  # size unknown
    blob = cobj.compress(jsonl_bytes([{"text": "big window"}])) + cobj.flush()
    assert zstandard.get_frame_parameters(blob).window_size == 2**30
    with pytest.raises(zstandard.ZstdError):
        zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    path = tmp_path / "w.jsonl.zst"
    path.write_bytes(blob)
    assert [d.text for d in read_all(path)] == ["big window"]


@pytest.mark.parametrize("level", [1, 19])
def test_zstd_checksums_skippable_frames_and_levels(tmp_path, level):
    data = jsonl_bytes(pile_records())
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=False)
    skippable = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"hello"
    path = tmp_path / "c.jsonl.zst"
    path.write_bytes(skippable + cctx.compress(data[:100]) + skippable + cctx.compress(data[100:]))
    assert [d.text for d in read_all(path)] == TEXTS


def test_parquet_rows_metadata_nulls_and_start_line(tmp_path):
    path = tmp_path / "part-0.parquet"
    table = pa.table(
        {
            "text": ["a", None, "日本", "", "e"],
            "title": ["A", "B", "C", "D", "E"],
            "url": [f"u{i}" for i in range(5)],
            "vector": [[1.0]] * 5,  # not metadata: a list column
        }
    )
    pq.write_table(table, path, row_group_size=2)
    assert detect_format(path) == "parquet"
    stats = ReadStats()
    docs = read_all(path, on_error="skip", stats=stats, json_keys=("text", "title"))
    assert [(d.text, d.line, d.fields["title"]) for d in docs] == [
        ("a", 1, "A"),
        ("日本", 3, "C"),
        ("", 4, "D"),
        ("e", 5, "E"),
    ]
    assert docs[0].metadata == {"url": "u0"}
    assert docs[0].id == "part-0.parquet:1"
    assert stats.skipped == {"null_text": 1}
    error = read_error(path)
    assert error.kind == "null_text" and error.line == 2
    assert [d.line for d in read_all(path, on_error="skip", start_line=3)] == [4, 5]
    missing = read_error(path, json_keys=("body",))
    assert missing.kind == "missing_key" and "body" in str(missing)


def test_parquet_filters_and_non_string_column(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "lang": ["en", "ja", "en"]}), path)
    stats = ReadStats()
    docs = read_all(path, filters={"lang": {"en"}}, stats=stats)
    assert [d.text for d in docs] == ["a", "c"] and stats.skipped == {"filtered": 1}
    numbers = tmp_path / "n.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), numbers)
    assert read_error(numbers).kind == "non_string_text"


@pytest.mark.parametrize(
    ("name", "language"),
    [
        ("c4-ja.tfrecord-00000-of-01024.json.gz", "ja"),
        ("c4-zh-Latn.tfrecord-00001-of-00004.json.gz", "zh-Latn"),
        ("c4-ja-validation.tfrecord-00000-of-00008.json.gz", "ja"),
        ("c4-fil.tfrecord-00000-of-00064.json.gz", "fil"),
        ("c4-train.00000-of-01024.json.gz", None),
        ("00.jsonl.zst", None),
    ],
)
def test_mc4_language_from_name(name, language):
    assert mc4_language(name) == language


def test_languages_skip_whole_files(tmp_path, caplog):
    ja = tmp_path / "c4-ja.tfrecord-00000-of-01024.json.gz"
    de = tmp_path / "c4-de.tfrecord-00000-of-01024.json.gz"
    plain = tmp_path / "other.jsonl"
    for path in (ja, de):
        write_gz(path, jsonl_bytes([{"text": path.name, "url": "u", "timestamp": "t"}]))
    plain.write_bytes(jsonl_bytes([{"text": "x"}]))
    stats = ReadStats()
    with caplog.at_level(logging.INFO):
        docs = [
            d for p in (ja, de, plain) for d in iter_documents(p, languages={"ja"}, stats=stats)
        ]
    assert [d.text for d in docs] == [ja.name]
    assert stats.files_skipped == {"language": [str(de), str(plain)]}
    assert de.name in caplog.text


def test_pile_filters_count_filtered(tmp_path):
    path = tmp_path / "val.jsonl.zst"
    write_zst(path, jsonl_bytes(pile_records()))
    stats = ReadStats()
    docs = read_all(path, filters={"pile_set_name": {"Github"}}, stats=stats)
    assert [d.line for d in docs] == [2, 4, 6]
    assert all(d.metadata["pile_set_name"] == "Github" for d in docs)
    assert stats.documents == 3 and stats.skipped == {"filtered": 3}


def test_filters_on_top_level_field_and_missing_value(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(
        jsonl_bytes([{"text": "a", "src": "x"}, {"text": "b", "src": "y"}, {"text": "c"}])
    )
    stats = ReadStats()
    assert [d.text for d in read_all(path, filters={"src": ["x"]}, stats=stats)] == ["a"]
    assert stats.skipped == {"filtered": 2}


@pytest.mark.parametrize(
    ("name", "content", "fmt"),
    [
        ("00.jsonl.zst", jsonl_bytes(pile_records(SHORT)), "pile"),
        ("data.jsonl.zst", jsonl_bytes([{"text": "a", "meta": {"x": 1}}]), "jsonl"),
        ("data.jsonl", jsonl_bytes(pile_records(SHORT)), "pile"),
        ("c4-ko.tfrecord-00000-of-01024.json", jsonl_bytes([{"text": "a"}]), "mc4"),
        ("data.json", b"<!DOCTYPE html>", "jsonl"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_detect_format(tmp_path, name, content, fmt):
    path = tmp_path / name
    if name.endswith(".zst"):
        write_zst(path, content)
    else:
        path.write_bytes(content)
    assert detect_format(path) == fmt


def test_several_json_keys_must_all_be_present(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl_bytes([{"text": "t1", "title": "h1"}, {"text": "t2"}, {"title": "h3"}]))
    stats = ReadStats()
    docs = read_all(path, json_keys=["title", "text"], on_error="skip", stats=stats)
    assert [(d.text, dict(d.fields)) for d in docs] == [("h1", {"title": "h1", "text": "t1"})]
    assert stats.skipped == {"missing_key": 2}
    error = read_error(path, json_keys=["title", "text"])
    assert (error.kind, error.line) == ("missing_key", 2)
    assert "'title'" in str(error) and "'text'" in str(error)


@given(texts=st.lists(st.text(), min_size=1, max_size=8), ascii_only=st.booleans())
def test_any_text_round_trips_through_jsonl_zst(tmp_path_factory, texts, ascii_only):
    path = tmp_path_factory.mktemp("h") / "h.jsonl.zst"
    data = b"".join(
        json.dumps({"text": t}, ensure_ascii=ascii_only).encode() + b"\n" for t in texts
    )
    write_zst(path, data, frames=2)
    assert [d.text for d in read_all(path)] == texts


# --- bad records -------------------------------------------------------------------------------

BAD_LINES = {
    "not_json": b'{"text": "abc" "x"}\n',
    "not_object": b'["text", "abc"]\n',
    "missing_key": b'{"content": "abc"}\n',
    "null_text": b'{"text": null}\n',
    "non_string_text": b'{"text": 42}\n',
    "invalid_utf8": b'{"text": "caf\xe9"}\n',
    "lone_surrogate": b'{"text": "a\\ud800b"}\n',
    "truncated_last_line": b'{"text": "cut sh',
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_record_raises_with_file_line_and_kind(tmp_path, kind):
    path = tmp_path / "bad.jsonl.zst"
    write_zst(path, b'{"text": "good"}\n' + BAD_LINES[kind])
    error = read_error(path)
    assert error.kind == kind
    assert error.line == 2
    assert str(error).startswith(f"{path}:2: ")
    assert "\n" not in str(error)


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_record_skipped_and_counted(tmp_path, kind):
    path = tmp_path / "bad.jsonl"
    tail = b"" if kind == "truncated_last_line" else b'{"text": "after"}\n'
    path.write_bytes(b'{"text": "good"}\n' + BAD_LINES[kind] + tail)
    stats = ReadStats()
    docs = read_all(path, on_error="skip", stats=stats)
    assert [d.text for d in docs] == ["good"] + (["after"] if tail else [])
    assert stats.skipped == {kind: 1}
    assert kind in RECORD_ERROR_KINDS


def test_error_messages_say_what_was_found(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(BAD_LINES["not_json"])
    message = str(read_error(path))
    assert "not JSON: Expecting ',' delimiter at column 16" in message
    assert '{"text": "abc" "x"}' in message
    path.write_bytes(BAD_LINES["non_string_text"])
    assert "'text' is a JSON number (42), expected a string" in str(read_error(path))
    path.write_bytes(BAD_LINES["invalid_utf8"])
    assert "invalid UTF-8 at byte 14" in str(read_error(path))
    path.write_bytes(b'[{"text": "a"},\n{"text": "b"}]\n')
    assert "one JSON array" in str(read_error(path))


def test_unterminated_valid_last_line_is_a_record(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "b"}')
    assert [d.text for d in read_all(path)] == ["a", "b"]


def test_stdlib_and_orjson_accept_the_same_records(tmp_path, monkeypatch):
    lines = [
        b'{"text": "a", "x": NaN}\n',  # stdlib accepts NaN, orjson does not
        b'{"text": "b", "n": 123456789012345678901234567890}\n',  # beyond orjson's 64-bit ints
        b'{"text": "c", "text": "d"}\n',  # duplicate key: the last wins in both
        b'{"text": "\\ud83d\\ude00"}\n',  # a surrogate pair is one character
        b'{"text": "e", "url": "\\udfff"}\n',  # a lone surrogate anywhere is rejected
        b'{"text": "\\uDBFFx"}\n',  # in either case of hex digits
    ]
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"".join(lines))
    stats = ReadStats()
    texts = [d.text for d in read_all(path, on_error="skip", stats=stats)]
    assert (texts, stats.skipped) == (["a", "b", "d", "\U0001f600"], {"lone_surrogate": 2})
    # record by record, what orjson-then-stdlib parses is what the stdlib alone parses
    for number, raw in enumerate(lines, start=1):
        outcomes = []
        for parse in (records_module.parse_line, records_module.parse_line_stdlib):
            try:
                outcomes.append(("ok", repr(parse(raw, number))))
            except records_module.BadRecord as e:
                outcomes.append((e.kind, e.reason))
        assert outcomes[0] == outcomes[1], raw


# --- bad files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0.5, 0.999, -1, 10, 2])
def test_truncated_zst_raises_instead_of_returning_a_prefix(tmp_path, cut):
    path = tmp_path / "t.jsonl.zst"
    blob = write_zst(path, jsonl_bytes(pile_records(SHORT) * 200), frames=3)
    size = int(len(blob) * cut) if isinstance(cut, float) else (cut if cut > 0 else len(blob) + cut)
    path.write_bytes(blob[:size])
    error = read_error(path)
    assert error.kind == "truncated"
    assert "truncated zstd stream" in str(error) and error.offset == size


def test_truncated_zst_between_frames_with_checksum(tmp_path):
    """Cut exactly at the end of a block but before the frame's checksum."""
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    first = cctx.compress(b'{"text": "a"}\n')
    path = tmp_path / "t.jsonl.zst"
    path.write_bytes(first + cctx.compress(b'{"text": "b"}\n')[:-4])
    assert read_error(path).kind == "truncated"


def test_bad_file_skip_keeps_documents_already_yielded(tmp_path, caplog):
    path = tmp_path / "t.jsonl.zst"
    data = jsonl_bytes({"text": f"doc {i}"} for i in range(2000))
    blob = write_zst(path, data, frames=4)
    path.write_bytes(blob[: len(blob) * 3 // 4 + 10])
    stats = ReadStats()
    docs = read_all(path, on_bad_file="skip", stats=stats)
    assert 1000 < len(docs) < 2000
    assert [d.text for d in docs] == [f"doc {i}" for i in range(len(docs))]
    assert stats.files_skipped == {"truncated": [str(path)]}
    assert f"{len(docs)} documents from it were already yielded" in caplog.text


@pytest.mark.parametrize("garbage", [b"garbage!", b"\0\0\0\0\0", b"<html>"])
def test_trailing_garbage_after_last_zstd_frame(tmp_path, garbage):
    path = tmp_path / "g.jsonl.zst"
    blob = write_zst(path, jsonl_bytes(pile_records()))
    path.write_bytes(blob + garbage)
    error = read_error(path)
    assert error.kind == "trailing_garbage" and error.offset == len(blob)


def test_truncated_and_trailing_garbage_gzip(tmp_path):
    path = tmp_path / "g.json.gz"
    blob = write_gz(path, jsonl_bytes(pile_records()), members=2)
    path.write_bytes(blob[:-5])
    error = read_error(path)
    assert error.kind == "truncated" and "truncated gzip stream" in str(error)
    path.write_bytes(blob + b"\0\0 trailing")
    assert read_error(path).kind == "trailing_garbage"


def test_corrupt_zstd_block(tmp_path):
    path = tmp_path / "c.jsonl.zst"
    blob = bytearray(write_zst(path, jsonl_bytes(pile_records(SHORT) * 200), write_checksum=True))
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert read_error(path).kind == "corrupt"


def test_not_zstd_named_zst_says_what_it_is(tmp_path):
    path = tmp_path / "plain.jsonl.zst"
    path.write_bytes(jsonl_bytes(pile_records()))
    error = read_error(path)
    assert error.kind == "not_zstd"
    assert "named .zst but it is not zstd: it is uncompressed text" in str(error)
    gz = tmp_path / "a.jsonl.zst"
    gz.write_bytes(gzip.compress(b"x"))
    assert "gzip-compressed data" in str(read_error(gz))


HTML = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n"
LFS = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n"
)


@pytest.mark.parametrize(
    ("content", "kind", "words"),
    [(HTML, "html", "HTML page"), (LFS, "lfs_pointer", "git lfs pull")],
)
@pytest.mark.parametrize(
    "name", ["a.jsonl.zst", "c4-ja.tfrecord-00000-of-01024.json.gz", "a.jsonl", "a.parquet"]
)
def test_html_pages_and_lfs_pointers(tmp_path, content, kind, words, name):
    path = tmp_path / name
    path.write_bytes(content)
    error = read_error(path)
    assert error.kind == kind and words in str(error)
    stats = ReadStats()
    assert read_all(path, on_bad_file="skip", stats=stats) == []
    assert stats.files_skipped == {kind: [str(path)]}
    assert kind in FILE_ERROR_KINDS


def test_truncated_parquet(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["a"] * 100}), path)
    path.write_bytes(path.read_bytes()[:-10])
    assert read_error(path).kind == "truncated"


@pytest.mark.parametrize("name", ["e.jsonl.zst", "e.json.gz", "e.jsonl", "e.parquet"])
def test_empty_file_is_a_warning(tmp_path, name, caplog):
    path = tmp_path / name
    path.write_bytes(b"")
    stats = ReadStats()
    assert read_all(path, stats=stats) == []
    assert stats.empty_files == [str(path)]
    assert "empty" in caplog.text


def test_zstd_of_nothing_is_an_empty_file(tmp_path):
    path = tmp_path / "e.jsonl.zst"
    write_zst(path, b"")
    stats = ReadStats()
    assert read_all(path, stats=stats) == [] and stats.empty_files == [str(path)]


def test_unreadable_file(tmp_path):
    stats = ReadStats()
    assert read_all(tmp_path / "missing.jsonl", on_bad_file="skip", stats=stats) == []
    assert list(stats.files_skipped) == ["unreadable"]


# --- options, stats, inputs --------------------------------------------------------------------


def test_start_line_resumes(tmp_path):
    path = tmp_path / "a.jsonl.zst"
    write_zst(path, jsonl_bytes(pile_records()))
    stats = ReadStats()
    docs = read_all(path, start_line=4, stats=stats)
    assert [d.line for d in docs] == [5, 6] and [d.text for d in docs] == TEXTS[4:]
    assert stats.documents == 2


@pytest.mark.parametrize(
    "options",
    [
        {"fmt": "csv"},
        {"json_keys": []},
        {"json_keys": "text"},
        {"on_error": "ignore"},
        {"start_line": -1},
    ],
)
def test_bad_options_are_usage_errors(tmp_path, options):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "a"}\n')
    with pytest.raises(UsageError):
        read_all(path, **options)


def test_read_stats_merge_and_to_dict():
    a = ReadStats(documents=2, bytes=10, skipped={"not_json": 1}, files=1)
    b = ReadStats(documents=3, bytes=5, skipped={"not_json": 2, "filtered": 1}, empty_files=["e"])
    b.skip_file("truncated", "t.zst")
    assert a.merge(b) is a
    assert a.to_dict() == {
        "documents": 5,
        "bytes": 15,
        "skipped": {"filtered": 1, "not_json": 3},
        "files_skipped": {"truncated": ["t.zst"]},
        "empty_files": ["e"],
        "files": 1,
    }
    assert json.loads(json.dumps(a.to_dict())) == a.to_dict()
    assert ReadStats.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_document_is_frozen():
    doc = Document(text="a", id="f:1", metadata={}, fields={"text": "a"}, source="f", line=1)
    with pytest.raises(AttributeError):
        doc.text = "b"


def test_expand_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / ".hidden").mkdir()
    for name in [
        "d/b.jsonl.zst",
        "d/a.json.gz",
        "d/sub/c.parquet",
        "d/notes.txt",
        "d/.x.jsonl",
        "d/.hidden/y.jsonl",
        "top.jsonl",
        "other.zst",
    ]:
        (tmp_path / name).write_bytes(b"")
    expected_dir = [
        tmp_path / "d/a.json.gz",
        tmp_path / "d/b.jsonl.zst",
        tmp_path / "d/sub/c.parquet",
    ]
    assert expand_inputs([str(tmp_path / "d")]) == expected_dir
    assert expand_inputs(["d/*.zst", "top.jsonl"]) == [
        tmp_path.joinpath(p).relative_to(tmp_path) for p in ("d/b.jsonl.zst", "top.jsonl")
    ]
    assert expand_inputs(["d/**/*.parquet"]) == [
        tmp_path.joinpath("d/sub/c.parquet").relative_to(tmp_path)
    ]
    # de-duplicated (same file by several routes) and sorted whatever the argument order
    listing = tmp_path / "lists" / "inputs.txt"
    listing.parent.mkdir()
    listing.write_text("# inputs\n../top.jsonl\n\n../d/a.json.gz\n")
    got = expand_inputs(["top.jsonl", f"@{listing}", "d", "./top.jsonl"])
    assert sorted(os.path.realpath(p) for p in got) == sorted(
        os.path.realpath(tmp_path / p)
        for p in ("top.jsonl", "d/a.json.gz", "d/b.jsonl.zst", "d/sub/c.parquet")
    )
    assert got == sorted(got, key=os.fspath)
    assert expand_inputs(["d", "top.jsonl"]) == expand_inputs(["top.jsonl", "d"])


@pytest.mark.parametrize(
    "bad", ["nothing/*.zst", "missing.jsonl", "@missing_list.txt", "empty_dir"]
)
def test_expand_inputs_no_match_names_it(tmp_path, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "ok.jsonl").write_bytes(b"")
    with pytest.raises(UsageError) as info:
        expand_inputs(["ok.jsonl", bad])
    assert bad.lstrip("@") in str(info.value)


def test_expand_inputs_list_entry_that_matches_nothing(tmp_path):
    listing = tmp_path / "l.txt"
    listing.write_text("a.jsonl\nb.jsonl\n")
    (tmp_path / "a.jsonl").write_bytes(b"")
    with pytest.raises(UsageError, match=r"l\.txt:2: .*b\.jsonl"):
        expand_inputs([f"@{listing}"])


# --- memory ------------------------------------------------------------------------------------


def test_streaming_memory_is_constant(tmp_path):
    """Python memory while streaming a 24 MB file stays a small fraction of it."""
    path = tmp_path / "big.jsonl.zst"
    cobj = zstandard.ZstdCompressor(level=1).compressobj()
    with open(path, "wb") as fh:
        for _ in range(400):  # random hex text compresses about 2x: decompressed 24 MB
            records = (
                {"text": os.urandom(2000).hex(), "meta": {"pile_set_name": "x"}} for _ in range(15)
            )
            fh.write(cobj.compress(jsonl_bytes(records)))
        fh.write(cobj.flush())
    stats = ReadStats()
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_documents(path, stats=stats))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 6000
    assert stats.bytes > 24_000_000
    assert peak < stats.bytes / 6


def test_decompression_bomb_stays_bounded(tmp_path):
    """A tiny zstd file that expands over 10,000x is still read in small steps."""
    path = tmp_path / "bomb.jsonl.zst"
    write_zst(path, b'{"text": "' + b"a" * (40 << 20) + b'"}\n', level=19)
    assert path.stat().st_size < 10_000
    from dataprep.readers.compression import open_decompressed

    tracemalloc.start()
    try:
        with open_decompressed(path) as reader:
            total = 0
            while chunk := reader.read(1 << 20):
                total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == (40 << 20) + 13
    assert peak < 8 << 20


def test_filter_values_are_whole_strings(tmp_path):
    path = tmp_path / "a.jsonl"
    records = [{"text": "a", "n": 1, "src": "Pile"}, {"text": "b", "n": 2, "src": "Pile-CC"}]
    path.write_bytes(jsonl_bytes(records + [{"text": "c", "n": {"x": 1}, "src": "P"}]))
    assert [d.text for d in read_all(path, filters={"src": "Pile-CC"})] == ["b"]
    assert [d.text for d in read_all(path, filters={"n": [1]})] == ["a"]
    assert [d.text for d in read_all(path, filters={"n": {"2"}})] == ["b"]


@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    last_newline=st.booleans(),
    block=st.integers(min_value=1, max_value=64),
)
def test_line_blocks_are_whole_lines_numbered_from_one(lines, last_newline, block):
    import io

    data = b"\n".join(lines) + (b"\n" if last_newline and lines else b"")
    reader = io.BufferedReader(io.BytesIO(data), buffer_size=7)  # short reads, as from zstd
    blocks = list(jsonl_module.line_blocks(reader, block))
    assert b"".join(b for _, b in blocks) == data
    expected_line = 1
    for first, chunk in blocks[:-1]:
        assert first == expected_line and chunk.endswith(b"\n")
        expected_line += chunk.count(b"\n")
    if blocks:
        assert blocks[-1][0] == expected_line


def test_line_blocks_keep_a_long_line_whole():
    import io

    long = b"x" * 10_000
    data = b"a\n" + long + b"\nb\n"
    blocks = list(jsonl_module.line_blocks(io.BufferedReader(io.BytesIO(data), 100), 64))
    assert blocks[0] == (1, b"a\n")
    assert blocks[1][0] == 2 and blocks[1][1].startswith(long + b"\n")  # never cut inside a line
    assert b"".join(b for _, b in blocks) == data
