"""The return address after sign-in (`safe_next`, pure): only a path a browser resolves to this origin.

The reference below follows the WHATWG URL parser's steps that matter for a relative reference, as
Chromium applies them to a Location header; a property test holds safe_next to it.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.control.webcore import BadRequest, safe_next

BASE = "http://gateway.internal:9001/signin"
_C0_OR_SPACE = "".join(chr(c) for c in range(0x21))


def browser_origin(location: str) -> str:
    """Where a browser goes for `location` relative to BASE: scheme and host (WHATWG URL, 4.4)."""
    text = location.strip(_C0_OR_SPACE)  # leading/trailing C0 controls and spaces are dropped
    text = re.sub(r"[\t\n\r]", "", text)  # tabs and newlines are removed anywhere
    text = text.replace("\\", "/")  # special schemes read a backslash as a slash
    parts = urlsplit(urljoin(BASE, text))
    return f"{parts.scheme}://{parts.netloc}"


def outcome(value: str) -> str | None:
    try:
        return safe_next(value)
    except BadRequest:
        return None


@pytest.mark.parametrize(
    "value", ["/inbox", "/request?resource=s3://b/models/a.bin&action=read", "/access#r_1", "/a/../b"]
)
def test_local_paths_are_kept_as_given(value: str) -> None:
    assert safe_next(value) == value


@pytest.mark.parametrize("value", ["", None])
def test_no_return_address_means_the_home_page(value: str | None) -> None:
    assert safe_next(value) == "/"


@pytest.mark.parametrize(
    "value",
    [
        "/\t/evil.example",  # ?next=/%09/evil.example: Chromium went to http://evil.example/
        "/\n/evil.example",
        "/\r/evil.example",  # ?next=/%0d/... crashed the handler (a CR in the Location header)
        "/\\evil.example",
        "\\/evil.example",
        "//evil.example/x",
        " //evil.example",
        "\t//evil.example",
        "https://evil.example",
        "http:evil.example",
        "javascript:alert(1)",
        "inbox",
        "/é",
        "/\x00",
    ],
)
def test_anything_a_browser_could_take_elsewhere_is_refused(value: str) -> None:
    with pytest.raises(BadRequest):
        safe_next(value)


# Text built from the pieces open redirects are made of, plus anything at all.
PIECES = st.sampled_from(
    ["/", "\\", "\t", "\n", "\r", " ", "\x00", "//", "evil.example", "http:", ":", "@", "?", "#", "%09", "."]
)
ATTACKS = st.lists(PIECES, max_size=8).map("".join)


@given(st.one_of(ATTACKS, st.text(max_size=40)))
def test_an_accepted_address_stays_on_this_origin_in_a_browser(value: str) -> None:
    accepted = outcome(value)
    if accepted is not None:
        assert browser_origin(accepted) == "http://gateway.internal:9001", accepted
        assert accepted == value or (not value and accepted == "/")
