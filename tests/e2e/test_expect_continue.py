"""`Expect: 100-continue` on the S3 port: the request is admitted (signature, grant) before the client is
told to send its body, so a refused upload never sends it. The listener answers `Expect` itself (no
aiohttp Application in front of it: proxy/s3/listener.py), which these tests pin down on the wire."""

from __future__ import annotations

import hashlib
import socket
from urllib.parse import urlsplit

import pytest
from support.world import BUCKET, Identity, World

BODY = b"weights" * 1000


@pytest.fixture
def uploader(world: World, unique: str) -> Identity:
    who = world.person(f"expect-{unique}")
    world.grant(who, f"s3://{BUCKET}/expect/{unique}/", "read,write")
    return who


def _head_of_put(world: World, who: Identity, key: str) -> bytes:
    raw = world.raw_client(who)
    path = f"/{BUCKET}/{key}"
    signed = raw.sign(
        "PUT", path, headers={"expect": "100-continue"}, payload_hash=hashlib.sha256(BODY).hexdigest()
    )
    lines = [f"PUT {path} HTTP/1.1", f"content-length: {len(BODY)}"]
    lines += [f"{name}: {value}" for name, value in signed.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _connect(world: World) -> socket.socket:
    url = urlsplit(world.http.s3_url)
    return socket.create_connection((url.hostname, url.port), timeout=10)


def _read_until_blank_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data


def test_an_allowed_upload_is_told_to_continue_then_stored(
    world: World, uploader: Identity, unique: str
) -> None:
    key = f"expect/{unique}/ok.bin"
    with _connect(world) as sock:
        sock.sendall(_head_of_put(world, uploader, key))
        interim = _read_until_blank_line(sock)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        sock.sendall(BODY)
        final = _read_until_blank_line(sock)
    assert final.startswith(b"HTTP/1.1 200"), final
    stored = world.upstream().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert stored == BODY


def test_a_refused_upload_is_answered_before_its_body_and_nothing_is_stored(
    world: World, uploader: Identity, unique: str
) -> None:
    key = f"elsewhere/{unique}/no.bin"  # outside the grant
    with _connect(world) as sock:
        sock.sendall(_head_of_put(world, uploader, key))
        answer = _read_until_blank_line(sock)
        assert answer.startswith(b"HTTP/1.1 403"), answer
        assert b"100 Continue" not in answer
        assert b"connection: close" in answer.lower()  # the body it told no one to send ends the connection
        sock.sendall(BODY)  # a client that sends it anyway: drained, never forwarded
    listed = world.upstream().list_objects_v2(Bucket=BUCKET, Prefix=f"elsewhere/{unique}/")
    assert listed.get("KeyCount", 0) == 0


def test_an_unknown_expectation_on_a_refused_request_is_still_refused_first(
    world: World, uploader: Identity, unique: str
) -> None:
    """Any `Expect` admits first (as aiohttp's Application did): a forged signature never reaches a 417."""
    head = _head_of_put(world, uploader, f"expect/{unique}/forged.bin")
    head = head.replace(b"100-continue", b"something-else")  # signed: the signature no longer matches
    with _connect(world) as sock:
        sock.sendall(head)
        answer = _read_until_blank_line(sock)
    assert answer.startswith(b"HTTP/1.1 403"), answer
