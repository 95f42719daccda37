"""Fuzz targets over the gateway's pure parsers: each takes arbitrary bytes and checks invariants.

A target may end only normally or with S3Error; anything else, or a broken invariant (AssertionError),
is a finding. The targets need no fuzzer: `fuzz.run` drives them with atheris, tests with plain bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from proxy.access.decide import Allow
from proxy.access.grants import Action, Grant, Scope, Target
from proxy.access.index import GrantIndex
from proxy.errors import S3Error
from proxy.s3 import sigv4
from proxy.s3.addressing import resolve
from proxy.s3.chunked import ChunkedDecoder, ChunkedSpec
from proxy.s3.operations import UNKNOWN, Operation, classify
from proxy.s3.request import RequestHead
from proxy.s3.xmlbodies import MAX_DELETE_KEYS, MAX_PARTS, complete_multipart_parts, delete_objects_keys

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "fuzz-secret-key-0123456789abcdefghijklmnop"  # noqa: S105  (a test key)
HOST = "gateway.example:9000"
VHOST_BASE = "s3.example"
MAX_CHUNK = 4096
MAX_LINE = 256


class Draw:
    """Carves typed values out of fuzzer bytes; reading past the end yields zeros and empties."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def int(self, below: int) -> int:
        if below <= 1:
            return 0
        raw = self._data[self._pos : self._pos + 2]
        self._pos += 2
        return int.from_bytes(raw.ljust(2, b"\0"), "big") % below

    def bool(self) -> bool:
        return self.int(2) == 1

    def bytes(self, limit: int) -> bytes:
        size = self.int(limit + 1)
        out = self._data[self._pos : self._pos + size]
        self._pos += size
        return out

    def text(self, limit: int) -> str:
        # aiohttp hands the listener request lines decoded as UTF-8 with surrogateescape.
        return self.bytes(limit).decode("utf-8", "surrogateescape")

    def header_value(self, limit: int) -> str:
        return self.bytes(limit).decode("latin-1").replace("\r", "").replace("\n", "")

    def choice(self, options: tuple[str, ...]) -> str:
        return options[self.int(len(options))]

    def rest(self) -> bytes:
        out = self._data[self._pos :]
        self._pos = len(self._data)
        return out


METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "get")
PATHS = ("/", "/bucket", "/bucket/", "/bucket/key", "/bucket/a/b%2Fc", "/bucket/%E2%82%AC", "//bucket/x")
QUERIES = (
    "",
    "uploads",
    "uploadId=1&partNumber=2",
    "list-type=2&prefix=a%2F",
    "delete",
    "acl",
    "x-id=GetObject",
)
HEADER_NAMES = (
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "x-amz-copy-source",
    "x-amz-decoded-content-length",
    "x-amz-trailer",
    "content-encoding",
    "content-length",
    "range",
    "x-amz-acl",
    "host",
)


def _head(draw: Draw) -> RequestHead:
    method = draw.choice(METHODS)
    path = draw.choice(PATHS) + draw.text(64) if draw.bool() else "/" + draw.text(128)
    query = draw.choice(QUERIES) if draw.bool() else draw.text(96)
    headers = [("host", HOST if draw.bool() else draw.header_value(64))]
    for _ in range(draw.int(6)):
        name = draw.choice(HEADER_NAMES) if draw.bool() else draw.header_value(24).lower() or "x"
        headers.append((name, draw.header_value(128)))
    return RequestHead.build(method, path + ("?" + query if query else ""), headers)


def _sign(head: RequestHead, payload_hash: str) -> RequestHead:
    """The same request, honestly signed with every header it carries (as a client would)."""
    names = {k.lower(): v for k, v in head.headers.items()}
    names.setdefault("host", HOST)
    added = sigv4.sign(
        head.method,
        head.raw_path,
        head.query,
        names,
        payload_hash,
        access_key_id="AKIDFUZZ",
        secret=SECRET,
        session_token=None,
        region="us-east-1",
        now=NOW,
    )
    merged = [(k, v) for k, v in head.headers.items() if k.lower() not in {n.lower() for n in added}]
    target = head.raw_path + ("?" + head.raw_query if head.raw_query else "")
    return RequestHead.build(head.method, target, [*merged, *added.items()])


# ---------------------------------------------------------------- targets


