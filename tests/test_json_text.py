"""db/json_text.py: orjson where it can, json where it cannot, and the same values either way."""
import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from worker_app.db import json_text

# Text as file names and tags give it: lone surrogates (a name that is not UTF-8), NUL, emoji, escapes' own characters.
_TEXT = st.lists(st.sampled_from(["a", "\u00e9", "\x00", "\ud800", "\udce9", "\U0001f600", "\\", '"', "u", "\n"])
                 | st.characters(exclude_categories=()), max_size=8).map("".join)
_INT64 = st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1)
_VALUES = st.recursive(
    _TEXT | _INT64 | st.floats(allow_nan=False, allow_infinity=False) | st.booleans() | st.none(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12)


@settings(max_examples=500)
@given(_VALUES)
def test_values_read_back_as_json_gives_them(value):
    expected = json.loads(json.dumps(value))
    assert json_text.loads(json_text.dumps(value)) == expected
    # rows staged before orjson (json's spelling) read the same
    assert json_text.loads(json.dumps(value)) == expected
    assert json.loads(json_text.dumps(value)) == expected


def test_what_orjson_refuses_goes_to_json():
    # a file name that is not UTF-8: orjson refuses to write the lone surrogate, json escapes it (and reads it back)
    name = "/music/caf\udce9.mp3"
    assert json_text.dumps({"path": name}) == json.dumps({"path": name})
    assert json_text.loads(json_text.dumps({"path": name})) == {"path": name}
    assert json_text.dumps({1: 2}) == '{"1": 2}'  # a key that is not a string, as json spells it
    assert json_text.dumps(2 ** 70) == str(2 ** 70)
    assert json_text.loads("NaN") != json_text.loads("NaN")  # only json reads NaN


def test_non_ascii_is_written_as_it_is_and_nan_as_null():
    assert json_text.dumps({"title": "Café 東京 \U0001f3a4"}) == '{"title":"Café 東京 \U0001f3a4"}'
    assert json_text.dumps([math.nan, math.inf]) == "[null,null]"
