"""Tag items above the picture limit, found and left out before mutagen reads them.

mutagen reads a tag whole (an ID3v2 tag, an APEv2 tag, an ASF header object, an MP4 atom, an Ogg comment packet)
and copies it a few times while parsing, so a 50 MB picture costs 100-250 MB of memory before the extractor can
drop it. Only a file bigger than the limit can hold a picture bigger than the limit, so for those files only:

* ``plan_edits`` scans the tag structures that sit at known places (ID3v2 at the start of the file or in an
  AIFF/WAV/DSF chunk, FLAC metadata blocks, an APEv2 tag at the end, the ASF header) reading only item headers,
  and returns ``Edit``s that cut every oversized item out and patch the size and count fields around it. mutagen
  then reads a consistent ``SafeFile`` view that never contains the item.
* MP4 and Ogg are read through subclasses (``CappedMP4``, ``CappedOggVorbis``, ``CappedOggOpus``) that skip
  oversized atoms and comments as they meet them.

Each skipped picture is reported to the ``ReadContext`` (size, MIME type and picture type where the header says
them) so the reader can warn and still know it was the front cover. A scanner that meets anything it does not
understand gives up, and the file is read as it is: these scanners only ever remove well-delimited items.
"""
from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Protocol, TypeVar

from mutagen._vorbis import VCommentDict
from mutagen.asf._objects import HeaderExtensionObject, HeaderObject, MetadataLibraryObject, MetadataObject
from mutagen.id3 import BitPaddedInt
from mutagen.id3 import Frames as ID3_FRAMES
from mutagen.mp4 import MP4, MP4Cover, MP4Tags
from mutagen.mp4._atom import Atom, Atoms
from mutagen.ogg import OggPage
from mutagen.oggopus import OggOpus, OggOpusVComment
from mutagen.oggspeex import OggSpeex, OggSpeexVComment
from mutagen.oggvorbis import OggVCommentDict, OggVorbis

from worker_app.metadata.covers import MIME_BY_EXTENSION, MP4_COVER_MIME, ape_cover_item
from worker_app.metadata.formats import leading_id3_size
from worker_app.metadata.lenient import ReadContext, current
from worker_app.metadata.safefile import Edit

_MAX_ITEMS = 100_000  # frames, blocks, comments walked before a scanner gives up
_HEAD = 4096  # bytes read at the start of a skipped item to describe it


_T = TypeVar("_T")


class _GiveUp(Exception):
    pass


def comment_limit(max_cover_bytes: int) -> int:
    """Longest Vorbis comment kept: a METADATA_BLOCK_PICTURE is base64 (4/3 of the picture) plus its header."""
    return max_cover_bytes * 4 // 3 + 65536


@dataclass
class _Plan:
    """What one scanner found; handed to the ReadContext only if the scanner finishes."""

    edits: list[Edit] = field(default_factory=list)
    pictures: list[tuple[int, str | None, int | None]] = field(default_factory=list)
    items: list[tuple[str, int]] = field(default_factory=list)

    def absorb(self, other: _Plan) -> None:
        self.edits += other.edits
        self.pictures += other.pictures
        self.items += other.items


class _Reader:
    def __init__(self, fileobj: IO[bytes], size: int):
        self.file = fileobj
        self.size = size

    def at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= self.size:
            return b""
        self.file.seek(offset)
        return self.file.read(min(length, self.size - offset))

    def exactly(self, offset: int, length: int) -> bytes:
        data = self.at(offset, length)
        if len(data) != length:
            raise _GiveUp("truncated")
        return data