def sigv4_parse_verify(data: bytes) -> None:
    """Any Authorization header or presigned query: parse and verify end in a key or an S3Error."""
    draw = Draw(data)
    head = _head(draw)
    if draw.bool():
        auth = "AWS4-HMAC-SHA256 " + draw.header_value(300) if draw.bool() else draw.header_value(300)
        head = RequestHead.build(
            head.method,
            head.raw_path + "?" + head.raw_query,
            [*head.headers.items(), ("Authorization", auth)],
        )
    signed = sigv4.parse_auth(head)
    assert len(signed.signature) == 64
    key = sigv4.verify(head, signed, SECRET, NOW, max_skew=timedelta(days=3650))
    assert isinstance(key, bytes)


def sigv4_two_requests(data: bytes) -> None:
    """A signature made for one request verifies another only if both mean the same S3 operation."""
    draw = Draw(data)
    first = _head(draw)
    try:
        signed_first = _sign(first, hashlib.sha256(b"").hexdigest())
    except (ValueError, UnicodeEncodeError):
        return
    auth = signed_first.headers.getall("Authorization")[0]
    # A second request: another path, query or method, carrying the first one's signature.
    second_path = (first.raw_path + draw.text(8)) if draw.bool() else "/" + draw.text(96)
    second_query = first.raw_query if draw.bool() else draw.text(64)
    method = first.method if draw.bool() else draw.choice(METHODS)
    second = RequestHead.build(
        method, second_path + ("?" + second_query if second_query else ""), list(signed_first.headers.items())
    )
    assert sigv4.parse_auth(signed_first).signature == auth.rpartition("Signature=")[2]
    signed = sigv4.parse_auth(second)
    sigv4.verify(signed_first, sigv4.parse_auth(signed_first), SECRET, NOW)  # the original always verifies
    try:
        sigv4.verify(second, signed, SECRET, NOW)
    except S3Error:
        return
    assert _meaning(first) == _meaning(second), (first, second)


def _meaning(head: RequestHead) -> tuple[str, object] | None:
    try:
        op = classify(head, host=HOST)
    except S3Error as err:
        return ("error", err.code)
    return ("op", (head.method, op.name, op.bucket, op.key, op.targets, op.copy_source))


def aws_chunked(data: bytes) -> None:
    """Any body in any split: S3Error or the exact payload, the same for every split, within the bound."""
    draw = Draw(data)
    mode = draw.choice(tuple(sorted(sigv4.STREAMING_MODES)))
    declared = draw.int(3 * MAX_CHUNK)
    trailer = ("x-amz-checksum-crc32",) if mode != sigv4.STREAMING_SIGNED and draw.bool() else ()
    spec = ChunkedSpec(
        mode,
        declared,
        trailer,
        b"k" * 32,
        "0" * 64,
        "20260301T120000Z",
        "20260301/us-east-1/s3/aws4_request",
    )
    cuts = sorted({draw.int(4096) for _ in range(draw.int(8))})
    body = draw.rest()
    whole = _decode_all(spec, [body])
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert _decode_all(spec, pieces) == whole


def _decode_all(spec: ChunkedSpec, pieces: list[bytes]) -> tuple[str, bytes | str]:
    decoder = ChunkedDecoder(spec, max_chunk_size=MAX_CHUNK, max_line=MAX_LINE)
    out = bytearray()
    try:
        for piece in pieces:
            for part in decoder.feed(piece):
                out += part
            # Never more than declared, and the last byte only once every check has passed.
            assert len(out) <= max(spec.decoded_length - 1, 0)
        for part in decoder.finish():
            out += part
    except S3Error as err:
        return ("error", err.code)
    assert len(out) == spec.decoded_length
    return ("ok", bytes(out))


def classifier(data: bytes) -> None:
    """Any request head: an Operation whose targets stay inside the addressed bucket(s), or S3Error."""
    draw = Draw(data)
    head = _head(draw)
    base = VHOST_BASE if draw.bool() else ""
    host = draw.choice((HOST, f"bucket.{VHOST_BASE}", f"a.b.{VHOST_BASE}.", f"{VHOST_BASE}:1"))
    op = classify(head, virtual_host_base=base, host=host)
    _check_operation(op, resolve(head, virtual_host_base=base, host=host).bucket)


