"""JSON text between the workers and PostgreSQL: a unit's staged records and payload, the insert's rows.

The stdlib ``json`` encoder and decoder were 22% of the batch worker's CPU and 12% of the insert worker's
(bench/README.md): each unit's records go through JSON five times on their way to the catalogue. orjson does the
same work in a third of the time. What it refuses to write (a lone surrogate: a file name that is not UTF-8 travels
escaped as one; an integer beyond 64 bits; a key that is not a string) or to read (NaN, a lone surrogate escape)
goes to ``json``, which writes and reads it as before. Three differences are left: non-ASCII characters are written
as they are, not as ``\\u`` escapes (PostgreSQL and both decoders read the two spellings as the same value); NaN and
the infinities are written as null (``json`` wrote ``NaN``, which jsonb refuses, failing the whole unit's
statement); an integer beyond 64 bits reads as a float (no column of the catalogue takes either).
"""
from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value)


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except ValueError:  # orjson.JSONDecodeError
        return json.loads(text)
