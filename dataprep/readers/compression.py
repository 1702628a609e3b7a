"""Open an input file as a stream of decompressed bytes: zstd, gzip or plain, chosen by magic bytes
(`sniff.compression_of`).

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

from dataprep.errors import ReadError
from dataprep.readers.sniff import (
    GZIP_MAGIC,
    ZSTD_MAGIC,
    compression_of,
    describe_bytes,
    is_skippable_frame,
    read_head,
)

ZSTD_MAX_WINDOW = (
    2**31
)  # Pile shards were written with --long windows; zstd's default limit is 2**27
INPUT_SLICE = 1 << 16  # compressed bytes read from the file at a time
GZIP_MAX_OUTPUT = 1 << 22  # decompressed bytes taken from zlib per call (zlib can bound its output)
BUFFER_SIZE = 1 << 20  # line buffer over the decompressed bytes


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
        if is_skippable_frame(
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
