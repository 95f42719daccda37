"""Secrets, signatures and tokens are compared in constant time, wherever the gateway compares them.

Two checks, no timing measurements: no `==`/`!=` in proxy/ compares a secret-like value with another
runtime value, and the functions that check signatures and tokens are seen calling hmac.compare_digest.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from proxy.errors import S3Error
from proxy.identity import tokens
from proxy.s3 import sigv4
from proxy.s3.chunked import ChunkedDecoder, ChunkedSpec
from proxy.s3.request import RequestHead

PROXY = Path(__file__).resolve().parents[2] / "proxy"
SECRET_NAME = re.compile(r"(signature|secret|token|digest|password|mac|checksum|_hash$|^hash)", re.IGNORECASE)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _names(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield node.attr
    elif isinstance(node, ast.Call):
        yield from _names(node.func)
    elif isinstance(node, ast.Subscript):
        yield from _names(node.value)


def _public(node: ast.AST) -> bool:
    """A side that is not secret: a literal, None, a CONSTANT, a length or a type check."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name) and node.id.isupper():
        return True
    if isinstance(node, ast.Attribute) and node.attr.isupper():
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("len", "type")


def secret_equality_comparisons(source: str) -> list[tuple[int, str]]:
    """(line, text) of every ==/!= between two runtime values where one looks like a secret."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, sides, sides[1:], strict=False):
            if not isinstance(op, ast.Eq | ast.NotEq) or _public(left) or _public(right):
                continue
            if any(SECRET_NAME.search(n) for side in (left, right) for n in _names(side)):
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_scanner_flags_a_plain_signature_comparison() -> None:
    # The control: the scan below would pass vacuously if it could not see the pattern it forbids.
    code = "def f(expected, signed):\n    return expected == signed.signature\n"
    assert secret_equality_comparisons(code) == [(2, "expected == signed.signature")]
    assert secret_equality_comparisons("ok = len(signature) != 64 and mode == STREAMING\n") == []


# Comparisons the name heuristic flags that involve no secret, each with the reason it is safe.
NOT_SECRET = {
    ("audit/records.py", "stored != hashed"): "audit columns against the chained body: public data",
    ("store/workflow.py", "api_tokens.c.id == token_id"): "a SQL lookup by the token's public id",
}


def test_no_secret_is_compared_with_equality_anywhere_in_the_gateway() -> None:
    offenders = {
        (str(path.relative_to(PROXY)), text)
        for path in sorted(PROXY.rglob("*.py"))
        for _line, text in secret_equality_comparisons(path.read_text())
    }
    assert offenders - NOT_SECRET.keys() == set()


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Every hmac.compare_digest call made during the test, with its arguments."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    return calls


def _signed_get(secret: str) -> RequestHead:
    headers = {"host": "gw.example:9000"}
    added = sigv4.sign(
        "GET",
        "/bucket/key",
        (),
        headers,
        hashlib.sha256(b"").hexdigest(),
        access_key_id="AKIDEXAMPLE",
        secret=secret,
        session_token=None,
        region="us-east-1",
        now=NOW,
    )
    return RequestHead.build("GET", "/bucket/key", CIMultiDict({**headers, **added}))


def test_request_signature_is_checked_with_compare_digest(compared: list[tuple[Any, Any]]) -> None:
    head = _signed_get("the-callers-secret")
    signed = sigv4.parse_auth(head)
    with pytest.raises(S3Error):
        sigv4.verify(head, signed, "another-secret", NOW)
    assert any(signed.signature in call for call in compared)


def test_chunk_signature_is_checked_with_compare_digest(compared: list[tuple[Any, Any]]) -> None:
    spec = ChunkedSpec(
        sigv4.STREAMING_SIGNED,
        5,
        (),
        b"k" * 32,
        "a" * 64,
        "20260301T120000Z",
        "20260301/us-east-1/s3/aws4_request",
    )
    decoder = ChunkedDecoder(spec)
    forged = "b" * 64
    with pytest.raises(S3Error):
        decoder.feed(f"5;chunk-signature={forged}\r\nhello\r\n0;chunk-signature={forged}\r\n\r\n".encode())
        decoder.finish()
    assert any(forged in call for call in compared)


def test_api_token_secret_is_checked_with_compare_digest(compared: list[tuple[Any, Any]]) -> None:
    stored = tokens.hash_secret("right-secret")
    assert not tokens.secret_matches("wrong-secret", stored)
    assert tokens.secret_matches("right-secret", stored)
    assert [call for call in compared if stored in call] == [
        (tokens.hash_secret("wrong-secret"), stored),
        (stored, stored),
    ]