def plan_edits(fileobj: IO[bytes], size: int, context: ReadContext) -> list[Edit]:
    """The edits that leave out every tag item above ``context.max_cover_bytes``; reports them to ``context``."""
    reader = _Reader(fileobj, size)
    plan = _Plan()
    head = reader.at(0, 16)

    def attempt(scanner: Callable[..., _T], *args: Any) -> _T | None:
        sub = _Plan()
        try:
            result = scanner(reader, sub, context.max_cover_bytes, *args)
        except (_GiveUp, struct.error, ValueError, OverflowError):
            return None
        occupied = [(edit.start, edit.end) for edit in plan.edits]
        for edit in sub.edits:
            if any(start < edit.end and edit.start < end or start == end == edit.start for start, end in occupied):
                return None  # two scanners claim the same bytes: this file is stranger than they think
        plan.absorb(sub)
        return result

    if head[:3] == b"ID3":
        found = attempt(_id3, 0, False)
        if found is not None and reader.at(found[0], 4) == b"fLaC":
            attempt(_flac, found[0])
    elif head[:4] == b"fLaC":
        attempt(_flac, 0)
    elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        attempt(_iff, ">I")
    elif head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        attempt(_iff, "<I")
    elif head[:4] == b"FRM8" and head[12:16] == b"DSD ":
        attempt(_iff, ">Q")
    elif head[:4] == b"DSD ":
        attempt(_dsf)
    elif head[:16] == HeaderObject.GUID:
        attempt(_asf)
    if head[:4] not in (b"FORM", b"RIFF", b"DSD ", b"FRM8") and head[:16] != HeaderObject.GUID:
        attempt(_apev2)  # at the end of MP3, WavPack, Monkey's Audio, Musepack, TTA files
    for picture_size, mime, picture_type in plan.pictures:
        context.skip_picture(picture_size, mime, picture_type)
    for what, item_size in plan.items:
        context.skip_item(what, item_size)
    return plan.edits


# ---------------------------------------------------------------- ID3v2


def _syncsafe(data: bytes) -> int:
    return int(BitPaddedInt(data))


def _to_syncsafe(value: int) -> bytes:
    if value >= 1 << 28:
        raise _GiveUp("tag too big")
    return BitPaddedInt.to_str(value, width=4)


def _id3v24_uses_syncsafe_sizes(reader: _Reader, base: int, length: int) -> bool:
    """mutagen's determine_bpi, walking frame headers in the file: iTunes wrote plain integers in ID3v2.4."""
    results = []
    for syncsafe in (True, False):
        offset = known = 0
        past = None
        for _ in range(_MAX_ITEMS):
            if not offset < length - 10:
                break
            part = reader.at(base + offset, 10)
            if part == b"\x00" * 10:
                past = -((length - offset) % 10)
                break
            if len(part) < 10:
                raise _GiveUp("truncated")
            name = part[:4]
            size = _syncsafe(part[4:8]) if syncsafe else int.from_bytes(part[4:8], "big")
            offset += 10 + size
            try:
                if name.decode("ascii") in ID3_FRAMES:
                    known += 1
            except UnicodeDecodeError:
                pass
        else:
            raise _GiveUp("too many frames")
        results.append((known, past if past is not None else offset - length))
    (as_syncsafe, syncsafe_past), (as_int, int_past) = results
    return not (as_int > as_syncsafe or (as_int == as_syncsafe and syncsafe_past >= 1 and int_past <= 1))


def _id3(reader: _Reader, plan: _Plan, limit: int, start: int, keep_even: bool) -> tuple[int, int]:
    """Returns (end of the tag, bytes removed). ``keep_even``: an odd removal gets a NUL of padding back, so the
    chunk around the tag (AIFF, WAV) keeps its parity."""
    header = reader.exactly(start, 10)
    if header[:3] != b"ID3" or any(byte & 0x80 for byte in header[6:10]):
        raise _GiveUp("not an ID3v2 header")
    major, flags = header[3], header[5]
    end = start + leading_id3_size(header)
    size = end - start - 10
    if major not in (2, 3, 4) or flags & 0x40 or (major == 4 and flags & 0x10) or (major < 4 and flags & 0x80):
        raise _GiveUp("extended header, footer or whole-tag unsynchronisation")
    if end > reader.size:
        raise _GiveUp("truncated tag")
    header_length = 6 if major == 2 else 10
    if major == 4:
        syncsafe = _id3v24_uses_syncsafe_sizes(reader, start + 10, size)
    removed = 0
    position = start + 10
    for _ in range(_MAX_ITEMS):
        frame_header = reader.at(position, header_length)
        if len(frame_header) < header_length or position + header_length > end:
            break
        name = frame_header[:3 if major == 2 else 4]
        if name.strip(b"\x00") == b"":
            break
        if major == 2:
            frame_size = int.from_bytes(frame_header[3:6], "big")
        elif major == 3 or not syncsafe:
            frame_size = int.from_bytes(frame_header[4:8], "big")
        else:
            frame_size = _syncsafe(frame_header[4:8])
        data_start = position + header_length
        frame_end = min(data_start + frame_size, end)
        if frame_size > limit:
            plan.edits.append(Edit(position, frame_end))
            removed += frame_end - position
            _describe_id3_frame(reader, plan, name, frame_header, data_start, frame_size, major)
        position = data_start + frame_size
    else:
        raise _GiveUp("too many frames")
    if removed:
        padding = b"\x00" if keep_even and removed % 2 else b""
        if padding:
            plan.edits.append(Edit(end, end, padding))
        plan.edits.append(Edit(start + 6, start + 10, _to_syncsafe(size - removed + len(padding))))
        removed -= len(padding)
    return end, removed


