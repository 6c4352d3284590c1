"""worker_app.metadata.fastpaths.decode_terminated must answer exactly as mutagen's own: the same text and rest,
or a ValueError where mutagen raises one (mutagen's callers catch ValueError and try the next fix-up)."""
from __future__ import annotations

import codecs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker_app.metadata import fastpaths

ENCODINGS = ["utf16", "utf-16", "utf_16_be", "utf-16-le", "latin1", "utf8"]


def _outcome(function, data: bytes, encoding: str, strict: bool):
    try:
        return "ok", function(data, encoding, strict)
    except ValueError:
        return ("error",)


# Bytes that make UTF-16 interesting: NULs, byte order marks, surrogate halves.
_interesting = st.binary(max_size=24) | st.lists(
    st.sampled_from([b"\x00", b"\xff", b"\xfe", b"\xd8", b"\xdc", b"A", b" ", b"\xe9"]), max_size=24
).map(b"".join)


@settings(max_examples=3000, deadline=None)
@given(data=_interesting, encoding=st.sampled_from(ENCODINGS), strict=st.booleans())
def test_same_answer_as_mutagen_for_any_bytes(data, encoding, strict):
    assert _outcome(fastpaths.decode_terminated, data, encoding, strict) == \
        _outcome(fastpaths._original_decode_terminated, data, encoding, strict)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("text", ["", "a", "Café — 日本語", "😀 emoji", "two\x01values"])
def test_terminated_text_and_rest(encoding, text):
    data = codecs.encode(text, encoding) + b"\x00\x00" + b"rest"
    if encoding == "utf-16" and not text:
        data = codecs.BOM_UTF16_LE + b"\x00\x00rest"
    expected = _outcome(fastpaths._original_decode_terminated, data, encoding, True)
    assert _outcome(fastpaths.decode_terminated, data, encoding, True) == expected
    assert expected[0] == "ok" and expected[1] == (text, b"rest")


def test_installed_where_mutagen_looks_it_up():
    import mutagen._util
    import mutagen.id3._specs

    import worker_app.metadata.reader  # noqa: F401  (installs on import)

    assert mutagen.id3._specs.decode_terminated is fastpaths.decode_terminated
    assert mutagen._util.decode_terminated is fastpaths.decode_terminated
