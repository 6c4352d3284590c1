"""Turning raw tag values into the clean strings and numbers the catalogue stores.

Every function that changes or drops what a file says appends a short, human sentence to ``warnings`` so the
catalogue can show why a value differs from the file.

Size limits: the catalogue indexes artist names and album titles (B-tree keys hold ~2.7 kB) and builds a tsvector
from titles (1 MB at most), and records travel through Redis in batches; so a value that becomes a record field is
cut to ``MAX_FIELD_BYTES``, any other tag value to ``MAX_TAG_VALUE_BYTES``, and ``tags`` as a whole keeps at most
``MAX_TAGS_BYTES``. Real tags are far below all three.
"""
from __future__ import annotations

import codecs
import math
import re
from typing import Any

# Positions (track, disc) above this are typos or garbage (e.g. a year typed into the track field).
MAX_POSITION = 9999
EARLIEST_YEAR = 1000
LATEST_YEAR = 2100
MAX_FIELD_BYTES = 1024  # title, album, names, genres, dates, numbers: one line of text
MAX_TAG_VALUE_BYTES = 64 * 1024  # any other value (lyrics are the long ones: a few kB)
MAX_TAGS_BYTES = 1024 * 1024  # all of ``TrackRecord.tags`` together
MAX_KEY_BYTES = 255
MAX_WARNINGS = 100
MAX_GAIN_DB = 100.0  # ReplayGain adjustments are a few dB; +-100 dB is nonsense already
MAX_PEAK = 100.0  # linear amplitude: above 1.0 happens (float sources), not 100 times above