def _describe_id3_frame(reader: _Reader, plan: _Plan, name: bytes, frame_header: bytes, data_start: int,
                        frame_size: int, major: int) -> None:
    label = name.decode("latin-1")
    if name not in (b"APIC", b"PIC"):
        plan.items.append((f"ID3 frame {label}", frame_size))
        return
    flags = int.from_bytes(frame_header[8:10], "big") if major > 2 else 0
    prefix = 0
    if major == 4:
        if flags & 0x0001:
            prefix = 4  # data length indicator
        unreadable = flags & 0x000E  # unsynchronised, encrypted or compressed
    elif major == 3:
        prefix = (4 if flags & 0x0080 else 0) + (1 if flags & 0x0020 else 0)
        unreadable = flags & 0x00C0
    else:
        unreadable = 0
    if unreadable:
        plan.pictures.append((frame_size, None, None))
        return
    head = reader.at(data_start + prefix, min(frame_size - prefix, _HEAD))
    try:
        encoding = head[0]
        if major == 2:
            mime = MIME_BY_EXTENSION.get(head[1:4].decode("latin-1").lower())  # v2.2: "JPG", "PNG"...
            type_at = 4
        else:
            mime_end = head.index(b"\x00", 1)
            mime = head[1:mime_end].decode("latin-1") or None
            type_at = mime_end + 1
        picture_type = head[type_at]
        description_start = type_at + 1
        if encoding in (1, 2):
            terminator = head.find(b"\x00\x00", description_start)
            while terminator >= 0 and (terminator - description_start) % 2:
                terminator = head.find(b"\x00\x00", terminator + 1)
            data_offset = terminator + 2
        else:
            terminator = head.find(b"\x00", description_start)
            data_offset = terminator + 1
        if terminator < 0:
            raise ValueError("description longer than the head")
    except (IndexError, ValueError):
        plan.pictures.append((frame_size, None, None))
        return
    plan.pictures.append((frame_size - prefix - data_offset, mime, picture_type))


# ---------------------------------------------------------------- containers holding an ID3v2 tag


def _iff(reader: _Reader, plan: _Plan, limit: int, size_format: str) -> None:
    """AIFF (big-endian 32-bit sizes), WAV (little-endian) and DSDIFF (big-endian 64-bit): the ID3 chunk, and the
    sizes of it and of the file. A chunk is an id, a size, the data, and a pad byte when the size is odd."""
    width = struct.calcsize(size_format)
    header = 4 + width
    form_size, = struct.unpack(size_format, reader.exactly(4, width))
    position = header + 4  # after the form type ("AIFF", "WAVE", "DSD ")
    for _ in range(_MAX_ITEMS):
        chunk_header = reader.at(position, header)
        if len(chunk_header) < header:
            return
        chunk_size, = struct.unpack(size_format, chunk_header[4:])
        if chunk_header[:4] in (b"ID3 ", b"id3 "):
            _, removed = _id3(reader, plan, limit, position + header, True)
            if removed:
                plan.edits.append(Edit(position + 4, position + header,
                                       struct.pack(size_format, chunk_size - removed)))
                plan.edits.append(Edit(4, header, struct.pack(size_format, form_size - removed)))
            return
        position += header + chunk_size + (chunk_size & 1)
    raise _GiveUp("too many chunks")


def _dsf(reader: _Reader, plan: _Plan, limit: int) -> None:
    header = reader.exactly(0, 28)
    total_size, metadata_offset = struct.unpack("<QQ", header[12:28])
    if metadata_offset:
        _, removed = _id3(reader, plan, limit, metadata_offset, False)
        if removed:
            plan.edits.append(Edit(12, 20, struct.pack("<Q", total_size - removed)))


