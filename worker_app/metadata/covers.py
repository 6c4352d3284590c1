"""Cover images: the embedded picture of a track and the image file of its folder."""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass

from mutagen.mp4 import MP4Cover
from PIL import Image

from worker_app.metadata.cleaning import format_size, storable
from worker_app.metadata.record import CoverImage, UnreadableFileError

_MAX_MIME_CHARACTERS = 100
_IMAGE_HEADER_BYTES = 1024 * 1024
FRONT_COVER = 3  # the ID3/FLAC/ASF picture type "Cover (front)"

# Earlier names and extensions win when a folder has several candidates.
FOLDER_COVER_STEMS = ("cover", "folder", "front")
FOLDER_COVER_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif")

# Image MIME types by file name extension: folder images, and APEv2 cover items ("<file name>\0<image bytes>").
MIME_BY_EXTENSION = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp",
                     "gif": "image/gif", "bmp": "image/bmp"}
# APEv2 names its picture items by type (foobar2000, Mp3tag, Picard); others are type 0, "other".
APE_PICTURE_TYPES = {"cover art (front)": FRONT_COVER, "cover art (back)": 4}
MP4_COVER_MIME = {MP4Cover.FORMAT_JPEG: "image/jpeg", MP4Cover.FORMAT_PNG: "image/png"}


def ape_cover_item(item_name: str, value_head: bytes) -> tuple[int, str | None, int]:
    """An APEv2 picture item, "<file name>\0<image bytes>" by convention, from its name and the start of its value:
    (where the image starts in the value, its MIME type by the file name's extension, its picture type)."""
    picture_type = APE_PICTURE_TYPES.get(item_name.lower(), 0)
    file_name, separator, _ = value_head.partition(b"\x00")
    if not separator:
        return 0, None, picture_type
    suffix = file_name.decode("latin-1").rpartition(".")[2].lower()
    return len(file_name) + 1, MIME_BY_EXTENSION.get(suffix), picture_type


@dataclass
class EmbeddedPicture:
    data: bytes | None  # None: a picture above the size limit, skipped without being read
    mime: str | None
    picture_type: int | None  # None where the format has no types (MP4): then it counts as a front cover
    size: int = -1  # bytes of image data; -1: len(data)

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.data) if self.data is not None else 0


def choose_cover(pictures: list[EmbeddedPicture]) -> EmbeddedPicture | None:
    """The front cover, else the first picture (skipped ones too: a front cover too big to keep means no cover,
    not the back cover in its place)."""
    for picture in pictures:
        if picture.picture_type in (FRONT_COVER, None):
            return picture
    return pictures[0] if pictures else None


@dataclass(frozen=True)
class _Measured:
    width: int | None
    height: int | None
    mime: str | None  # the format Pillow found, None when it found none
    problem: str | None  # what to warn about the picture, after its source


# Pictures measured by this process, by sha256: an album's tracks carry the same picture, and Pillow's reading of
# its header costs more than hashing it. Bounded: emptied when full.
_MEASURED: dict[str, _Measured] = {}
_MEASURED_MAX = 1024


def cover_from_bytes(data: bytes, declared_mime: str | None, source: str, warnings: list[str]) -> CoverImage:
    """Describe an image without decoding it: Pillow's ``open`` reads only the header.

    Bytes that are not an image still make a CoverImage (the file does carry them) without dimensions.
    """
    sha256 = hashlib.sha256(data).hexdigest()
    measured = _MEASURED.get(sha256)
    if measured is None:
        if len(_MEASURED) >= _MEASURED_MAX:
            _MEASURED.clear()
        measured = _MEASURED[sha256] = _measure(data)
    if measured.problem is not None:
        warnings.append(f"{source} cover {measured.problem}")
    declared = storable(declared_mime or "")[:_MAX_MIME_CHARACTERS].strip() or "application/octet-stream"
    return CoverImage(
        sha256=sha256,
        mime=measured.mime or declared,
        width=measured.width,
        height=measured.height,
        size_bytes=len(data),
        source=source,
        data=data,
    )


def _measure(data: bytes) -> _Measured:
    # The header is at the start (JPEG: its size comes after the APPn segments, a few kB to a few hundred); Pillow
    # walks junk byte by byte (4 s for 20 MB of zeros after a JPEG marker), so it gets the first MiB only.
    head = data if len(data) <= _IMAGE_HEADER_BYTES else memoryview(data)[:_IMAGE_HEADER_BYTES]
    try:
        with Image.open(io.BytesIO(head)) as image:
            width, height = image.size
            return _Measured(width, height, Image.MIME.get(image.format or ""), None)
    except Image.DecompressionBombError:
        return _Measured(None, None, None, "is too large to measure")
    except Exception:  # Pillow raises many types for junk (UnidentifiedImageError, SyntaxError, ...)
        return _Measured(None, None, None, "is not a readable image")


def find_folder_cover(names: list[str]) -> str | None:
    """Pick the folder image among a directory's entry names (case-insensitive), or None.

    cover.* beats folder.* beats front.*; then jpg, jpeg, png, webp, gif; then the name itself, so the choice is
    the same whatever order the directory listing came in.
    """
    best: tuple[int, int, str] | None = None
    for name in names:
        stem, dot, extension = name.lower().rpartition(".")
        if not dot or stem not in FOLDER_COVER_STEMS or extension not in FOLDER_COVER_EXTENSIONS:
            continue
        rank = (FOLDER_COVER_STEMS.index(stem), FOLDER_COVER_EXTENSIONS.index(extension), name)
        if best is None or rank < best:
            best = rank
    return best[2] if best else None


def read_folder_cover(path: str | os.PathLike[str], max_bytes: int | None = None) -> CoverImage:
    """Read a folder image file; UnreadableFileError when it cannot be read or is above ``max_bytes`` (default:
    the ``max_cover_bytes`` setting)."""
    if max_bytes is None:
        from worker_app.metadata.reader import current_limits

        max_bytes = current_limits().max_cover_bytes
    try:
        with open(path, "rb") as image_file:
            size = os.fstat(image_file.fileno()).st_size
            if size > max_bytes:
                raise UnreadableFileError(folder_cover_too_big(size, max_bytes))
            data = image_file.read(max_bytes + 1)  # the file may have grown since fstat
    except FileNotFoundError:
        raise UnreadableFileError("file vanished before it could be read") from None
    except PermissionError:
        raise UnreadableFileError("permission denied") from None
    except IsADirectoryError:
        raise UnreadableFileError("not a regular file") from None
    except OSError as error:
        raise UnreadableFileError(f"I/O error: {error.strerror or error}") from None
    if not data:
        raise UnreadableFileError("zero-byte file")
    if len(data) > max_bytes:
        raise UnreadableFileError(folder_cover_too_big(len(data), max_bytes))
    extension = os.fsdecode(path).rpartition(".")[2].lower()
    warnings: list[str] = []
    return cover_from_bytes(data, MIME_BY_EXTENSION.get(extension), "folder", warnings)


def folder_cover_too_big(size: int, limit: int) -> str:
    return f"folder image of {size} bytes skipped: above the {format_size(limit)} limit"