_POSITION = re.compile(r"^\s*(\d+)\s*(?:(?:/|of)\s*(\d*)\s*)?$", re.IGNORECASE)
_POSITION_WITH_JUNK_TOTAL = re.compile(r"^\s*(\d+)\s*(?:/|of)\s*(.*?)\s*$", re.IGNORECASE | re.DOTALL)
_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_DECIBELS = re.compile(r"^\s*([+-]?\s*(?:\d+(?:[.,]\d*)?|[.,]\d+))\s*(?:db)?\s*$", re.IGNORECASE)
_SURROGATES = re.compile("[\ud800-\udfff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# NUL or a lone surrogate as JSON escapes (json.dumps writes every non-ASCII character so; db/json_text.py falls
# back to it for a lone surrogate, and writes NUL as \u0000 too): a high surrogate not followed by a low one, a low
# one not preceded by a high one (json.loads makes a pair one character, an emoji).
# It starts with the literal \u so that the scan is a fast search for it: 0.15 ms over a unit's records, where the
# same alternatives each with its own \u took 6.
_UNSTORABLE_ESCAPED = re.compile(r"\\u(?:0000|d[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2}\\u)d[c-f])",
                                 re.IGNORECASE)
_TRUE_WORDS = frozenset({"1", "true", "yes", "y", "on", "-1"})
_FALSE_WORDS = frozenset({"0", "false", "no", "n", "off", ""})
_SHOWN_CHARACTERS = 60  # how much of a bad value a warning quotes


def shown(text: str) -> str:
    """A bad value as a warning quotes it: repr (so NUL and control characters are visible), and short."""
    if len(text) > _SHOWN_CHARACTERS:
        return repr(text[:_SHOWN_CHARACTERS]) + f"... ({len(text)} characters)"
    return repr(text)


def format_size(size: int) -> str:
    """16777216 -> "16 MiB", 65536 -> "64 KiB", 1000 -> "1000 bytes"."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def storable(value: Any, warnings: list[str] | None = None, field: str = "value") -> Any:
    """The last guard before a value reaches PostgreSQL, which takes neither NUL nor lone surrogates: in a string, or
    in every string of a list or dict (keys too). NUL is dropped; a lone surrogate becomes U+FFFD (a character was
    lost there). With ``warnings``, each changed string is told there under ``field``."""
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            if warnings is not None:
                warnings.append(f"{field}: NUL removed or invalid characters replaced")
            return _SURROGATES.sub("\ufffd", value.replace("\x00", ""))
        return value
    if isinstance(value, list):
        return [storable(item, warnings, field) for item in value]
    if isinstance(value, dict):
        cleaned = {}
        for key, item in value.items():
            key = storable(key, warnings, field)  # before it names the field of a warning
            cleaned[key] = storable(item, warnings, f"{field}.{key}")
        return cleaned
    return value


def json_may_hold_unstorable(text: str) -> bool:
    """False when no value that ``json.loads`` reads from ``text`` is one that ``storable`` would change: nothing to
    clean. A scan of the text: 0.4 ms for a unit's records, where ``storable``'s walk through them takes 5."""
    return ("\x00" in text
            # an escaped backslash can make the text after it look like an escape (or not): maybe, then
            or "\\\\" in text
            # a surrogate written as it is (UTF-8 has none): encoding it fails. 0.1 ms for a unit's records, where
            # a search for one took 0.6 (orjson writes every accent and emoji as it is)
            or (not text.isascii() and not _encodes(text))
            or _UNSTORABLE_ESCAPED.search(text) is not None)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def cut_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 form fits in ``max_bytes`` (never half a character)."""
    if len(text) * 4 <= max_bytes:
        return text
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", "ignore")


def clean_text(value: str, key: str, warnings: list[str], max_bytes: int | None = None) -> str | None:
    """Return ``value`` fit for PostgreSQL text, or None when nothing is left.

    PostgreSQL rejects NUL characters and lone surrogates (they cannot be encoded as UTF-8); U+FFFD is where the
    tag library already replaced invalid UTF-8, which is worth telling because the original text is lost.
    """
    if "\x00" in value:
        value = value.replace("\x00", "")
        warnings.append(f"NUL removed from {key}")
    if not _encodes(value):
        value = _SURROGATES.sub("\ufffd", value)
        warnings.append(f"invalid UTF-8 replaced in {key}")
    elif "\ufffd" in value:
        warnings.append(f"invalid UTF-8 replaced in {key}")
    stripped = value.strip()
    if not stripped:
        return None
    if stripped != value:
        warnings.append(f"whitespace stripped from {key}")
    if max_bytes is not None and len(stripped) * 4 > max_bytes:
        size = len(stripped.encode("utf-8"))
        if size > max_bytes:
            stripped = cut_utf8(stripped, max_bytes).rstrip()
            warnings.append(f"{key} cut to {format_size(max_bytes)} (was {size} bytes)")
    return stripped


def clean_key(key: str, warnings: list[str]) -> str:
    """A tag name fit for a JSON key in PostgreSQL: no NUL, no lone surrogate, not empty, not endless."""
    cleaned = _SURROGATES.sub("\ufffd", key.replace("\x00", "")).strip()
    if len(cleaned) * 4 > MAX_KEY_BYTES:
        cleaned = cut_utf8(cleaned, MAX_KEY_BYTES)
    if cleaned != key:
        warnings.append(f"tag name {shown(key)} cleaned")
    return cleaned or "unknown"


# ---------------------------------------------------------------- repairing text encodings


def _windows_1252_fallback(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: bytes that are not UTF-8 are read as Windows-1252 (Latin-1 where it has a hole).

    This is what taggers that ignore the declared encoding actually wrote: "Caf\\xe9" in a frame that says UTF-8.
    A decoding handler only: encoding errors are raised as they are.
    """
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start:error.end]
    return "".join(bytes([byte]).decode("cp1252", "strict") if byte not in _CP1252_HOLES else chr(byte)
                   for byte in bad), error.end


_CP1252_HOLES = frozenset({0x81, 0x8D, 0x8F, 0x90, 0x9D})
WINDOWS_1252_FALLBACK = "soniquebay-windows-1252"
codecs.register_error(WINDOWS_1252_FALLBACK, _windows_1252_fallback)


def decode_utf8_lenient(raw: bytes) -> tuple[str, bool]:
    """UTF-8, with the bytes that are not UTF-8 read as Windows-1252; True when there were such bytes."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", WINDOWS_1252_FALLBACK), True


def repair_latin1_mojibake(text: str) -> str | None:
    """UTF-8 bytes that a reader took for Latin-1 ("CafÃ©"): the UTF-8 text, or None when ``text`` is not that.

    Real Latin-1 text is practically never valid multi-byte UTF-8 (that takes an "Ã"-like letter followed by a
    C1 control or symbol), so a successful strict decode is reliable.
    """
    if text.isascii():
        return None
    try:
        repaired = text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None
    return repaired if repaired != text else None


def repair_utf16_byte_order(text: str) -> str | None:
    """UTF-16 without a byte order mark is read little-endian (what Windows taggers write); big-endian text read
    that way is garbage ("䌀愀昀"). Returns the byte-swapped reading when ``text`` has that garbage's signature,
    else None.

    The signature: text in one alphabet (Latin, Greek, Cyrillic, Hebrew, Arabic, Indic, Thai... all below U+3000)
    has its code points' high bytes nearly all equal, which byte-swapping turns into nearly all equal *low* bytes,
    below 0x30. Real text has varied low bytes. (Byte-swapped CJK has no such signature and is left as it is.)
    """
    if len(text) < 2 or max(text) < "\u0100":
        return None
    low_bytes = [ord(character) & 0xFF for character in text]
    common = max(set(low_bytes), key=low_bytes.count)
    if common >= 0x30 or low_bytes.count(common) < 0.8 * len(low_bytes):
        return None
    swapped = text.encode("utf-16-le", "surrogatepass").decode("utf-16-be", "replace")
    return swapped if swapped.isprintable() else None


# ---------------------------------------------------------------- numbers


def parse_position(text: str, key: str, warnings: list[str]) -> tuple[int | None, int | None, bool]:
    """Parse a track or disc position: "3", "03", "3/12", "3 of 12", "3/", and "3/abc" (total ignored).

    Returns (number, total, understood). Zero and absurd numbers become None with a warning; text that is not a
    position at all (e.g. vinyl side "A1") is not understood, so the caller keeps it in ``tags``.
    """
    total_key = key.replace("number", "total")
    match = _POSITION.match(text)
    if not match:
        junk_total = _POSITION_WITH_JUNK_TOTAL.match(text)
        if junk_total is None:
            warnings.append(f"{key} {shown(text)} is not a number, kept in tags")
            return None, None, False
        warnings.append(f"{total_key} {shown(junk_total.group(2))} is not a number, ignored")
        return _bounded_position(int(junk_total.group(1)), key, warnings), None, True
    number = _bounded_position(int(match.group(1)), key, warnings)
    total = parse_total(match.group(2), total_key, warnings) if match.group(2) else None
    return number, total, True


def parse_total(text: str | None, key: str, warnings: list[str]) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isdecimal():  # not isdigit(): "²" is a digit int() refuses
        warnings.append(f"{key} {shown(text)} is not a number, ignored")
        return None
    total = int(text)
    if total == 0:
        return None  # iTunes and others write 0 for "unknown": nothing to warn about
    return _bounded_position(total, key, warnings)


def _bounded_position(number: int, key: str, warnings: list[str]) -> int | None:
    if number == 0:
        warnings.append(f"{key} 0 ignored")
        return None
    if number > MAX_POSITION:
        warnings.append(f"{key} {number} ignored (above {MAX_POSITION})")
        return None
    return number


def parse_year(date: str, warnings: list[str]) -> int | None:
    match = _YEAR.search(date)
    if not match:
        warnings.append(f"no year in date {shown(date)}")
        return None
    year = int(match.group(1))
    if not EARLIEST_YEAR <= year <= LATEST_YEAR:
        warnings.append(f"year {year} ignored (outside {EARLIEST_YEAR}..{LATEST_YEAR})")
        return None
    return year


def parse_decibels(text: str, key: str, warnings: list[str]) -> float | None:
    """Parse a ReplayGain gain ("-6.54 dB", "+1,2 dB") or peak ("0.988525") as a float.

    Gains beyond +-100 dB and peaks that are negative or above 100 are nonsense and stay in ``tags``.
    """
    match = _DECIBELS.match(text)
    if not match:
        warnings.append(f"{key} {shown(text)} is not a number, kept in tags")
        return None
    number = float(match.group(1).replace(" ", "").replace(",", "."))
    if not math.isfinite(number):
        warnings.append(f"{key} {shown(text)} is not finite, kept in tags")
        return None
    low, high = (0.0, MAX_PEAK) if key.endswith("_peak") else (-MAX_GAIN_DB, MAX_GAIN_DB)
    if not low <= number <= high:
        warnings.append(f"{key} {shown(text)} is out of range ({low:g}..{high:g}), kept in tags")
        return None
    return number


def parse_flag(text: str, key: str, warnings: list[str]) -> bool | None:
    """A boolean tag such as iTunes' compilation flag; None when it is neither yes nor no."""
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    warnings.append(f"{key} {shown(text)} is not a yes/no value, kept in tags")
    return None


_MBID = re.compile(r"^[0-9A-Za-z-]{1,36}$")


def parse_mbid(text: str, key: str, warnings: list[str]) -> str | None:
    """A MusicBrainz identifier: a UUID, stored in 36 characters. Anything that cannot be one (longer, or with
    other characters than letters, digits and "-") is None with a warning, and stays in tags."""
    candidate = text.strip()
    if _MBID.match(candidate):
        return candidate
    warnings.append(f"{key} {shown(text)} is not a MusicBrainz id, kept in tags")
    return None


def positive_number(value: int | float | None, key: str, warnings: list[str], *, warn_negative: bool = True,
                    maximum: int | float | None = None, minimum: int | float | None = None) -> int | float | None:
    """Stream numbers: zero means "unknown" to mutagen; negative, non-finite or absurd values are nonsense."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        warnings.append(f"{key} {value} ignored")
        return None
    if value < 0:
        if warn_negative:
            warnings.append(f"negative {key} ignored")
        return None
    if value == 0:
        return None
    if maximum is not None and value > maximum:
        warnings.append(f"{key} {value} ignored (above {maximum})")
        return None
    if minimum is not None and value < minimum:
        warnings.append(f"{key} {value} ignored (below {minimum})")
        return None
    return value


def finish_warnings(warnings: list[str]) -> list[str]:
    """Each warning once, in order, at most MAX_WARNINGS of them; each one storable."""
    unique = list(dict.fromkeys(storable(warning) for warning in warnings))
    if len(unique) > MAX_WARNINGS:
        hidden = len(unique) - (MAX_WARNINGS - 1)
        unique = unique[:MAX_WARNINGS - 1] + [f"{hidden} more warnings not kept"]
    return unique
