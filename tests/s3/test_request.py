"""The request head: the query split and percent-decoded exactly once, as urllib's strict unquote would."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import S3Error
from proxy.s3.request import RequestHead, _strict_unquote, parse_query

# Escapes valid and not (%zz, a lone %, truncated UTF-8), with literal ASCII and non-ASCII text around.
_pieces = st.lists(
    st.sampled_from(
        ["%", "%2F", "%2f", "%C3%A9", "%C3", "%A9", "%E2%82%AC", "%zz", "%4", "a", "+", "é", "日", " "]
    ),
    max_size=12,
).map("".join)


def _reference(text: str) -> str | type[UnicodeDecodeError]:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        return UnicodeDecodeError


@settings(max_examples=400, deadline=None)
@given(st.one_of(_pieces, st.text(max_size=30)))
def test_strict_unquote_is_urllibs_strict_unquote(text: str) -> None:
    expected = _reference(text)
    if expected is UnicodeDecodeError:
        with pytest.raises(UnicodeDecodeError):
            _strict_unquote(text)
    else:
        assert _strict_unquote(text) == expected


def test_query_is_decoded_once_in_order_with_bare_names_and_literal_plus() -> None:
    head = RequestHead.build(
        "get", "/b/k?uploads&prefix=a%2Fb%20c&x=1+2&&double=%252F&e=%C3%A9", [("Host", "h")]
    )
    assert head.method == "GET"
    assert (head.raw_path, head.host) == ("/b/k", "h")
    assert head.query == (
        ("uploads", ""),
        ("prefix", "a/b c"),
        ("x", "1+2"),
        ("double", "%2F"),
        ("e", "é"),
    )
    assert head.query_value("prefix") == "a/b c" and head.query_value("nope") is None
    assert head.has_query("uploads") and not head.has_query("Uploads")


@pytest.mark.parametrize("raw_query", ["a=%FF", "a=%C3", "%80=1"])
def test_query_that_is_not_utf8_is_refused(raw_query: str) -> None:
    with pytest.raises(S3Error) as err:
        parse_query(raw_query)
    assert err.value.code == "InvalidArgument"
