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


def check_task_path(path: object, library_roots: tuple[str, ...],
                    resolved_folders: dict[str, str] | None = None) -> str:
    """The library root that holds ``path``, a file or folder name a task's message gives it; raises PathRefused.

    Any client of the broker can send a message, so a task checks what it is told before it opens anything. The
    scanner only ever sends absolute, normalised names under a root (roots are real paths, see settings), so
    anything else is forged and refused outright: a relative name, a ``.`` or ``..`` component, a NUL byte, a
    name that is not a string. Names that are not UTF-8 travel as surrogate-escaped text (``os.fsdecode``) or as
    the raw bytes the catalogue keeps (``tracks.path_bytes``); text that no file name can produce is refused.
    The name must then lie under a root both as written and once every symbolic link in it is resolved: a link
    inside the library that points outside every root is refused (one into another root is not). The file need not
    exist: a cleanup checks the names of files that are gone. ``resolved_folders`` (a dict the caller keeps for the
    names of one message) saves resolving the same folder again for each of its files.

    Checked, then opened by name: a process that can swap a checked folder for a link between the two could still
    win the race; that needs write access to the library, which the workers' hosts do not give (roles/worker_app
    checks the library is read-only to them)."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str) or not path:
        raise PathRefused(f"not a file name: {type(path).__name__} {str(path)[:80]!r}")
    shown = printable_name(path)
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        raise PathRefused(f"{path!r} is not a name any file can have") from None
    if "\x00" in path:
        raise PathRefused(f"{shown} holds a NUL byte")
    if not os.path.isabs(path) or os.path.normpath(path) != path:
        raise PathRefused(f"{shown} is not an absolute, normalised path (no '.' or '..' components)")
    if not library_roots:
        raise PathRefused(f"{shown}: no library roots are configured (SONIQUEBAY_LIBRARY_ROOTS)")
    root = next((root for root in library_roots if is_within(path, root)), None)
    if root is None:
        raise PathRefused(f"{shown} is outside the library roots ({', '.join(library_roots)})")
    real = _resolved(path, resolved_folders) if resolved_folders is not None else os.path.realpath(path)
    if not any(is_within(real, candidate) for candidate in library_roots):
        raise PathRefused(f"{shown} leads outside the library roots (it resolves to {display_path(real)})")
    return root


def _resolved(path: str, resolved_folders: dict[str, str]) -> str:
    """``os.path.realpath(path)`` for an absolute, normalised name, each folder resolved once: the folder's real
    path, then the last component resolved only when it is a link itself (one lstat, where realpath takes one per
    component of the name)."""
    folder, name = os.path.split(path)
    real_folder = resolved_folders.get(folder)
    if real_folder is None:
        real_folder = resolved_folders[folder] = os.path.realpath(folder)
    real = os.path.join(real_folder, name)
    return os.path.realpath(real) if os.path.islink(real) else real


def printable_name(path: object) -> str:
    """``path`` as text a log line and the catalogue's failure records can hold, whatever a message sent: non-UTF-8
    bytes and lone surrogates as \\xNN or \\udcNN escapes, NUL as \\x00, anything else as its repr."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str):
        return repr(path)[:200]
    try:
        text = display_path(path)
    except UnicodeEncodeError:
        text = path.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")
