"""What an input file is, from its first bytes: zstd, gzip, Parquet, HTML, a git-LFS pointer.

`read_head` reads the first bytes; `describe_bytes` names what they look like for error messages;
`compression_of` picks "zstd", "gzip" or "none" from the magic numbers and raises ReadError (with
its kind: "not_zstd", "html", "lfs_pointer", "unsupported_compression", ...) when a suffix
disagrees or the content is something no reader can use. The decompression itself is
`compression.py`; the Parquet reader checks its magic here too.
"""

from __future__ import annotations

import os
from pathlib import Path

from dataprep.errors import ReadError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
HEAD_SIZE = 512


def read_head(path: str | os.PathLike, size: int = HEAD_SIZE) -> bytes:
    """The first `size` bytes of a file (ReadError kind "unreadable" if it cannot be opened)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError as e:
        raise ReadError(path, f"cannot read the file: {e.strerror or e}", kind="unreadable") from e


def is_skippable_frame(head: bytes) -> bool:
    # zstd skippable frames: magic 0x184D2A50..0x184D2A5F, little-endian
    return len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and 0x50 <= head[0] <= 0x5F


def is_zstd(head: bytes) -> bool:
    return head.startswith(ZSTD_MAGIC) or is_skippable_frame(head)


def looks_like_html(head: bytes) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml"))


def describe_bytes(head: bytes) -> str:
    """A short human description of what a file's first bytes look like, for error messages."""
    if not head:
        return "an empty file"
    if head.startswith(LFS_POINTER):
        return (
            "a git-LFS pointer file, not the data (the LFS object was never fetched: "
            "run `git lfs pull` in that repository, or download the file itself)"
        )
    if looks_like_html(head):
        return (
            "an HTML page, not the data (probably an error or login page saved by the download: "
            "download the file again)"
        )
    if is_zstd(head):
        return "zstd-compressed data"
    if head.startswith(GZIP_MAGIC):
        return "gzip-compressed data"
    if head.startswith(PARQUET_MAGIC):
        return "a Parquet file"
    for magic, name in (
        (b"PK\x03\x04", "a zip archive"),
        (b"BZh", "bzip2-compressed data"),
        (b"\xfd7zXZ\x00", "xz-compressed data"),
        (b"\x04\x22\x4d\x18", "lz4-compressed data"),
    ):
        if head.startswith(magic):
            return f"{name} (not supported: recompress it as zstd or gzip)"
    text = head[:64].decode("utf-8", errors="ignore")  # "ignore": the slice may cut a character
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"uncompressed text starting with {text[:40]!r}"
    return f"binary data starting with bytes {head[:16].hex(' ')}"


def _unsupported_kind(head: bytes) -> str | None:
    """The ReadError kind for content no reader can use, or None."""
    if head.startswith(LFS_POINTER):
        return "lfs_pointer"
    if looks_like_html(head):
        return "html"
    if head.startswith(PARQUET_MAGIC):
        return "wrong_format"
    if describe_bytes(head).endswith("(not supported: recompress it as zstd or gzip)"):
        return "unsupported_compression"
    return None


def compression_of(path: str | os.PathLike, head: bytes) -> str:
    """ "zstd", "gzip" or "none", from the magic bytes; a suffix that disagrees is a ReadError."""
    name = Path(path).name.lower()
    if not head:
        return "none"  # an empty file: no records (the reader warns and lists it)
    named_zstd, named_gzip = name.endswith((".zst", ".zstd")), name.endswith(".gz")
    codec = "none"
    if is_zstd(head) or (named_zstd and len(head) < 4 and ZSTD_MAGIC.startswith(head)):
        codec = "zstd"  # (a file cut inside the magic number is reported as truncated)
    elif head.startswith(GZIP_MAGIC) or (named_gzip and head == GZIP_MAGIC[:1]):
        codec = "gzip"
    if codec == "zstd" and not named_gzip or codec == "gzip" and not named_zstd:
        return codec
    found = describe_bytes(head)
    if named_zstd:
        raise ReadError(
            path,
            f"named .zst but it is not zstd: it is {found}",
            kind=_unsupported_kind(head) or "not_zstd",
        )
    if named_gzip:
        raise ReadError(
            path,
            f"named .gz but it is not gzip: it is {found}",
            kind=_unsupported_kind(head) or "not_gzip",
        )
    kind = _unsupported_kind(head)
    if kind is not None:
        raise ReadError(path, f"expected JSON Lines but the file is {found}", kind=kind)
    return "none"
