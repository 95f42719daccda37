"""Re-signing aws-chunked bodies: the gateway's own decoder accepts the result under the new key."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from support.rawclient import RawClient, Trailer, crc32_b64, encode_signed, split

from proxy.errors import S3Error
from proxy.s3 import sigv4
from proxy.s3.chunked import ChunkedDecoder, chunked_spec
from proxy.s3.request import RequestHead
from proxy.sidecar.resign import ChunkFramingError, ChunkResigner, ResignKey

PATH = "/bucket/ckpt/step-1.pt"


def job_body(payload: bytes, mode: str, chunk: int = 1000) -> bytes:
    """What a job's SDK sends: chunks signed with its placeholder credentials."""
    job = RawClient("http://127.0.0.1:1", "placeholder", "placeholder-secret")
    signed = job.sign("PUT", PATH, payload_hash=mode)
    trailer = Trailer("x-amz-checksum-crc32", crc32_b64(payload)) if mode.endswith("TRAILER") else None
    return encode_signed(split(payload, chunk), signed, trailer=trailer)


def new_signature(payload: bytes, mode: str) -> tuple[RequestHead, bytes, ResignKey]:
    """The sidecar's request: headers signed with the pod's credentials, and the key chunks chain from."""
    pod = RawClient("http://gateway:9000", "GGTPODKEY", "pod-secret")
    headers = {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(payload))}
    if mode.endswith("TRAILER"):
        headers["x-amz-trailer"] = "x-amz-checksum-crc32"
    signed = pod.sign("PUT", PATH, headers=headers, payload_hash=mode)
    head = RequestHead.build("PUT", PATH, CIMultiDict(signed.headers))
    key = ResignKey(signed.signing_key, signed.amz_date, signed.scope, signed.seed_signature)
    return head, signed.signing_key, key


def decode_at_gateway(head: RequestHead, signing_key: bytes, body: bytes) -> bytes:
    spec = chunked_spec(head, sigv4.parse_auth(head), signing_key)
    assert spec is not None
    decoder = ChunkedDecoder(spec)
    return b"".join(decoder.feed(body)) + b"".join(decoder.finish())


def resign(body: bytes, key: ResignKey, *, trailer: bool, pieces: int = 1) -> bytes:
    resigner = ChunkResigner(key, trailer=trailer)
    step = max(1, len(body) // pieces)
    out = [b"".join(resigner.feed(body[i : i + step])) for i in range(0, len(body), step)]
    resigner.finish()
    return b"".join(out)


@pytest.mark.parametrize("mode", [sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER])
def test_resigned_body_verifies_at_the_gateway_and_keeps_its_length(mode: str) -> None:
    payload = bytes(range(256)) * 17
    original = job_body(payload, mode)
    head, signing_key, key = new_signature(payload, mode)
    resigned = resign(original, key, trailer=mode == sigv4.STREAMING_SIGNED_TRAILER, pieces=7)
    assert len(resigned) == len(original)  # Content-Length still holds
    assert resigned != original
    assert decode_at_gateway(head, signing_key, resigned) == payload


def test_body_not_resigned_is_refused_by_the_gateway() -> None:
    payload = b"x" * 3000
    head, signing_key, _key = new_signature(payload, sigv4.STREAMING_SIGNED)
    with pytest.raises(S3Error) as exc:
        decode_at_gateway(head, signing_key, job_body(payload, sigv4.STREAMING_SIGNED))
    assert exc.value.code == "SignatureDoesNotMatch"


@settings(max_examples=40, deadline=None)
@given(payload=st.binary(min_size=0, max_size=5000), chunk=st.integers(1, 2000), pieces=st.integers(1, 50))
def test_any_split_of_the_input_gives_the_same_resigned_body(payload: bytes, chunk: int, pieces: int) -> None:
    original = job_body(payload, sigv4.STREAMING_SIGNED_TRAILER, chunk)
    head, signing_key, key = new_signature(payload, sigv4.STREAMING_SIGNED_TRAILER)
    whole = resign(original, key, trailer=True)
    assert resign(original, key, trailer=True, pieces=pieces) == whole
    assert (
        hashlib.sha256(decode_at_gateway(head, signing_key, whole)).digest()
        == hashlib.sha256(payload).digest()
    )


@pytest.mark.parametrize(
    "body",
    [
        b"10\r\nnot signed chunk\r\n0\r\n\r\n",
        b"zz;chunk-signature=" + b"0" * 64 + b"\r\n",
        b"4;chunk-signature=" + b"0" * 63 + b"\r\nabcd\r\n",
        b"4;chunk-signature=" + b"0" * 64 + b"\r\nabcdef\r\n",
        b"4;chunk-signature=" + b"0" * 64 + b"\nabcd\r\n",
    ],
)
def test_malformed_framing_is_refused(body: bytes) -> None:
    _head, _signing_key, key = new_signature(b"abcd", sigv4.STREAMING_SIGNED)
    with pytest.raises(ChunkFramingError):
        resign(body, key, trailer=False)


def test_truncated_body_is_refused_at_the_end() -> None:
    original = job_body(b"y" * 3000, sigv4.STREAMING_SIGNED)
    _head, _signing_key, key = new_signature(b"y" * 3000, sigv4.STREAMING_SIGNED)
    resigner = ChunkResigner(key, trailer=False)
    resigner.feed(original[:-10])
    with pytest.raises(ChunkFramingError):
        resigner.finish()


def test_oversized_chunk_is_refused_before_it_is_buffered() -> None:
    _head, _signing_key, key = new_signature(b"", sigv4.STREAMING_SIGNED)
    resigner = ChunkResigner(key, trailer=False, max_chunk_size=1024)
    with pytest.raises(ChunkFramingError):
        resigner.feed(b"100000;chunk-signature=" + b"0" * 64 + b"\r\n")
