"""File names as the catalogue stores them, and the library-roots rule."""
from __future__ import annotations

import os

# The extensions the extractor reads, so the scanner never skips a file the reader could catalogue.
from worker_app.metadata.formats import AUDIO_EXTENSIONS


class PathRefused(Exception):
    """A path that may not be scanned (outside the configured library roots, or missing)."""


def is_audio_name(name: str) -> bool:
    # "._song.mp3" files are macOS AppleDouble sidecars, never audio.
    return not name.startswith("._") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def db_path(path: str) -> tuple[str, bytes | None]:
    """The text the catalogue keys a file by, and its raw bytes when the name is not valid UTF-8.

    PostgreSQL text must be valid UTF-8, so such a name is stored with \\xNN escapes for people and searches,
    and losslessly in ``tracks.path_bytes``."""
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), raw


def display_path(path: str) -> str:
    return db_path(path)[0]


def is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve_scan_path(path: str, library_roots: tuple[str, ...]) -> tuple[str, str]:
    """The real path to scan and the library root that holds it; refuses anything outside the roots."""
    if not library_roots:
        raise PathRefused("no library roots are configured (SONIQUEBAY_LIBRARY_ROOTS): nothing may be scanned")
    real = os.path.realpath(path)
    if not os.path.exists(real):
        raise PathRefused(f"{display_path(path)} does not exist")
    for root in library_roots:
        if is_within(real, root):
            return real, root
    raise PathRefused(
        f"{display_path(path)} is outside the library roots ({', '.join(library_roots)}): refusing to scan it"
    )
