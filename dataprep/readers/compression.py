"""Open an input file as a stream of decompressed bytes: zstd, gzip or plain, chosen by magic bytes.

Pile shards are multi-frame zstd with large windows; mC4 shards are (possibly multi-member) gzip.
Both are decompressed incrementally with bounded output per step, so memory stays constant whatever
the file size or compression ratio. Unlike `zstandard`'s `stream_reader` (which returns the prefix
of a truncated stream without complaint) we drive one decompressor per frame/member and check that
the last one really ended, so a cut-short download is an error with its byte offset, not a silently
shorter dataset.
"""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

from dataprep.errors import ReadError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"

ZSTD_MAX_WINDOW = (
    2**31
)  # Pile shards were written with --long windows; zstd's default limit is 2**27
INPUT_SLICE = 1 << 16  # compressed bytes read from the file at a time
GZIP_MAX_OUTPUT = 1 << 22  # decompressed bytes taken from zlib per call (zlib can bound its output)
BUFFER_SIZE = 1 << 20  # line buffer over the decompressed bytes

HEAD_SIZE = 512


def read_head(path: str | os.PathLike, size: int = HEAD_SIZE) -> bytes:
    """The first `size` bytes of a file (ReadError kind "unreadable" if it cannot be opened)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError as e:
        raise ReadError(path, f"cannot read the file: {e.strerror or e}", kind="unreadable") from e


def _is_skippable_frame(head: bytes) -> bool:
    # zstd skippable frames: magic 0x184D2A50..0x184D2A5F, little-endian
    return len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and 0x50 <= head[0] <= 0x5F


def is_zstd(head: bytes) -> bool:
    return head.startswith(ZSTD_MAGIC) or _is_skippable_frame(head)


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


class _DecompressedRaw(io.RawIOBase):
    """The decompressed bytes of every frame (zstd) or member (gzip) of a file, one after another.

    Raises ReadError while reading when the file ends inside a frame ("truncated"), when the bytes
    after the last complete frame are not another frame ("trailing_garbage"; NUL padding after gzip
    members is allowed, as gzip(1) does), or when the decompressor rejects the data ("corrupt").
    """

    unit = "frame"

    def __init__(self, fh: io.RawIOBase, path: str | os.PathLike) -> None:
        super().__init__()
        self._fh = fh
        self._path = path
        self._buf = (
            b""  # compressed bytes read from the file and not yet used: self._buf[self._pos:]
        )
        self._pos = 0
        self._base = 0  # file offset of self._buf[0]
        self._eof = False  # the file has no more bytes
        self._frames = 0  # frames started
        self._frame_start = 0  # file offset of the current frame
        self._out = memoryview(b"")
        self._done = False

    @property
    def _offset(self) -> int:
        return self._base + self._pos

    def _available(self, n: int) -> bool:
        """Make n unused bytes available in self._buf; False if the file ends first."""
        if len(self._buf) - self._pos >= n:
            return True
        pieces = [self._buf[self._pos :]]
        have = len(pieces[0])
        self._base += self._pos
        while have < n and not self._eof:
            data = self._fh.read(max(INPUT_SLICE, n - have))
            if not data:
                self._eof = True
            pieces.append(data)
            have += len(data)
        self._buf, self._pos = b"".join(pieces), 0
        return have >= n

    def _take(self, n: int) -> bytes:
        piece = self._buf[self._pos : self._pos + n]
        self._pos += len(piece)
        return piece

    def _error(self, kind: str, reason: str, offset: int) -> ReadError:
        return ReadError(self._path, reason, offset=offset, kind=kind)

    def _truncated(self, what: str) -> ReadError:
        self._available(1 << 62)  # to the end, for the size
        size = self._base + len(self._buf)
        return self._error(
            "truncated",
            f"truncated {self.codec} stream: the file ends ({size} bytes) inside {what} of the "
            f"{self.unit} starting at byte offset {self._frame_start} (it was cut short: download "
            "or copy it again)",
            size,
        )

    def _trailing_garbage(self) -> ReadError:
        self._available(64)
        head = self._buf[self._pos : self._pos + 64]
        if len(head) < 4 and any(m.startswith(head) for m in (ZSTD_MAGIC, GZIP_MAGIC)):
            return self._truncated("the magic number")
        return self._error(
            "trailing_garbage",
            f"trailing garbage after the last complete {self.codec} {self.unit} ({self._frames} "
            f"read): {describe_bytes(head)}; the file was probably appended to or corrupted",
            self._offset,
        )

    def _corrupt(self, detail: object, offset: int) -> ReadError:
        return self._error(
            "corrupt",
            f"corrupt {self.codec} data near byte offset {offset} (in the {self.unit} starting at "
            f"{self._frame_start}): {detail}",
            offset,
        )

    def _decompress_more(self) -> bytes:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        try:
            self._fh.close()
        finally:
            super().close()

    def readinto(self, buffer) -> int:
        while not self._out:
            if self._done:
                return 0
            out = self._decompress_more()
            if not out:
                self._done = True
                return 0
            self._out = memoryview(out)
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


class _ZstdRaw(_DecompressedRaw):
    """zstd frames fed to the decompressor one block at a time.

    A zstd block decompresses to at most 128 KiB, so walking the block headers (RFC 8878 §3.1.1.2: 3
    bytes, little-endian: bit 0 last block, bits 1-2 type, bits 3-23 size) bounds the output of each
    call whatever the compression ratio, and tells exactly where each frame must end.
    """

    codec = "zstd"

    def __init__(self, fh: io.RawIOBase, path: str | os.PathLike) -> None:
        super().__init__(fh, path)
        import zstandard

        self._zstd = zstandard
        self._decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self._obj = None  # decompressor of the current frame; None between frames
        self._checksum = False  # the current frame ends with a 4-byte content checksum

    def _feed(self, data: bytes, offset: int) -> bytes:
        try:
            return self._obj.decompress(data)
        except self._zstd.ZstdError as e:
            raise self._corrupt(e, offset) from e

    def _start_frame(self) -> bytes | None:
        """Consume a frame header (or a whole skippable frame); None at a clean end of file."""
        if not self._available(1):
            return None
        self._frame_start = self._offset
        if not self._available(4):
            raise self._trailing_garbage()
        magic = self._buf[self._pos : self._pos + 4]
        if _is_skippable_frame(
            magic
        ):  # magic, 4-byte little-endian size, that many bytes of user data
            if not self._available(8):
                raise self._truncated("the header")
            size = int.from_bytes(self._buf[self._pos + 4 : self._pos + 8], "little")
            if not self._available(8 + size):
                raise self._truncated("the skippable frame")
            self._take(8 + size)
            return b""
        if magic != ZSTD_MAGIC:
            raise self._trailing_garbage()
        self._available(18)  # the longest frame header
        head = self._buf[self._pos : self._pos + 18]
        try:
            header_size = self._zstd.frame_header_size(head)
            if len(head) < header_size:
                raise self._truncated("the header")
            self._checksum = self._zstd.get_frame_parameters(head[:header_size]).has_checksum
        except self._zstd.ZstdError as e:
            if len(head) < 18:
                raise self._truncated("the header") from e
            raise self._corrupt(f"bad frame header: {e}", self._offset) from e
        self._frames += 1
        self._obj = self._decompressor.decompressobj()
        return self._feed(self._take(header_size), self._frame_start)

    def _decompress_more(self) -> bytes:
        while True:
            if self._obj is None:
                out = self._start_frame()
                if out is None:
                    return b""
                if out:
                    return out
                continue
            offset = self._offset
            if not self._available(3):
                raise self._truncated("a block header")
            header = int.from_bytes(self._buf[self._pos : self._pos + 3], "little")
            last, block_type, size = header & 1, (header >> 1) & 3, header >> 3
            if block_type == 3 or size > 1 << 17:
                raise self._corrupt(f"bad block header {header:06x}", offset)
            unit = 3 + (1 if block_type == 1 else size)  # an RLE block stores one byte
            if last and self._checksum:
                unit += 4
            if not self._available(unit):
                raise self._truncated("a block")
            out = self._feed(self._take(unit), offset)
            if last:
                if not self._obj.eof or self._obj.unused_data:
                    raise self._corrupt("the frame does not end at its last block", offset)
                self._obj = None
            if out:
                return out


class _GzipRaw(_DecompressedRaw):
    """gzip members decompressed with zlib, whose `max_length` bounds the output of each call."""

    codec = "gzip"
    unit = "member"

    def __init__(self, fh: io.RawIOBase, path: str | os.PathLike) -> None:
        super().__init__(fh, path)
        self._obj = None

    def _decompress_more(self) -> bytes:
        while True:
            if self._obj is None:
                if not self._available(1):
                    return b""
                self._frame_start = self._offset
                self._available(2)
                head = self._buf[self._pos : self._pos + 2]
                if head == GZIP_MAGIC:
                    self._obj = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
                    self._frames += 1
                elif not head.strip(b"\0"):
                    while self._available(1):  # NUL padding is allowed only up to the end
                        rest = self._take(INPUT_SLICE)
                        if rest.strip(b"\0"):
                            self._pos -= len(rest.lstrip(b"\0"))
                            raise self._trailing_garbage()
                    return b""
                else:
                    raise self._trailing_garbage()
            if not self._available(1):
                raise self._truncated("the compressed data")
            offset = self._offset
            data = self._buf[self._pos : self._pos + INPUT_SLICE]
            try:
                out = self._obj.decompress(data, GZIP_MAX_OUTPUT)
            except zlib.error as e:
                raise self._corrupt(e, offset) from e
            used = len(data) - len(self._obj.unconsumed_tail)
            if self._obj.eof:
                used -= len(self._obj.unused_data)
                self._obj = None
            self._pos += used
            if out:
                return out


def compressed_offset(reader: io.BufferedIOBase) -> int:
    """Bytes of the file (compressed, for zstd/gzip) consumed by a reader from `open_decompressed`
    so far: the position to show progress by."""
    raw = getattr(reader, "raw", None)
    if isinstance(raw, _DecompressedRaw):
        return raw._offset
    return reader.tell()


def open_decompressed(
    path: str | os.PathLike, *, buffer_size: int = BUFFER_SIZE
) -> io.BufferedReader:
    """A buffered binary reader over the decompressed content of `path` (iterate it for lines).

    The compression comes from the magic bytes; a suffix that disagrees (a `.zst` that is an HTML
    page), a git-LFS pointer or an HTML page where JSON Lines were expected raise ReadError naming
    what was found. Errors inside the stream (truncation, trailing garbage, corrupt data) are raised
    while reading.
    """
    head = read_head(path)
    codec = compression_of(path, head)
    try:
        fh = open(path, "rb", buffering=0 if codec != "none" else buffer_size)
    except OSError as e:
        raise ReadError(path, f"cannot read the file: {e.strerror or e}", kind="unreadable") from e
    if codec == "none":
        return fh
    raw = _ZstdRaw(fh, path) if codec == "zstd" else _GzipRaw(fh, path)
    return io.BufferedReader(raw, buffer_size)
