"""Reading tags leniently: one bad string must cost that string, not the file's other tags or the file itself.

mutagen is strict in a few places where real files are sloppy, and what it does then loses data silently or
refuses the whole file:

* ID3: a text frame whose bytes do not match its declared encoding ("Caf\\xe9" in a UTF-8 frame), a lone
  UTF-16 surrogate, or an encoding byte that is not 0-3 makes the frame junk, dropped without a word.
* ID3: a compressed frame is inflated with no limit (a 1 MB frame can inflate to 1 GB).
* APEv2 (WavPack, Monkey's Audio, Musepack, MP3): one item with invalid UTF-8 or a bad name fails the whole tag,
  and with it the file.
* ASF (WMA): one attribute name or value with invalid UTF-16 fails the file.

The patches below change that only while the extractor reads a file (``ReadContext`` is set): text is decoded
with a fallback (bytes that are not UTF-8 as Windows-1252, bad UTF-16 as U+FFFD), bad items are skipped, and every
such repair leaves a note that becomes one of the record's warnings. Outside a read, mutagen behaves as shipped.
They are written against mutagen 1.48 internals (the version pinned here), and each one only acts where the
original fails, so a normal file is read exactly as mutagen reads it.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

import mutagen
import mutagen.id3._frames as id3_frames
from mutagen.apev2 import APEv2, _get_value_type, is_valid_apev2_key
from mutagen.apev2 import error as APEError
from mutagen.asf import ASF
from mutagen.asf._attrs import ASFBaseAttribute, ASFUnicodeAttribute
from mutagen.asf._objects import (
    BaseObject,
    ContentDescriptionObject,
    ExtendedContentDescriptionObject,
    MetadataLibraryObject,
    MetadataObject,
)
from mutagen.asf._util import ASFError
from mutagen.id3 import Encoding, Frame, ID3JunkFrameError
from mutagen.id3._specs import EncodedTextSpec, EncodingSpec, SpecError
from mutagen.id3._tags import ID3Header

from worker_app.metadata.cleaning import decode_utf8_lenient, format_size, shown
from worker_app.metadata.covers import EmbeddedPicture

# The mutagen releases whose internals the patches below were written against and tested with (requirements.txt
# pins one). Another release may have moved or changed what they replace: a patch that no longer applies would
# lose tags without a word, so the extractor refuses to start instead, until the patches are checked against it.
MUTAGEN_VERSIONS = ("1.48.1",)


def check_mutagen_version(version: str) -> None:
    if version not in MUTAGEN_VERSIONS:
        raise ImportError(f"worker_app.metadata.lenient was written for mutagen {', '.join(MUTAGEN_VERSIONS)}, "
                          f"not {version}: check its patches against this release, then add it to MUTAGEN_VERSIONS")


check_mutagen_version(mutagen.version_string)


@dataclass
class ReadContext:
    """What one read of one file needs besides the file: its limits, and where repairs and skips are told."""

    max_cover_bytes: int
    notes: list[str] = field(default_factory=list)  # become warnings
    skipped_pictures: list[EmbeddedPicture] = field(default_factory=list)  # data None: too big to read

    def note(self, text: str) -> None:
        self.notes.append(text)

    def skip_picture(self, size: int, mime: str | None, picture_type: int | None) -> None:
        self.skipped_pictures.append(EmbeddedPicture(None, mime, picture_type, size=size))
        self.note(picture_skipped_warning(size, self.max_cover_bytes))

    def skip_item(self, what: str, size: int) -> None:
        self.note(f"{what} of {size} bytes skipped: above the {format_size(self.max_cover_bytes)} limit")


def picture_skipped_warning(size: int, limit: int) -> str:
    return f"embedded picture of {size} bytes skipped: above the {format_size(limit)} limit"


_CURRENT: ContextVar[ReadContext | None] = ContextVar("soniquebay_read_context", default=None)


def current() -> ReadContext | None:
    return _CURRENT.get()


def enter(context: ReadContext) -> Token[ReadContext | None]:
    """Make ``context`` the current one; returns the token for ``leave``."""
    return _CURRENT.set(context)


def leave(token: Token[ReadContext | None]) -> None:
    _CURRENT.reset(token)


# ---------------------------------------------------------------- ID3 text


def decode_id3_value(data: bytes, encoding: int) -> tuple[str, bytes, bool]:
    """One NUL-terminated value of an ID3 text frame in ``encoding`` (its first byte): (text, rest, repaired).
    Never raises."""
    if encoding in (Encoding.UTF16, Encoding.UTF16BE):
        end = data.find(b"\x00\x00")
        while end >= 0 and end % 2:
            end = data.find(b"\x00\x00", end + 1)
        segment, rest = (data, b"") if end < 0 else (data[:end], data[end + 2:])
        if encoding == Encoding.UTF16BE:
            codec = "utf-16-be"
        elif segment[:2] in (b"\xff\xfe", b"\xfe\xff"):
            codec = "utf-16"
        else:
            codec = "utf-16-le"  # no byte order mark: what Windows taggers mean (mutagen assumes it too)
        return segment.decode(codec, "replace"), rest, True
    end = data.find(b"\x00")
    segment, rest = (data, b"") if end < 0 else (data[:end], data[end + 1:])
    if encoding == Encoding.LATIN1:
        return segment.decode("latin-1"), rest, False
    text, repaired = decode_utf8_lenient(segment)
    return text, rest, repaired


# The patched functions take mutagen's internal objects: a frame's fields (encoding...) are set at run time from its
# _framespec, so frames are typed Any.
_original_encoded_text_read: Callable[[EncodedTextSpec, ID3Header, Any, bytes], tuple[str, bytes]] = \
    EncodedTextSpec.read


def _encoded_text_read(self: EncodedTextSpec, header: ID3Header, frame: Any, data: bytes) -> tuple[str, bytes]:
    try:
        return _original_encoded_text_read(self, header, frame, data)
    except SpecError:
        context = current()
        if context is None:
            raise
        text, rest, _ = decode_id3_value(data, frame.encoding)
        name = type(frame).__name__
        if frame.encoding in (Encoding.UTF16, Encoding.UTF16BE):
            context.note(f"invalid UTF-16 in ID3 frame {name}, replaced")
        else:
            context.note(f"invalid UTF-8 in ID3 frame {name}, read as Windows-1252")
        if header.version < header._V24 and not rest.strip(b"\x00"):
            rest = b""
        return text, rest


_original_encoding_read: Callable[[EncodingSpec, ID3Header, Any, bytes], tuple[int, bytes]] = EncodingSpec.read


def _encoding_read(self: EncodingSpec, header: ID3Header, frame: Any, data: bytes) -> tuple[int, bytes]:
    try:
        return _original_encoding_read(self, header, frame, data)
    except SpecError:
        context = current()
        if context is None or not data:
            raise
        context.note(f"invalid text encoding {data[0]} in ID3 frame {type(frame).__name__}, read as UTF-8")
        return Encoding.UTF8, data[1:]


# the classmethod's function
_original_from_data: Callable[[type[Frame], ID3Header, int, bytes], Frame] = Frame.__dict__["_fromData"].__func__


def _from_data(cls: type[Frame], header: ID3Header, tflags: int, data: bytes) -> Frame:
    try:
        return _original_from_data(cls, header, tflags, data)
    except ID3JunkFrameError:
        context = current()
        if context is not None:
            context.note(f"unreadable ID3 frame {cls.__name__} skipped")
        raise


class _BoundedZlib:
    """Stands in for the ``zlib`` module inside mutagen.id3._frames: inflating stops at the picture limit."""

    error = zlib.error

    def __getattr__(self, name: str) -> Any:
        return getattr(zlib, name)

    @staticmethod
    def decompress(data: bytes, *args: Any, **kwargs: Any) -> bytes:
        context = current()
        if context is None:
            return zlib.decompress(data, *args, **kwargs)
        limit = context.max_cover_bytes
        inflater = zlib.decompressobj()
        inflated = inflater.decompress(data, limit + 1)
        if len(inflated) > limit:
            context.note(f"compressed ID3 frame inflating to more than {format_size(limit)} skipped")
            raise zlib.error("inflates above the limit")
        if not inflater.eof:
            raise zlib.error("incomplete or truncated stream")
        return inflated


# ---------------------------------------------------------------- APEv2

_original_ape_parse_tag: Callable[[APEv2, bytes, int], None] = APEv2.__dict__["_APEv2__parse_tag"]  # name-mangled


def _ape_parse_tag(self: APEv2, tag: bytes, count: int) -> None:
    try:
        return _original_ape_parse_tag(self, tag, count)
    except (APEError, UnicodeError, ValueError):
        context = current()
        if context is None:
            raise
        self.clear()
        _ape_items_leniently(self, tag, count, context)


def _ape_items_leniently(tags: APEv2, tag: bytes, count: int, context: ReadContext) -> None:
    position = 0
    for _ in range(count):
        if position + 8 > len(tag):
            break
        size, flags = struct.unpack_from("<II", tag, position)
        key_end = tag.find(b"\x00", position + 8, position + 8 + 256)
        if key_end < 0:
            context.note("unreadable APEv2 item skipped, and the items after it")
            return
        raw_key = tag[position + 8:key_end]
        value = tag[key_end + 1:key_end + 1 + size]
        position = key_end + 1 + size
        if len(value) != size:
            context.note("truncated APEv2 item skipped")
            return
        key = raw_key.decode("latin-1")
        kind = (flags & 6) >> 1
        if kind == 3 or not is_valid_apev2_key(key):
            context.note(f"APEv2 item {shown(key)} skipped: invalid name or type")
            continue
        if kind in (0, 2):  # text and external link: UTF-8
            text, repaired = decode_utf8_lenient(value)
            if repaired:
                context.note(f"invalid UTF-8 in APEv2 item {key}, read as Windows-1252")
                value = text.encode("utf-8", "surrogatepass")
        try:
            tags[key] = _get_value_type(kind)._new(value)
        except (APEError, UnicodeError, ValueError, TypeError):
            context.note(f"APEv2 item {key} skipped: unreadable value")


# ---------------------------------------------------------------- ASF

_original_unicode_parse: Callable[[ASFUnicodeAttribute, bytes], str] = ASFUnicodeAttribute.parse


def _unicode_parse(self: ASFUnicodeAttribute, data: bytes) -> str:
    try:
        return _original_unicode_parse(self, data)
    except ASFError:
        context = current()
        if context is None:
            raise
        context.note("invalid UTF-16 in a WMA attribute, replaced")
        return data.decode("utf-16-le", "replace").strip("\x00")


def _asf_name(raw: bytes, context: ReadContext) -> str:
    name = raw.decode("utf-16-le", "replace").strip("\x00")
    if "\ufffd" in name:
        context.note("invalid UTF-16 in a WMA attribute name, replaced")
    return name


def _asf_descriptors_leniently(obj: BaseObject, asf: ASF, data: bytes, context: ReadContext) -> None:
    """Extended Content Description, Metadata and Metadata Library objects, skipping what cannot be read."""
    BaseObject.parse(obj, asf, data)
    entries = asf._tags.setdefault(obj.GUID, [])
    extended = isinstance(obj, ExtendedContentDescriptionObject)
    if len(data) < 2:
        return
    count, = struct.unpack_from("<H", data)
    position = 2
    for _ in range(count):
        try:
            if extended:
                name_length, = struct.unpack_from("<H", data, position)
                name = _asf_name(data[position + 2:position + 2 + name_length], context)
                position += 2 + name_length
                value_type, value_length = struct.unpack_from("<HH", data, position)
                position += 4
                arguments = {}
            else:
                first, stream, name_length, value_type, value_length = struct.unpack_from("<HHHHI", data, position)
                position += 12
                name = _asf_name(data[position:position + name_length], context)
                position += name_length
                arguments = {"stream": stream}
                if isinstance(obj, MetadataLibraryObject):
                    arguments["language"] = first
                if value_type == 2:
                    arguments["dword"] = False
        except struct.error:
            context.note("truncated WMA attribute list")
            return
        value = data[position:position + value_length]
        position += value_length
        if len(value) != value_length:
            context.note("truncated WMA attribute list")
            return
        try:
            attribute = ASFBaseAttribute._get_type(value_type)(data=value, **arguments)
        except Exception:  # unknown type (KeyError), short number (struct.error), ...
            context.note(f"unreadable WMA attribute {shown(name)} skipped")
            continue
        entries.append((name, attribute))


def _asf_content_description_leniently(obj: ContentDescriptionObject, asf: ASF, data: bytes,
                                       context: ReadContext) -> None:
    BaseObject.parse(obj, asf, data)
    if len(data) < 10:
        return
    lengths = struct.unpack_from("<HHHHH", data)
    position = 10
    for name, length in zip(obj.NAMES, lengths, strict=True):  # five names, five lengths
        raw = data[position:position + length]
        position += length
        if length:
            text = raw.decode("utf-16-le", "replace").strip("\x00")
            if "\ufffd" in text:
                context.note(f"invalid UTF-16 in WMA {name}, replaced")
            asf._tags.setdefault(obj.GUID, []).append((name, ASFUnicodeAttribute(value=text)))


_Lenient = Callable[[Any, ASF, bytes, ReadContext], None]


def _asf_object_parse(original: Callable[[Any, ASF, bytes], None], lenient: _Lenient) -> Callable[..., None]:
    def parse(self: BaseObject, asf: ASF, data: bytes) -> None:
        before = len(asf._tags.get(self.GUID, ()))
        try:
            original(self, asf, data)
        except Exception:
            context = current()
            if context is None:
                raise
            del asf._tags.setdefault(self.GUID, [])[before:]  # what the failed parse had already added
            lenient(self, asf, data, context)
    return parse


# ---------------------------------------------------------------- installation


def _install() -> None:
    if getattr(EncodedTextSpec, _INSTALLED, False):
        return
    # (owner, attribute, replacement): set with setattr, as replacing mutagen's attributes is the point (mypy
    # rejects assigning to a method).
    patches: list[tuple[object, str, object]] = [
        (EncodedTextSpec, "read", _encoded_text_read),
        (EncodingSpec, "read", _encoding_read),
        (Frame, "_fromData", classmethod(_from_data)),
        (id3_frames, "zlib", _BoundedZlib()),
        (APEv2, "_APEv2__parse_tag", _ape_parse_tag),
        (ASFUnicodeAttribute, "parse", _unicode_parse),
        (ContentDescriptionObject, "parse",
         _asf_object_parse(ContentDescriptionObject.parse, _asf_content_description_leniently)),
    ]
    for descriptor_class in (ExtendedContentDescriptionObject, MetadataObject, MetadataLibraryObject):
        patches.append((descriptor_class, "parse", _asf_object_parse(descriptor_class.parse,
                                                                     _asf_descriptors_leniently)))
    patches.append((EncodedTextSpec, _INSTALLED, True))
    for owner, attribute, replacement in patches:
        setattr(owner, attribute, replacement)


_INSTALLED = "_soniquebay_lenient"


_install()
