"""Hand-built S3 requests for attack tests: SigV4-signed with the gateway's signing code, sent as crafted.

The aws-chunked encoder here is written from AWS's documentation (sigv4-streaming, sigv4-streaming-trailers)
and botocore's AwsChunkedWrapper, independently of proxy.s3.chunked, so the two check each other.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import re
import socket
import ssl
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from proxy.s3 import sigv4

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_CODE_RE = re.compile(rb"<Code>([^<]*)</Code>")


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def error_code(self) -> str | None:
        match = _CODE_RE.search(self.body)
        return match.group(1).decode() if match else None

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-grantgate-request-id")


@dataclass(frozen=True)
class Signed:
    """Headers ready to send, plus what an aws-chunked body needs to chain its chunk signatures."""

    headers: dict[str, str]
    seed_signature: str
    signing_key: bytes
    amz_date: str
    scope: str


@dataclass(frozen=True)
class Trailer:
    """A checksum trailer: its header name and base64 value (deliberately wrong values welcome)."""

    name: str
    value: str

    def line(self) -> bytes:
        return f"{self.name}:{self.value}\r\n".encode()


# ---------------------------------------------------------------- pure encoders


def crc32_b64(data: bytes) -> str:
    """S3's x-amz-checksum-crc32 value: big-endian CRC32, base64."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def split(payload: bytes, size: int) -> list[bytes]:
    return [payload[i : i + size] for i in range(0, len(payload), size)]


def chunk_signature(signed: Signed, previous: str, chunk: bytes) -> str:
    text = "\n".join(
        (
            "AWS4-HMAC-SHA256-PAYLOAD",
            signed.amz_date,
            signed.scope,
            previous,
            EMPTY_SHA256,
            hashlib.sha256(chunk).hexdigest(),
        )
    )
    return hmac.new(signed.signing_key, text.encode(), hashlib.sha256).hexdigest()


def trailer_signature(signed: Signed, previous: str, trailer: Trailer) -> str:
    canonical = f"{trailer.name}:{trailer.value}\n".encode()
    text = "\n".join(
        (
            "AWS4-HMAC-SHA256-TRAILER",
            signed.amz_date,
            signed.scope,
            previous,
            hashlib.sha256(canonical).hexdigest(),
        )
    )
    return hmac.new(signed.signing_key, text.encode(), hashlib.sha256).hexdigest()


def _corrupt(signature: str) -> str:
    return ("0" if signature[0] != "0" else "1") + signature[1:]