def _check_operation(op: Operation, addressed: str | None) -> None:
    if op.name == UNKNOWN:
        assert op.targets == () and not op.body_targets
        return
    copy_bucket = op.copy_source[0] if op.copy_source else None
    for target in op.targets:
        # ListBuckets (no bucket addressed) is an admin target on no bucket at all.
        assert target.bucket in (addressed or "", copy_bucket), (op, addressed)
        if target.scope is Scope.OBJECT:
            segments = target.key.replace("\\", "/").split("/")
            assert ".." not in segments and "." not in segments, op
            assert "\x00" not in target.key, op


def xml_bodies(data: bytes) -> None:
    """DeleteObjects and CompleteMultipartUpload bodies: bounded results or S3Error (no entity tricks)."""
    draw = Draw(data)
    shape = draw.int(4)
    inner = draw.rest()
    if shape == 1:
        inner = b"<Delete><Object><Key>" + inner + b"</Key></Object></Delete>"
    elif shape == 2:
        inner = b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>" + inner + b"</ETag></Part>"
    elif shape == 3:
        inner = (
            b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e "' + inner + b'">]><Delete><Object><Key>&e;</Key>'
        )
    for parse, limit in ((delete_objects_keys, MAX_DELETE_KEYS), (complete_multipart_parts, MAX_PARTS)):
        try:
            result = parse(inner)
        except S3Error:
            continue
        assert 0 < len(result) <= limit


ACTIONS = tuple(Action)
SCOPES = tuple(Scope)


def grant_matching(data: bytes) -> None:
    """Random grants and targets: the index allows exactly when an independent oracle finds coverage."""
    draw = Draw(data)
    principals, buckets = ("alice", "bob"), ("models", "data", "models-old")
    prefixes = ("", "a", "a/", "a/b/", "ab", "a%2F", "é/", "e\u0301/", "a/.")
    grants = []
    for index in range(draw.int(6)):
        created = NOW - timedelta(hours=draw.int(48))
        expires = None if draw.bool() else NOW + timedelta(minutes=draw.int(240) - 120)
        revoked = None if draw.int(4) else NOW + timedelta(minutes=draw.int(240) - 120)
        actions = frozenset(a for a in ACTIONS if draw.bool()) or frozenset({Action.READ})
        prefix = draw.choice(prefixes) if draw.bool() else draw.text(6)
        grants.append(
            Grant(
                f"g{index}",
                draw.choice(principals),
                draw.choice(buckets),
                prefix,
                actions,
                created,
                expires,
                revoked,
            )
        )
    targets = []
    for _ in range(draw.int(4)):
        key = draw.choice(prefixes) + draw.text(6) if draw.bool() else draw.text(8)
        targets.append(
            Target(ACTIONS[draw.int(len(ACTIONS))], draw.choice(buckets), key, SCOPES[draw.int(3)])
        )
    who = draw.choice(principals)
    decision = GrantIndex.build(grants).decide(who, targets, NOW)
    expected = bool(targets) and all(any(_oracle_covers(g, who, t) for g in grants) for t in targets)
    assert isinstance(decision, Allow) == expected, (grants, targets, decision)
    if isinstance(decision, Allow):
        for grant, target in zip(decision.grants, targets, strict=True):
            assert _oracle_covers(grant, who, target)


def _oracle_covers(grant: Grant, who: str, target: Target) -> bool:
    """Coverage written out independently of Grant.covers, from the rules in docs/security.md."""
    if grant.principal != who or grant.bucket != target.bucket:
        return False
    if grant.revoked_at is not None and grant.revoked_at <= NOW:
        return False
    if grant.expires_at is not None and grant.expires_at <= NOW:
        return False
    if target.scope is Scope.BUCKET:
        return True
    return target.action in grant.actions and target.key[: len(grant.prefix)] == grant.prefix


TARGETS: dict[str, Callable[[bytes], None]] = {
    "sigv4": sigv4_parse_verify,
    "sigv4-two-requests": sigv4_two_requests,
    "aws-chunked": aws_chunked,
    "classifier": classifier,
    "xml-bodies": xml_bodies,
    "grant-matching": grant_matching,
}


def run_one(name: str, data: bytes) -> None:
    """One input through one target: S3Error is an accepted outcome, anything else propagates."""
    with contextlib.suppress(S3Error):
        TARGETS[name](data)