# ---------------------------------------------------------------- FLAC


def _flac(reader: _Reader, plan: _Plan, limit: int, start: int) -> None:
    if reader.exactly(start, 4) != b"fLaC":
        raise _GiveUp("not FLAC")
    position = start + 4
    last_kept = None  # (offset, first byte) of the last block header kept
    for _ in range(_MAX_ITEMS):
        block_header = reader.exactly(position, 4)
        is_last, block_type = block_header[0] & 0x80, block_header[0] & 0x7F
        body = position + 4
        cut = False
        if block_type == 6:  # PICTURE; its size field is not trusted (writers overflow it, as mutagen knows)
            picture_type, mime_length = struct.unpack(">II", reader.exactly(body, 8))
            if mime_length > 65536:
                raise _GiveUp("absurd MIME type")
            mime = reader.exactly(body + 8, mime_length).decode("utf-8", "replace")
            description_length, = struct.unpack(">I", reader.exactly(body + 8 + mime_length, 4))
            data_length_at = body + 8 + mime_length + 4 + description_length + 16
            data_length, = struct.unpack(">I", reader.exactly(data_length_at, 4))
            end = data_length_at + 4 + data_length
            if data_length > limit:
                cut = True
                plan.edits.append(Edit(position, min(end, reader.size)))
                plan.pictures.append((data_length, mime or None, picture_type))
        elif block_type == 4:  # VORBIS_COMMENT; size not trusted either
            end = _vorbis_comments_in_file(reader, plan, limit, body)
        else:
            end = body + int.from_bytes(block_header[1:4], "big")
        if not cut:
            last_kept = (position, block_header[0])
        elif is_last:
            if last_kept is None:
                raise _GiveUp("nothing left")
            plan.edits.append(Edit(last_kept[0], last_kept[0] + 1, bytes([last_kept[1] | 0x80])))
        if is_last:
            return
        position = end
    raise _GiveUp("too many blocks")


def _vorbis_comments_in_file(reader: _Reader, plan: _Plan, limit: int, start: int) -> int:
    """Cut the oversized comments of a Vorbis comment structure (no framing bit); returns where it ends."""
    keep_limit = comment_limit(limit)
    vendor_length, = struct.unpack("<I", reader.exactly(start, 4))
    if vendor_length > keep_limit:
        raise _GiveUp("absurd vendor string")
    count_at = start + 4 + vendor_length
    count, = struct.unpack("<I", reader.exactly(count_at, 4))
    position: int = count_at + 4
    removed = 0
    for _ in range(min(count, _MAX_ITEMS + 1)):
        length, = struct.unpack("<I", reader.exactly(position, 4))
        if length > keep_limit:
            if position + 4 + length > reader.size:
                raise _GiveUp("truncated comment")
            plan.edits.append(Edit(position, position + 4 + length))
            _describe_comment(reader.at(position + 4, min(length, _HEAD)), length, plan)
            removed += 1
        position += 4 + length
    if count > _MAX_ITEMS:
        raise _GiveUp("too many comments")
    if removed:
        plan.edits.append(Edit(count_at, count_at + 4, struct.pack("<I", count - removed)))
    return position