def encode_signed(
    chunks: Sequence[bytes],
    signed: Signed,
    *,
    trailer: Trailer | None = None,
    bad_chunk: int | None = None,
    bad_trailer_signature: bool = False,
) -> bytes:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] framing; `bad_chunk` gets a wrong signature.

    Chunk signatures chain from the seed; the final 0-size chunk is signed too, and the trailer
    signature chains from it.
    """
    out = bytearray()
    previous = signed.seed_signature
    for index, chunk in enumerate([*chunks, b""]):
        signature = chunk_signature(signed, previous, chunk)
        previous = signature
        sent = _corrupt(signature) if index == bad_chunk else signature
        out += b"%x;chunk-signature=%s\r\n" % (len(chunk), sent.encode())
        if chunk:
            out += chunk + b"\r\n"
    if trailer is None:
        out += b"\r\n"
        return bytes(out)
    out += trailer.line()
    signature = trailer_signature(signed, previous, trailer)
    sent = _corrupt(signature) if bad_trailer_signature else signature
    out += b"x-amz-trailer-signature:%s\r\n\r\n" % sent.encode()
    return bytes(out)


def encode_unsigned_trailer(chunks: Sequence[bytes], trailer: Trailer) -> bytes:
    """STREAMING-UNSIGNED-PAYLOAD-TRAILER framing, as botocore writes it."""
    out = bytearray()
    for chunk in chunks:
        out += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    out += b"0\r\n" + trailer.line() + b"\r\n"
    return bytes(out)


# ---------------------------------------------------------------- the client


@dataclass
class RawClient:
    """Signs with given credentials and sends exactly the path, headers and body it is told to."""

    endpoint: str
    access_key_id: str
    secret: str
    region: str = "us-east-1"
    ca_bundle: Path | None = None
    timeout: float = 30.0

    @property
    def _parts(self) -> tuple[str, str, int]:
        url = urlsplit(self.endpoint)
        return url.scheme, url.hostname or "", url.port or (443 if url.scheme == "https" else 80)

    @property
    def host(self) -> str:
        """The Host header a client would send (and sign): host:port as in the endpoint."""
        return urlsplit(self.endpoint).netloc

    def sign(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        payload_hash: str = EMPTY_SHA256,
        now: datetime | None = None,
    ) -> Signed:
        """Sign `path` (sent as is, already percent-encoded) with every given header signed."""
        when = now or datetime.now(UTC)
        to_sign = {"host": self.host, **{k.lower(): v for k, v in (headers or {}).items()}}
        added = sigv4.sign(
            method,
            path,
            query,
            to_sign,
            payload_hash,
            access_key_id=self.access_key_id,
            secret=self.secret,
            session_token=None,
            region=self.region,
            now=when,
        )
        seed = added["Authorization"].rpartition("Signature=")[2]
        amz_date = added["x-amz-date"]
        return Signed(
            headers={**to_sign, **added},
            seed_signature=seed,
            signing_key=sigv4.signing_key(self.secret, amz_date[:8], self.region, "s3"),
            amz_date=amz_date,
            scope=f"{amz_date[:8]}/{self.region}/s3/aws4_request",
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        payload_hash: str | None = None,
        now: datetime | None = None,
    ) -> RawResponse:
        """Sign and send; the payload hash defaults to the body's SHA-256."""
        declared = payload_hash or hashlib.sha256(body).hexdigest()
        signed = self.sign(method, path, query=query, headers=headers, payload_hash=declared, now=now)
        return self.send(method, path, signed.headers, body, query=query)

    def put_aws_chunked(
        self,
        path: str,
        payload: bytes,
        *,
        mode: str,
        chunk_size: int = 64 * 1024,
        trailer: Trailer | None = None,
        bad_chunk: int | None = None,
        bad_trailer_signature: bool = False,
        decoded_length: int | None = None,
    ) -> RawResponse:
        """PUT `payload` as aws-chunked in `mode` (a STREAMING-* sentinel); a CRC32 trailer by default."""
        chunks = split(payload, chunk_size)
        has_trailer = mode.endswith("-TRAILER")
        if has_trailer and trailer is None:
            trailer = Trailer("x-amz-checksum-crc32", crc32_b64(payload))
        headers = {
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(payload) if decoded_length is None else decoded_length),
        }
        if has_trailer and trailer is not None:
            headers["x-amz-trailer"] = trailer.name
        # Content-Length is the framed length, known only after encoding; S3 does not sign it either.
        signed = self.sign("PUT", path, headers=headers, payload_hash=mode)
        if mode == sigv4.STREAMING_UNSIGNED_TRAILER:
            assert trailer is not None
            body = encode_unsigned_trailer(chunks, trailer)
        else:
            body = encode_signed(
                chunks,
                signed,
                trailer=trailer if has_trailer else None,
                bad_chunk=bad_chunk,
                bad_trailer_signature=bad_trailer_signature,
            )
        return self.send("PUT", path, signed.headers, body)

    def send(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | Iterable[bytes] = b"",
        *,
        query: Sequence[tuple[str, str]] = (),
        raw_query: str | None = None,
    ) -> RawResponse:
        """Send as given: the path is not re-encoded, Content-Length is the body's unless set."""
        qs = raw_query if raw_query is not None else sigv4.canonical_query(query)
        target = path + (f"?{qs}" if qs else "")
        conn = self._connection()
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            data = body if isinstance(body, bytes) else b"".join(body)
            sent = {k.lower(): v for k, v in headers.items()}
            sent.setdefault("content-length", str(len(data)))
            for name, value in sent.items():
                conn.putheader(name, value)
            conn.endheaders()
            # A refusal may come (and the socket close) before the whole body is out: still read it.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.send(data)
            resp = conn.getresponse()
            return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def send_bytes(self, raw: bytes) -> RawResponse:
        """Write a hand-made HTTP/1.1 request (bytes http.client refuses, say) and parse the reply."""
        scheme, host, port = self._parts
        sock = socket.create_connection((host, port), timeout=self.timeout)
        if scheme == "https":
            sock = self._ssl_context().wrap_socket(sock, server_hostname=host)
        try:
            sock.sendall(raw)
            resp = http.client.HTTPResponse(sock, method="GET")
            resp.begin()
            return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            sock.close()

    def _connection(self) -> http.client.HTTPConnection:
        scheme, host, port = self._parts
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ssl_context())
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle) if self.ca_bundle else None)
