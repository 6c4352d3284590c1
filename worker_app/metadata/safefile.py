"""The file object mutagen reads through: bounded reads, and optionally a spliced view of the file.

Bounded reads: CPython's buffered ``read(n)`` allocates ``n`` bytes before reading, and mutagen passes sizes
straight from headers, so a corrupt 4-byte length in a 30 kB file asks for a 4 GB buffer. ``SafeFile`` never asks
the real file for more than it holds.

Spliced view: ``edits`` replace byte ranges of the real file (``Edit(start, end, data)``): the oversized-item
scanners (``oversize.py``) cut a 50 MB picture out of a tag and patch the size fields around it, so mutagen parses
a consistent, smaller file and never reads the picture. Offsets mutagen sees are offsets in the view.
"""
from __future__ import annotations

import bisect
import errno
import os
from collections.abc import Iterable
from typing import BinaryIO, NamedTuple

MAX_READS = 250_000  # read calls one file may take: a typical file takes 10-100, 5,000 Vorbis comments 10,000


class ReadBudgetExceeded(Exception):
    """A parser read the file more times than any file needs: it is going round in circles (a corrupt length
    that points backwards, as in mutagen's Musepack SV8 packet loop), so stop it now rather than at the time
    limit."""


class Edit(NamedTuple):
    start: int  # offset in the real file
    end: int  # bytes [start, end) of the real file are replaced by ``data`` (start == end inserts)
    data: bytes = b""


class _Segment(NamedTuple):
    start: int  # offset in the view
    length: int
    file_offset: int  # -1 for literal bytes
    data: bytes


class SafeFile:
    """Read-only, seekable; ``close`` leaves the real file open (its owner closes it)."""

    def __init__(self, fileobj: BinaryIO, size: int, edits: Iterable[Edit] = (), name: str = "",
                 capped: bool = False):
        self._file = fileobj
        self.name = name
        self.capped = capped  # the file is above the picture limit: read it with the capped mutagen classes
        self._position = 0
        self._file_position = -1  # where the real file is, to skip needless seeks; -1: unknown
        self._reads_left = MAX_READS
        if not edits:  # the common case, kept cheap: one segment, the whole file
            self._segments = [_Segment(0, size, 0, b"")]
            self._starts = [0]
            self._spliced = False
            self.size = size
            return
        segments: list[_Segment] = []
        view_offset = file_offset = 0
        for edit in sorted(edits):
            if not file_offset <= edit.start <= edit.end <= size:
                raise ValueError(f"overlapping or out-of-file edit {edit[:2]}")
            if edit.start > file_offset:
                segments.append(_Segment(view_offset, edit.start - file_offset, file_offset, b""))
                view_offset += edit.start - file_offset
            if edit.data:
                segments.append(_Segment(view_offset, len(edit.data), -1, edit.data))
                view_offset += len(edit.data)
            file_offset = edit.end
        if file_offset < size:
            segments.append(_Segment(view_offset, size - file_offset, file_offset, b""))
            view_offset += size - file_offset
        self._segments = segments
        self._starts = [segment.start for segment in segments]
        self._spliced = len(segments) != 1 or segments[0].file_offset != 0
        self.size = view_offset

    @property
    def spliced(self) -> bool:
        """Some edits apply: what mutagen sees is not byte for byte the file."""
        return self._spliced

    # -- the io API mutagen uses

    def read(self, size: int | None = -1) -> bytes:
        # mutagen reads often and little (FLAC: 1 and 3 bytes at a time): this path is kept short
        self._reads_left -= 1
        if self._reads_left < 0:
            raise ReadBudgetExceeded(f"the parser went round in circles (over {MAX_READS} reads)")
        position = self._position
        remaining = self.size - position
        if size is None or size < 0 or size > remaining:
            size = remaining
        if size <= 0:
            return b""
        if self._spliced:
            data = self._read_view(size)
        else:
            if self._file_position != position:
                self._file.seek(position)
            data = self._file.read(size)
            self._file_position = position + len(data)
        self._position = position + len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self._position + offset
        elif whence == os.SEEK_END:
            position = self.size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if position < 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        self._position = position
        return position

    def tell(self) -> int:
        return self._position

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        pass

    @property
    def closed(self) -> bool:
        return self._file.closed

    # -- internals

    def _read_file(self, offset: int, size: int) -> bytes:
        if self._file_position != offset:
            self._file.seek(offset)
        data = self._file.read(size)
        self._file_position = offset + len(data)
        return data

    def _read_view(self, size: int) -> bytes:
        parts = []
        position = self._position
        index = bisect.bisect_right(self._starts, position) - 1
        while size > 0 and 0 <= index < len(self._segments):
            segment = self._segments[index]
            inside = position - segment.start
            wanted = min(size, segment.length - inside)
            if segment.file_offset < 0:
                part = segment.data[inside:inside + wanted]
            else:
                part = self._read_file(segment.file_offset + inside, wanted)
            parts.append(part)
            if len(part) < wanted:  # the real file got shorter since it was measured
                break
            position += wanted
            size -= wanted
            index += 1
        return b"".join(parts)