def _describe_comment(head: bytes, length: int, plan: _Plan) -> None:
    key, _, value = head.partition(b"=")
    name = key.decode("ascii", "replace").upper()
    if name == "METADATA_BLOCK_PICTURE":
        usable = len(value) // 4 * 4
        try:
            block = base64.b64decode(value[:usable])
            picture_type, mime_length = struct.unpack_from(">II", block)
            mime = block[8:8 + mime_length].decode("utf-8", "replace")
            description_length, = struct.unpack_from(">I", block, 8 + mime_length)
            data_length, = struct.unpack_from(">I", block, 8 + mime_length + 4 + description_length + 16)
        except (binascii.Error, struct.error, ValueError):
            plan.pictures.append(((length - len(key) - 1) * 3 // 4, None, None))
        else:
            plan.pictures.append((data_length, mime or None, picture_type))
    elif name == "COVERART":
        plan.pictures.append(((length - len(key) - 1) * 3 // 4, None, None))
    else:
        plan.items.append((f"Vorbis comment {name}", length))


# ---------------------------------------------------------------- APEv2


def _apev2(reader: _Reader, plan: _Plan, limit: int) -> None:
    footer_at = reader.size - 32
    if reader.at(reader.size - 128, 3) == b"TAG" and reader.at(reader.size - 160, 8) == b"APETAGEX":
        footer_at = reader.size - 160
    footer = reader.at(footer_at, 32)
    if footer[:8] != b"APETAGEX":
        return
    _, tag_size, count, flags = struct.unpack("<4I", footer[8:24])
    items_start = footer_at + 32 - tag_size
    if tag_size < 32 or items_start < 0 or flags & 0x20000000:
        raise _GiveUp("bad footer")
    header_at = items_start - 32 if flags & 0x80000000 else None
    position = items_start
    removed_bytes = removed_items = 0
    for _ in range(min(count, _MAX_ITEMS + 1)):
        if position + 8 > footer_at:
            break
        value_size, _ = struct.unpack("<II", reader.exactly(position, 8))
        key_area = reader.at(position + 8, 256)
        key_end = key_area.find(b"\x00")
        if key_end < 0:
            raise _GiveUp("unterminated key")
        value_start = position + 8 + key_end + 1
        value_end = value_start + value_size
        if value_end > footer_at:
            raise _GiveUp("item beyond the tag")
        if value_size > limit:
            key = key_area[:key_end].decode("latin-1")
            plan.edits.append(Edit(position, value_end))
            removed_bytes += value_end - position
            removed_items += 1
            if key.lower().startswith("cover art"):
                image_start, mime, picture_type = ape_cover_item(key, reader.at(value_start, min(value_size, 1024)))
                plan.pictures.append((value_size - image_start, mime, picture_type))
            else:
                plan.items.append((f"APEv2 item {key}", value_size))
        position = value_end
    if count > _MAX_ITEMS:
        raise _GiveUp("too many items")
    if removed_items:
        fields = struct.pack("<II", tag_size - removed_bytes, count - removed_items)
        plan.edits.append(Edit(footer_at + 12, footer_at + 20, fields))
        if header_at is not None and reader.at(header_at, 8) == b"APETAGEX":
            plan.edits.append(Edit(header_at + 12, header_at + 20, fields))


# ---------------------------------------------------------------- ASF (WMA)


def _asf(reader: _Reader, plan: _Plan, limit: int) -> None:
    """Values above 64 kB (WM/Picture) live in the Metadata Library object inside the Header Extension."""
    header_size, object_count = struct.unpack("<QI", reader.exactly(16, 12))
    position = 30
    removed_total = 0
    for _ in range(min(object_count, 1000)):
        guid, object_size = struct.unpack("<16sQ", reader.exactly(position, 24))
        if object_size < 24 or position + object_size > header_size:
            raise _GiveUp("bad object size")
        if guid == HeaderExtensionObject.GUID:
            data_size, = struct.unpack("<I", reader.exactly(position + 24 + 18, 4))
            inner = position + 46
            inner_end = inner + data_size
            removed_here = 0
            while inner + 24 <= inner_end:
                inner_guid, inner_size = struct.unpack("<16sQ", reader.exactly(inner, 24))
                if inner_size < 24 or inner + inner_size > inner_end:
                    raise _GiveUp("bad inner object size")
                if inner_guid in (MetadataObject.GUID, MetadataLibraryObject.GUID):
                    removed_here += _asf_records(reader, plan, limit, inner, inner_size)
                inner += inner_size
            if removed_here:
                plan.edits.append(Edit(position + 16, position + 24, struct.pack("<Q", object_size - removed_here)))
                plan.edits.append(Edit(position + 42, position + 46, struct.pack("<I", data_size - removed_here)))
                removed_total += removed_here
        position += object_size
    if removed_total:
        plan.edits.append(Edit(16, 24, struct.pack("<Q", header_size - removed_total)))


def _asf_records(reader: _Reader, plan: _Plan, limit: int, start: int, size: int) -> int:
    count, = struct.unpack("<H", reader.exactly(start + 24, 2))
    position = start + 26
    removed_bytes = removed_records = 0
    for _ in range(count):
        _, _, name_length, _, value_length = struct.unpack("<HHHHI", reader.exactly(position, 12))
        value_start = position + 12 + name_length
        record_end = value_start + value_length
        if record_end > start + size:
            raise _GiveUp("record beyond its object")
        if value_length > limit:
            name = reader.exactly(position + 12, name_length).decode("utf-16-le", "replace").strip("\x00")
            plan.edits.append(Edit(position, record_end))
            removed_bytes += record_end - position
            removed_records += 1
            if name == "WM/Picture":
                head = reader.at(value_start, min(value_length, 1024))
                try:
                    picture_type, picture_size = struct.unpack_from("<BI", head)
                    mime_end = next(i for i in range(5, len(head) - 1, 2) if head[i:i + 2] == b"\x00\x00")
                    mime = head[5:mime_end].decode("utf-16-le", "replace") or None
                except (struct.error, StopIteration):
                    plan.pictures.append((value_length, None, None))
                else:
                    plan.pictures.append((picture_size, mime, picture_type))
            else:
                plan.items.append((f"WMA attribute {name}", value_length))
        position = record_end
    if removed_records:
        plan.edits.append(Edit(start + 16, start + 24, struct.pack("<Q", size - removed_bytes)))
        plan.edits.append(Edit(start + 24, start + 26, struct.pack("<H", count - removed_records)))
    return removed_bytes


# ---------------------------------------------------------------- MP4


class CappedMP4Tags(MP4Tags):
    """MP4Tags that leaves the oversized children of ``ilst`` unread; small covers of ``covr`` are still read."""

    def load(self, atoms: Atoms, fileobj: IO[bytes]) -> None:
        context = current()
        try:
            ilst = atoms.path(b"moov", b"udta", b"meta", b"ilst")[-1]
        except KeyError:
            ilst = None
        # mutagen's MP4Tags.load is unannotated
        if context is None or ilst is None:
            super().load(atoms, fileobj)  # type: ignore[no-untyped-call]
            return
        limit = context.max_cover_bytes
        oversized = [atom for atom in ilst.children if atom.length > limit]
        if not oversized:
            super().load(atoms, fileobj)  # type: ignore[no-untyped-call]
            return
        ilst.children = [atom for atom in ilst.children if atom.length <= limit]
        super().load(atoms, fileobj)  # type: ignore[no-untyped-call]
        for atom in oversized:
            if atom.name == b"covr":
                self._read_covers(atom, fileobj, context)
            else:
                context.skip_item(f"MP4 atom {atom.name.decode('latin-1')!r}", atom.datalength)

    def _read_covers(self, atom: Atom, fileobj: IO[bytes], context: ReadContext) -> None:
        covers = []
        position, end = atom.offset + (atom.length - atom.datalength), atom.offset + atom.length
        while position + 16 <= end:
            fileobj.seek(position)
            header = fileobj.read(16)
            if len(header) < 16:
                break
            length, name, data_type = struct.unpack(">I4sI", header[:12])
            if length < 16 or position + length > end:
                context.note("unreadable MP4 cover atom skipped")
                break
            if name == b"data":
                image_format = data_type & 0xFFFFFF
                if length - 16 > context.max_cover_bytes:
                    context.skip_picture(length - 16, MP4_COVER_MIME.get(image_format), None)
                else:
                    data = fileobj.read(length - 16)
                    if image_format not in MP4_COVER_MIME:
                        image_format = MP4Cover.FORMAT_JPEG
                    covers.append(MP4Cover(data, image_format))
            position += length
        if covers:
            self["covr"] = covers


class CappedMP4(MP4):
    MP4Tags = CappedMP4Tags


# ---------------------------------------------------------------- Ogg


class _Fragments:
    """The bytes of the first packet of a logical stream, page by page: a reader that never holds the packet."""

    def __init__(self, fileobj: IO[bytes], serial: int, prefix: bytes):
        self._pages = self._pieces(fileobj, serial, prefix)
        self._buffer = bytearray()

    @staticmethod
    def _pieces(fileobj: IO[bytes], serial: int, prefix: bytes) -> Iterator[bytes]:
        page = OggPage(fileobj)
        while page.serial != serial or not page.packets or (prefix and not page.packets[0].startswith(prefix)):
            page = OggPage(fileobj)
        yield page.packets[0]
        last = page  # of this stream: pages of other streams (multiplexed) are skipped
        while not (last.complete or len(last.packets) > 1):
            page = OggPage(fileobj)
            if page.serial != serial:
                continue
            if not page.continued or not page.packets:
                return
            yield page.packets[0]
            last = page

    def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            piece = next(self._pages, None)
            if piece is None:
                return
            self._buffer += piece

    def read(self, size: int) -> bytes:
        self._fill(size)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def skip(self, size: int) -> None:
        while size > 0:
            self._fill(min(size, 65536))
            if not self._buffer:
                return
            step = min(size, len(self._buffer))
            del self._buffer[:step]
            size -= step


class _OggInfo(Protocol):
    """An Ogg stream's info (OggVorbisInfo, OggOpusInfo, OggSpeexInfo): its logical stream's serial number."""

    serial: int


def _filtered_comment_packet(fileobj: IO[bytes], info: _OggInfo, prefix: bytes, framing: bool,
                             context: ReadContext) -> bytes:
    """The comment packet (prefix stripped) rebuilt without the comments above the limit."""
    keep_limit = comment_limit(context.max_cover_bytes)
    packet = _Fragments(fileobj, info.serial, prefix if prefix == b"OpusTags" else b"")
    packet.skip(len(prefix))
    kept: list[bytes] = []
    vendor = b""
    length_field = packet.read(4)
    if len(length_field) == 4:
        vendor_length, = struct.unpack("<I", length_field)
        if vendor_length > keep_limit:
            packet.skip(vendor_length)
            context.skip_item("Vorbis vendor string", vendor_length)
        else:
            vendor = packet.read(vendor_length)
        count_field = packet.read(4)
        count = struct.unpack("<I", count_field)[0] if len(count_field) == 4 else 0
        for _ in range(count):
            length_field = packet.read(4)
            if len(length_field) < 4:
                break
            length, = struct.unpack("<I", length_field)
            if length > keep_limit:
                head = packet.read(min(length, _HEAD))
                packet.skip(length - len(head))
                plan = _Plan()
                _describe_comment(head, length, plan)
                for picture in plan.pictures:
                    context.skip_picture(*picture)
                for item in plan.items:
                    context.skip_item(*item)
                continue
            comment = packet.read(length)
            if len(comment) < length:
                break
            kept.append(comment)
    parts = [struct.pack("<I", len(vendor)), vendor, struct.pack("<I", len(kept))]
    for comment in kept:
        parts += [struct.pack("<I", len(comment)), comment]
    if framing:
        parts.append(b"\x01")
    return b"".join(parts)


class _CappedComments(VCommentDict):
    _PREFIX = b""
    _FRAMING = False

    def __init__(self, fileobj: IO[bytes], info: _OggInfo) -> None:
        context = current()
        if context is None:
            super().__init__(fileobj, info)  # type: ignore[no-untyped-call]  # mutagen's __init__ is unannotated
            return
        data = _filtered_comment_packet(fileobj, info, self._PREFIX, self._FRAMING, context)
        VCommentDict.__init__(self, data, framing=self._FRAMING)
        self._padding = 0
        self._pad_data = b""


class CappedVorbisComments(_CappedComments, OggVCommentDict):  # type: ignore[misc]  # mutagen's list/DictMixin __hash__ clash
    _PREFIX = b"\x03vorbis"
    _FRAMING = True


class CappedOpusComments(_CappedComments, OggOpusVComment):  # type: ignore[misc]  # mutagen's list/DictMixin __hash__ clash
    _PREFIX = b"OpusTags"
    _FRAMING = False


class CappedSpeexComments(_CappedComments, OggSpeexVComment):  # type: ignore[misc]  # mutagen's list/DictMixin __hash__ clash
    _PREFIX = b""  # Speex's comment packet has no magic: it is the stream's second packet
    _FRAMING = False


class CappedOggVorbis(OggVorbis):
    _Tags = CappedVorbisComments


class CappedOggSpeex(OggSpeex):
    _Tags = CappedSpeexComments


class CappedOggOpus(OggOpus):
    _Tags = CappedOpusComments


CAPPED_CLASSES = {MP4: CappedMP4, OggVorbis: CappedOggVorbis, OggOpus: CappedOggOpus, OggSpeex: CappedOggSpeex}
