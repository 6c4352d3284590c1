"""Turning raw tag values into the clean strings and numbers the catalogue stores.

Every function that changes or drops what a file says appends a short, human sentence to ``warnings`` so the
catalogue can show why a value differs from the file.
"""
from __future__ import annotations

import math
import re

# Positions (track, disc) above this are typos or garbage (e.g. a year typed into the track field).
MAX_POSITION = 9999
EARLIEST_YEAR = 1000
LATEST_YEAR = 2100

_POSITION = re.compile(r"^\s*(\d+)\s*(?:(?:/|of)\s*(\d*)\s*)?$", re.IGNORECASE)
_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_DECIBELS = re.compile(r"^\s*([+-]?\s*(?:\d+(?:[.,]\d*)?|[.,]\d+))\s*(?:db)?\s*$", re.IGNORECASE)
_SURROGATES = re.compile("[\ud800-\udfff]")
_TRUE_WORDS = frozenset({"1", "true", "yes", "y", "on", "-1"})
_FALSE_WORDS = frozenset({"0", "false", "no", "n", "off", ""})


def clean_text(value: str, key: str, warnings: list[str]) -> str | None:
    """Return ``value`` fit for PostgreSQL text, or None when nothing is left.

    PostgreSQL rejects NUL characters and lone surrogates (they cannot be encoded as UTF-8); U+FFFD is where the
    tag library already replaced invalid UTF-8, which is worth telling because the original text is lost.
    """
    if "\x00" in value:
        value = value.replace("\x00", "")
        warnings.append(f"NUL removed from {key}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = _SURROGATES.sub("\ufffd", value)
        warnings.append(f"invalid UTF-8 replaced in {key}")
    else:
        if "\ufffd" in value:
            warnings.append(f"invalid UTF-8 replaced in {key}")
    stripped = value.strip()
    if not stripped:
        return None
    if stripped != value:
        warnings.append(f"whitespace stripped from {key}")
    return stripped


def decode_text(raw: bytes) -> str:
    """Decode bytes that should be UTF-8 (MP4 free-form atoms); ``clean_text`` then warns about any U+FFFD."""
    return raw.decode("utf-8", "replace")


def parse_position(text: str, key: str, warnings: list[str]) -> tuple[int | None, int | None, bool]:
    """Parse a track or disc position: "3", "03", "3/12", "3 of 12", "3/".

    Returns (number, total, understood). Zero and absurd numbers become None with a warning; text that is not a
    position at all (e.g. vinyl side "A1") is not understood, so the caller keeps it in ``tags``.
    """
    match = _POSITION.match(text)
    if not match:
        warnings.append(f"{key} {text!r} is not a number, kept in tags")
        return None, None, False
    number = _bounded_position(int(match.group(1)), key, warnings)
    total = parse_total(match.group(2), key.replace("number", "total"), warnings) if match.group(2) else None
    return number, total, True


def parse_total(text: str | None, key: str, warnings: list[str]) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit():
        warnings.append(f"{key} {text!r} is not a number, ignored")
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
        warnings.append(f"no year in date {date!r}")
        return None
    year = int(match.group(1))
    if not EARLIEST_YEAR <= year <= LATEST_YEAR:
        warnings.append(f"year {year} ignored (outside {EARLIEST_YEAR}..{LATEST_YEAR})")
        return None
    return year


def parse_decibels(text: str, key: str, warnings: list[str]) -> float | None:
    """Parse a ReplayGain gain ("-6.54 dB", "+1,2 dB") or peak ("0.988525") as a float."""
    match = _DECIBELS.match(text)
    if not match:
        warnings.append(f"{key} {text!r} is not a number, kept in tags")
        return None
    number = float(match.group(1).replace(" ", "").replace(",", "."))
    if not math.isfinite(number):
        warnings.append(f"{key} {text!r} is not finite, kept in tags")
        return None
    return number


def parse_flag(text: str, key: str, warnings: list[str]) -> bool | None:
    """A boolean tag such as iTunes' compilation flag; None when it is neither yes nor no."""
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    warnings.append(f"{key} {text!r} is not a yes/no value, kept in tags")
    return None


def positive_number(value, key: str, warnings: list[str], *, warn_negative: bool = True):
    """Stream numbers: zero means "unknown" to mutagen; negative or non-finite values are nonsense."""
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
    return value
