"""Large bodies through the real gateway: spliced in the kernel over plain HTTP, through the loop over TLS.

Both paths must deliver the same bytes and audit the same counts; only the plain one may (and, for an
upload aiohttp had not finished reading, must) close the client's connection after answering.
"""

from __future__ import annotations

import hashlib
import http.client
import secrets
import socket

from support.world import BUCKET, World

from proxy.s3 import sigv4

MIB = 1024 * 1024


def test_a_large_upload_arrives_whole_and_is_audited(world: World, unique: str, tls: bool) -> None:
    who = world.person(f"pam-{unique}-{int(tls)}")
    world.grant(who, f"s3://{BUCKET}/spliced/{unique}/", "read,write")
    body = secrets.token_bytes(24 * MIB + 5)
    key = f"spliced/{unique}/up-{int(tls)}.bin"
    resp = world.raw_client(who, tls=tls).request(
        "PUT", f"/{BUCKET}/{key}", body=body, payload_hash=sigv4.UNSIGNED_PAYLOAD
    )
    assert resp.status == 200, resp.body
    stored = world.upstream().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(body).digest()
    gateway = world.https if tls else world.http
    event = gateway.event_for(resp.request_id or "")
    assert (event["bytes_in"], event["outcome"]) == (len(body), "ok")
    # Over plain HTTP the tail of a 24 MiB body went past aiohttp's parser: the connection is spent.
    assert (resp.headers.get("connection", "").lower() == "close") is not tls


def test_a_large_download_and_its_ranges_are_byte_identical(world: World, unique: str, tls: bool) -> None:
    who = world.person(f"quin-{unique}-{int(tls)}")
    world.grant(who, f"s3://{BUCKET}/spliced/{unique}/", "read")
    body = secrets.token_bytes(20 * MIB + 17)
    key = f"spliced/{unique}/down-{int(tls)}.bin"
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=body)
    client = world.raw_client(who, tls=tls)
    whole = client.request("GET", f"/{BUCKET}/{key}")
    assert whole.status == 200
    assert hashlib.sha256(whole.body).digest() == hashlib.sha256(body).digest()
    gateway = world.https if tls else world.http
    assert gateway.event_for(whole.request_id or "")["bytes_out"] == len(body)
    first, last = 3 * MIB + 1, 11 * MIB
    part = client.request("GET", f"/{BUCKET}/{key}", headers={"range": f"bytes={first}-{last}"})
    assert part.status == 206
    assert part.body == body[first : last + 1]


def test_the_client_connection_survives_a_spliced_download(world: World, unique: str) -> None:
    """A download leaves the client's connection reusable: the next request on it is answered."""
    who = world.person(f"rui-{unique}")
    world.grant(who, f"s3://{BUCKET}/spliced/{unique}/", "read")
    body = secrets.token_bytes(4 * MIB)
    world.upstream().put_object(Bucket=BUCKET, Key=f"spliced/{unique}/a.bin", Body=body)
    client = world.raw_client(who)
    conn = http.client.HTTPConnection(world.http.s3_url.split("//")[1], timeout=30)
    ports = set()
    try:
        for _ in range(3):
            path = f"/{BUCKET}/spliced/{unique}/a.bin"
            conn.request("GET", path, headers=client.sign("GET", path).headers)
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == body
            assert conn.sock is not None
            ports.add(conn.sock.getsockname()[1])
        assert len(ports) == 1  # one connection served all three: http.client would have reopened it
    finally:
        conn.close()


def test_after_a_spliced_upload_the_gateway_closes_the_connection_at_once(world: World, unique: str) -> None:
    """Its parser never saw the body: it must neither wait for it (aiohttp lingers up to 10 s on an
    unfinished body) nor read a next request from where the body was."""
    who = world.person(f"sol-{unique}")
    world.grant(who, f"s3://{BUCKET}/spliced/{unique}/", "write")
    body = secrets.token_bytes(16 * MIB)
    path = f"/{BUCKET}/spliced/{unique}/closed.bin"
    signed = world.raw_client(who).sign(
        "PUT", path, headers={"content-length": str(len(body))}, payload_hash=sigv4.UNSIGNED_PAYLOAD
    )
    host, port = world.http.s3_url.split("//")[1].split(":")
    head = "".join(f"{name}: {value}\r\n" for name, value in signed.headers.items())
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"PUT {path} HTTP/1.1\r\n{head}\r\n".encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        status_line, _, rest = answer.partition(b"\r\n")
        assert b" 200 " in status_line, answer
        assert b"connection: close" in rest.lower()
        sock.settimeout(5.0)  # half of aiohttp's lingering time
        while piece := sock.recv(65536):  # the empty response body, then the gateway's close
            assert piece.strip() == b"", piece
