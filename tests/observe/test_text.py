"""Text from the wire made writable, and the audit body's encoder against the standard library's."""

from __future__ import annotations

import json
import math

import orjson
from hypothesis import given
from hypothesis import strategies as st

from proxy.audit.records import canonical_json
from proxy.audit.text import clean_text, writable

# What audit records hold: text (any Unicode a request can carry), integers, booleans, None, nesting.
_ANY_TEXT = st.text(st.characters() | st.characters(categories=["Cs"]))  # lone surrogates too
_SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _ANY_TEXT
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def test_undecodable_header_bytes_become_replacement_characters() -> None:
    received = b"probe/\xff\xfe-1".decode("utf-8", "surrogateescape")  # as aiohttp hands it over
    assert clean_text(received) == "probe/\ufffd\ufffd-1"
    assert clean_text("grüße/模型") == "grüße/模型"
    assert clean_text("plain") == "plain"


def test_writable_cleans_keys_and_values_at_any_depth_and_drops_non_finite_numbers() -> None:
    bad = "\udcff"
    value = {bad: [bad, {"k": bad}], "n": math.nan, "i": -math.inf, "ok": 1.5}
    assert writable(value) == {"\ufffd": ["\ufffd", {"k": "\ufffd"}], "n": None, "i": None, "ok": 1.5}
    orjson.dumps(writable(value))  # encodable now


@given(JSON_VALUES.map(lambda v: {"event": v}))
def test_the_fast_encoder_renders_exactly_what_the_standard_library_does(value: dict[str, object]) -> None:
    try:
        expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        expected.encode()
    except UnicodeEncodeError:  # lone surrogates: the standard library renders what cannot be stored
        expected = json.dumps(writable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected


def test_a_record_with_text_no_encoder_accepts_is_still_rendered() -> None:
    body = canonical_json({"user_agent": "x\udcff", "huge": 2**70})
    assert json.loads(body) == {"user_agent": "x\ufffd", "huge": 2**70}
