"""The aws-chunked decoder: AWS examples, botocore's writer, tampering, hold-back, splits, hostile input."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest
from botocore import httpchecksum
from botocore.config import Config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from s3.aws_chunked_encoder import derive_key, encode_signed, encode_unsigned, split_payload

from proxy.errors import S3Error
from proxy.s3 import sigv4
from proxy.s3.checksums import new_checksum
from proxy.s3.chunked import ChunkedDecoder, ChunkedSpec, chunk_signature, chunked_spec, trailer_signature
from proxy.s3.request import RequestHead

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AMZ_DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"
KEY = derive_key(SECRET, "20130524", "us-east-1")
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"


# --- helpers ------------------------------------------------------------------------------------------


def signed_spec(length: int, trailer: str | None = None, seed: str = SEED) -> ChunkedSpec:
    mode = sigv4.STREAMING_SIGNED_TRAILER if trailer else sigv4.STREAMING_SIGNED
    names = (trailer,) if trailer else ()
    return ChunkedSpec(mode, length, names, KEY, seed, AMZ_DATE, SCOPE)


def unsigned_spec(length: int, trailer: str = "x-amz-checksum-crc32") -> ChunkedSpec:
    return ChunkedSpec(sigv4.STREAMING_UNSIGNED_TRAILER, length, (trailer,))


class Run:
    """Feeds a body in pieces and records what the decoder released, and when."""

    def __init__(self, spec: ChunkedSpec, **kw: Any) -> None:
        self.decoder = ChunkedDecoder(spec, **kw)
        self.released = bytearray()
        self.error: S3Error | None = None

    def feed(self, data: bytes) -> None:
        for piece in self.decoder.feed(data):
            assert isinstance(piece, bytes)
            self.released += piece

    def feed_split(self, body: bytes, cuts: Sequence[int]) -> None:
        last = 0
        for cut in sorted(set(cuts)):
            self.feed(body[last:cut])
            last = cut
        self.feed(body[last:])

    def finish(self) -> bytes:
        for piece in self.decoder.finish():
            self.released += piece
        return bytes(self.released)


def decode(spec: ChunkedSpec, body: bytes, step: int | None = None, **kw: Any) -> bytes:
    run = Run(spec, **kw)
    run.feed_split(body, range(step, len(body), step) if step else [])
    return run.finish()


def checksum_b64(algorithm: str, payload: bytes) -> str:
    checksum = new_checksum(algorithm)
    checksum.update(payload)
    return checksum.b64digest()


def expect_error(code: str, spec: ChunkedSpec, body: bytes, step: int | None = None, **kw: Any) -> Run:
    """Decode until the error; return the run so callers can see what had been released by then."""
    run = Run(spec, **kw)
    with pytest.raises(S3Error) as info:
        run.feed_split(body, range(step, len(body), step) if step else [])
        run.finish()
    assert info.value.code == code, info.value
    run.error = info.value
    return run


# --- AWS's documented examples ------------------------------------------------------------------------

DOC_BODY = (
    b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n"
    + b"a" * 65536
    + b"\r\n"
    + b"400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n"
    + b"a" * 1024
    + b"\r\n"
    + b"0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n"
)


def doc_put_head() -> RequestHead:
    return RequestHead.build(
        "PUT",
        "/examplebucket/chunkObject.txt",
        [
            ("Host", "s3.amazonaws.com"),
            ("x-amz-date", AMZ_DATE),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                f"x-amz-decoded-content-length;x-amz-storage-class,Signature={SEED}",
            ),
            ("x-amz-content-sha256", sigv4.STREAMING_SIGNED),
            ("Content-Encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "66560"),
            ("Content-Length", "66824"),
        ],
    )


def test_documented_chunked_put_seed_signature_verifies() -> None:
    head = doc_put_head()
    signed = sigv4.parse_auth(head)
    canonical = sigv4.canonical_request(head, signed, head.host)
    assert sigv4.string_to_sign(signed, canonical).endswith(
        "cee3fed04b70f867d036f722359b0b1f2f0e5dc0efadbc082b76c4c60e316455"
    )
    key = sigv4.verify(head, signed, SECRET, datetime(2013, 5, 24, tzinfo=UTC))
    spec = chunked_spec(head, signed, key)
    assert spec == ChunkedSpec(sigv4.STREAMING_SIGNED, 66560, (), KEY, SEED, AMZ_DATE, SCOPE)


def test_documented_chunk_signature() -> None:
    chunk_hash = hashlib.sha256(b"a" * 65536).hexdigest()
    assert (
        chunk_signature(KEY, AMZ_DATE, SCOPE, SEED, chunk_hash)
        == "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
    )


def test_documented_trailer_signature() -> None:
    # sigv4-streaming-trailers: the trailer chunk signed after a final chunk signature.
    previous = "e05ab64fe1dfdbf0b5870abbaabdb063c371d4e96f2767e6934d90529c5ae850"
    assert (
        trailer_signature(KEY, AMZ_DATE, SCOPE, previous, [("x-amz-checksum-crc32c", "wdBDMA==")])
        == "41e14ac611e27a8bb3d66c3bad6856f209297767d5dd4fc87d8fa9e422e03faf"
    )


@pytest.mark.parametrize("step", [None, 1, 7, 8192, 65536 + 90])
def test_documented_chunked_put_decodes_to_its_payload(step: int | None) -> None:
    assert decode(signed_spec(66560), DOC_BODY, step) == b"a" * 66560


def test_documented_chunked_put_holds_back_the_last_byte_until_finish() -> None:
    run = Run(signed_spec(66560))
    run.feed(DOC_BODY)
    assert len(run.released) == 66559
    assert run.decoder.decoded_bytes == 66560
    assert run.finish() == b"a" * 66560


def test_encoder_helper_reproduces_the_documented_body() -> None:
    # The test encoder is independent of the decoder; pin it to AWS's bytes before trusting it.
    assert (
        encode_signed([b"a" * 65536, b"a" * 1024], key=KEY, amz_date=AMZ_DATE, scope=SCOPE, seed=SEED)
        == DOC_BODY
    )


# The signed-trailer example: seed 106e2a8a... over the trailer headers, crc32c of 66560 'a' is sOO8/Q==.
TRAILER_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
TRAILER_CHUNKS = (
    b"10000;chunk-signature=b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2\r\n"
    + b"a" * 65536
    + b"\r\n"
    + b"400;chunk-signature=1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7\r\n"
    + b"a" * 1024
    + b"\r\n"
    + b"0;chunk-signature=2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992\r\n"
)
TRAILER_LINES = (
    b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
    b"x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n"
)


@pytest.mark.parametrize(
    "body",
    [
        TRAILER_CHUNKS + TRAILER_LINES + b"\r\n",  # as the SDKs frame it
        TRAILER_CHUNKS + b"\r\n" + TRAILER_LINES,  # as the AWS documentation shows it
    ],
    ids=["sdk-framing", "documented-framing"],
)
@pytest.mark.parametrize("step", [None, 1, 1000])
def test_documented_signed_trailer_example_decodes(body: bytes, step: int | None) -> None:
    run = Run(signed_spec(66560, "x-amz-checksum-crc32c", seed=TRAILER_SEED))
    run.feed_split(body, range(step, len(body), step) if step else [])
    assert len(run.released) == 66559
    assert run.finish() == b"a" * 66560
    assert run.decoder.trailer == {"x-amz-checksum-crc32c": "sOO8/Q=="}


def test_documented_signed_trailer_with_forged_trailer_signature_is_rejected() -> None:
    body = TRAILER_CHUNKS + TRAILER_LINES.replace(b":d81f", b":d81e") + b"\r\n"
    run = expect_error(
        "SignatureDoesNotMatch", signed_spec(66560, "x-amz-checksum-crc32c", TRAILER_SEED), body
    )
    assert len(run.released) < 66560


# --- botocore's own aws-chunked writer (unsigned trailer) ---------------------------------------------

BOTOCORE_CHECKSUMS = {
    "crc32": httpchecksum.Crc32Checksum,
    "crc32c": httpchecksum.CrtCrc32cChecksum,
    "crc64nvme": httpchecksum.CrtCrc64NvmeChecksum,
    "sha1": httpchecksum.Sha1Checksum,
    "sha256": httpchecksum.Sha256Checksum,
}


def botocore_body(payload: bytes, algorithm: str, chunk_size: int | None = None) -> bytes:
    wrapper = httpchecksum.AwsChunkedWrapper(
        io.BytesIO(payload),
        checksum_cls=BOTOCORE_CHECKSUMS[algorithm],
        checksum_name=f"x-amz-checksum-{algorithm}",
        chunk_size=chunk_size,
    )
    return wrapper.read()


PAYLOADS = [b"", b"x", b"hello world", bytes(range(256)) * 300, b"\r\n0\r\n" * 5000]


@pytest.mark.parametrize("algorithm", sorted(BOTOCORE_CHECKSUMS))
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"{len(p)}B")
@pytest.mark.parametrize("chunk_size", [None, 1, 8192])
def test_botocore_unsigned_trailer_body_decodes(
    algorithm: str, payload: bytes, chunk_size: int | None
) -> None:
    body = botocore_body(payload, algorithm, chunk_size)
    name = f"x-amz-checksum-{algorithm}"
    run = Run(unsigned_spec(len(payload), name))
    run.feed_split(body, range(4099, len(body), 4099))
    assert len(run.released) == max(len(payload) - 1, 0)
    assert run.finish() == payload
    assert run.decoder.trailer == {name: BOTOCORE_CHECKSUMS[algorithm]().handle(io.BytesIO(payload))}
    assert run.decoder.decoded_bytes == len(payload)


@pytest.mark.parametrize("algorithm", sorted(BOTOCORE_CHECKSUMS))
def test_wrong_trailer_checksum_is_bad_digest_and_last_byte_never_released(algorithm: str) -> None:
    payload = b"model weights " * 1000
    body = botocore_body(payload, algorithm, 4096)
    good = checksum_b64(algorithm, payload)
    wrong = checksum_b64(algorithm, payload[:-1] + b"!")
    assert good.encode() in body
    corrupted = body.replace(good.encode(), wrong.encode())
    trailer_at = corrupted.index(b"0\r\nx-amz-checksum")
    run = Run(unsigned_spec(len(payload), f"x-amz-checksum-{algorithm}"))
    run.feed(corrupted[:trailer_at])
    assert run.released == payload[:-1]
    with pytest.raises(S3Error) as info:
        run.feed(corrupted[trailer_at:])
    assert info.value.code == "BadDigest"
    assert info.value.message == (
        f"The x-amz-checksum-{algorithm} you specified did not match the calculated checksum."
    )
    with pytest.raises(S3Error):
        run.finish()
    assert run.released == payload[:-1]


def test_botocore_client_streaming_upload_decodes_end_to_end() -> None:
    """What botocore actually sends for put_object over HTTPS: parse, verify, spec, decode."""
    client = botocore.session.get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url="https://s3.example.test",
        aws_access_key_id="AKID",
        aws_secret_access_key="SECRET",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    seen: list[Any] = []

    class Stop(Exception):
        pass

    def hook(request: Any, **_: Any) -> None:
        seen.append(request)
        raise Stop

    client.meta.events.register("before-send.s3", hook)
    payload = bytes(range(256)) * 5000
    with pytest.raises(Stop):
        client.put_object(Bucket="b", Key="k", Body=payload, ChecksumAlgorithm="CRC32C")
    (request,) = seen
    headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()]
    head = RequestHead.build("PUT", "/b/k", headers)
    signed = sigv4.parse_auth(head)
    key = sigv4.verify(head, signed, "SECRET", signed.request_time)
    spec = chunked_spec(head, signed, key)
    assert spec is not None and spec.trailer_names == ("x-amz-checksum-crc32c",)
    assert decode(spec, request.body.read(), 65536) == payload


# --- signed bodies from the test encoder --------------------------------------------------------------


def signed_body(
    payload: bytes, sizes: Sequence[int], trailer_algorithm: str | None = None, **kw: Any
) -> bytes:
    trailer = None
    if trailer_algorithm:
        trailer = [(f"x-amz-checksum-{trailer_algorithm}", checksum_b64(trailer_algorithm, payload))]
    chunks = split_payload(payload, sizes)
    return encode_signed(chunks, key=KEY, amz_date=AMZ_DATE, scope=SCOPE, seed=SEED, trailer=trailer, **kw)


@pytest.mark.parametrize("sizes", [[1], [3, 8192], [4096], [16_000, 7]])
@pytest.mark.parametrize("trailer", [None, "crc32", "crc64nvme", "sha256"])
def test_signed_bodies_with_varied_chunk_sizes_decode(sizes: list[int], trailer: str | None) -> None:
    payload = bytes(range(251)) * 80
    spec = signed_spec(len(payload), f"x-amz-checksum-{trailer}" if trailer else None)
    assert decode(spec, signed_body(payload, sizes, trailer), 3001) == payload


def test_signed_empty_payload_decodes() -> None:
    assert decode(signed_spec(0), signed_body(b"", [1])) == b""


def test_bad_chunk_signature_stops_before_that_chunk_is_released() -> None:
    payload = b"A" * 1000 + b"B" * 1000 + b"C" * 1000
    body = bytearray(signed_body(payload, [1000]))
    second_header = body.index(b"B" * 1000) - 66  # the 64 hex digits before "\r\n"
    body[second_header] ^= 0x01
    run = expect_error("SignatureDoesNotMatch", signed_spec(len(payload)), bytes(body), step=500)
    assert run.released == b"A" * 1000


def test_tampered_chunk_data_is_never_released() -> None:
    payload = b"A" * 1000 + b"B" * 1000 + b"C" * 1000
    body = signed_body(payload, [1000]).replace(b"B" * 1000, b"B" * 999 + b"X")
    for step in (10, 999, 1100):
        run = expect_error("SignatureDoesNotMatch", signed_spec(len(payload)), body, step)
        assert run.released == b"A" * 1000


def test_bad_final_chunk_signature_keeps_the_last_byte() -> None:
    payload = b"xyz" * 100
    body = signed_body(payload, [100])
    final = body.rindex(b"0;chunk-signature=") + len(b"0;chunk-signature=")
    forged = body[:final] + b"0" * 64 + body[final + 64 :]
    run = expect_error("SignatureDoesNotMatch", signed_spec(len(payload)), forged, step=50)
    assert run.released == payload[:-1]


def test_chunks_reordered_are_rejected() -> None:
    payload = b"A" * 100 + b"B" * 100
    body = signed_body(payload, [100])
    first, second = body.split(b"\r\n" + b"64;")[0], b"64;" + body.split(b"\r\n" + b"64;")[1]
    swapped = second.split(b"0;chunk")[0] + first + b"\r\n" + b"0;chunk" + second.split(b"0;chunk")[1]
    expect_error("SignatureDoesNotMatch", signed_spec(len(payload)), swapped)


def test_signed_trailer_with_wrong_checksum_is_bad_digest() -> None:
    payload = b"p" * 5000
    body = signed_body(payload, [4096], "crc32")
    right = checksum_b64("crc32", payload).encode()
    run = expect_error(
        "BadDigest",
        signed_spec(len(payload), "x-amz-checksum-crc32"),
        body.replace(right, checksum_b64("crc32", b"other").encode()),
        step=100,
    )
    assert run.released == payload[:-1]


def test_signed_trailer_without_trailer_signature_is_rejected() -> None:
    payload = b"p" * 10
    body = signed_body(payload, [4096], "crc32")
    cut = body.index(b"x-amz-trailer-signature")
    expect_error(
        "MalformedTrailerError", signed_spec(len(payload), "x-amz-checksum-crc32"), body[:cut] + b"\r\n"
    )


def test_trailer_field_after_the_trailer_signature_is_rejected() -> None:
    payload = b"p" * 10
    body = signed_body(payload, [4096], "crc32", final_blank_line=False)
    signature_line = body[body.index(b"x-amz-trailer-signature") :]
    expect_error(
        "MalformedTrailerError", signed_spec(len(payload), "x-amz-checksum-crc32"), body + signature_line
    )


@pytest.mark.parametrize(
    "trailer",
    [
        b"x-amz-checksum-sha256:uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=\r\n\r\n",  # not the declared one
        b"x-amz-checksum-crc32:DUoRhQ==\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n",  # twice
        b"x-amz-meta-injected:1\r\n\r\n",
        b"x-amz-checksum-crc32 DUoRhQ==\r\n\r\n",
        b"\r\n",  # missing
        b"",  # missing, body ends after the final chunk
    ],
)
def test_unsigned_trailer_anomalies_are_rejected(trailer: bytes) -> None:
    run = Run(unsigned_spec(11))
    run.feed(b"b\r\nhello world\r\n0\r\n")
    with pytest.raises(S3Error) as info:
        run.feed(trailer)
        run.finish()
    assert info.value.code in {"MalformedTrailerError", "IncompleteBody"}
    assert run.released == b"hello worl"


def test_unsigned_trailer_example_from_s3_compatible_servers_decodes() -> None:
    run = Run(unsigned_spec(11))
    run.feed(b"b\r\nhello world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n")
    assert run.finish() == b"hello world"


# --- lengths, truncation, framing errors --------------------------------------------------------------


def test_body_shorter_than_decoded_length_is_incomplete() -> None:
    expect_error("IncompleteBody", signed_spec(301), signed_body(b"x" * 300, [100]))


def test_body_longer_than_decoded_length_is_rejected_before_release() -> None:
    run = expect_error("IncompleteBody", signed_spec(250), signed_body(b"x" * 300, [100]))
    assert len(run.released) <= 200


@pytest.mark.parametrize("cut", [1, 50, 90, 150, -3, -1])
def test_truncated_body_is_incomplete_and_keeps_the_last_byte(cut: int) -> None:
    payload = b"y" * 100
    body = signed_body(payload, [64])
    run = Run(signed_spec(100))
    run.feed(body[:cut])
    with pytest.raises(S3Error) as info:
        run.finish()
    assert info.value.code == "IncompleteBody"
    assert len(run.released) < 100


def test_data_after_the_end_is_rejected() -> None:
    body = signed_body(b"z" * 10, [64]) + b"extra"
    run = expect_error("InvalidRequest", signed_spec(10), body)
    assert len(run.released) < 10


@pytest.mark.parametrize(
    "body",
    [
        b"5\r\nhello\r\n0\r\n\r\n",  # unsigned chunk in a signed mode
        b"0x5;chunk-signature=" + b"0" * 64 + b"\r\n",
        b"+5;chunk-signature=" + b"0" * 64 + b"\r\n",
        b" 5;chunk-signature=" + b"0" * 64 + b"\r\n",
        b"5;chunk-signature=" + b"0" * 63 + b"\r\n",
        b"5;chunk-signature=" + b"z" * 64 + b"\r\n",
        b"5;chunk-signature=" + b"0" * 64 + b"\n",  # bare LF
        b"5;signature=" + b"0" * 64 + b"\r\n",
    ],
)
def test_malformed_signed_chunk_headers_are_rejected(body: bytes) -> None:
    with pytest.raises(S3Error) as info:
        ChunkedDecoder(signed_spec(5)).feed(body)
    assert info.value.code == "InvalidRequest"


@pytest.mark.parametrize(
    "body",
    [
        b"b\r\nhello world\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n",
        b"b\nhello world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n",
        b"b\r\nhello world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\n\r\n",
    ],
)
def test_bare_line_feeds_are_rejected(body: bytes) -> None:
    with pytest.raises(S3Error) as info:
        decode(unsigned_spec(11), body)
    assert "CRLF" in info.value.message


def test_chunk_data_longer_than_declared_is_rejected() -> None:
    run = Run(unsigned_spec(10))
    run.feed(b"5\r\nhello")
    with pytest.raises(S3Error):
        run.feed(b"EXTRA\r\n")
    assert run.released == b"hello"


def test_decoder_stays_failed_after_an_error() -> None:
    decoder = ChunkedDecoder(signed_spec(5))
    with pytest.raises(S3Error):
        decoder.feed(b"zz\r\n")
    with pytest.raises(S3Error):
        decoder.feed(b"anything")
    with pytest.raises(S3Error):
        decoder.finish()


# --- bounded memory -----------------------------------------------------------------------------------


def test_endless_chunk_header_is_rejected_once_longer_than_max_line() -> None:
    decoder = ChunkedDecoder(unsigned_spec(10**9), max_line=4096)
    decoder.feed(b"1" * 4000)
    with pytest.raises(S3Error) as info:
        for _ in range(1000):
            decoder.feed(b"1" * 4000)
    assert info.value.code == "InvalidRequest"


def test_endless_chunk_header_in_one_big_feed_is_rejected() -> None:
    with pytest.raises(S3Error):
        ChunkedDecoder(signed_spec(10**9)).feed(b"a" * (32 * 1024 * 1024))


def test_endless_trailer_line_is_rejected() -> None:
    decoder = ChunkedDecoder(unsigned_spec(1), max_line=100)
    decoder.feed(b"1\r\nx\r\n0\r\nx-amz-checksum-crc32:")
    with pytest.raises(S3Error) as info:
        decoder.feed(b"A" * 200)
    assert info.value.code == "MalformedTrailerError"


def test_giant_signed_chunk_size_is_rejected_before_any_data() -> None:
    decoder = ChunkedDecoder(signed_spec(5 * 1024**4), max_chunk_size=16 * 1024 * 1024)
    with pytest.raises(S3Error) as info:
        decoder.feed(b"1000001;chunk-signature=" + b"0" * 64 + b"\r\n")
    assert info.value.code == "InvalidRequest"


@pytest.mark.parametrize("size", [b"ffffffffffffffff", b"1" * 17, b"10000000000"])
def test_giant_unsigned_chunk_size_is_rejected(size: bytes) -> None:
    with pytest.raises(S3Error):
        ChunkedDecoder(unsigned_spec(100)).feed(size + b"\r\n")


def test_streaming_a_large_unsigned_body_uses_little_memory() -> None:
    piece = bytes(range(256)) * 4096  # 1 MiB
    total = 48
    checksum = new_checksum("crc32")
    for _ in range(total):
        checksum.update(piece)
    decoder = ChunkedDecoder(unsigned_spec(total * len(piece)))
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    tracemalloc.start()
    try:
        released = 0
        for _ in range(total):
            released += sum(len(p) for p in decoder.feed(chunk))
        released += sum(
            len(p)
            for p in decoder.feed(b"0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % checksum.b64digest().encode())
        )
        released += sum(len(p) for p in decoder.finish())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert released == total * len(piece)
    assert peak < 4 * len(piece), peak


def test_signed_chunks_are_held_at_most_one_chunk_at_a_time() -> None:
    payload = bytes(range(256)) * 4096 * 8  # 8 MiB in 1 MiB chunks
    body = signed_body(payload, [1024 * 1024])
    decoder = ChunkedDecoder(signed_spec(len(payload)))
    tracemalloc.start()
    try:
        for start in range(0, len(body), 256 * 1024):
            decoder.feed(body[start : start + 256 * 1024])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * 1024 * 1024, peak
    assert len(decoder.finish()) == 1


# --- chunked_spec -------------------------------------------------------------------------------------


def spec_head(mode: str, **headers: str) -> tuple[RequestHead, sigv4.SignedRequest]:
    pairs = [("Host", "h"), ("x-amz-content-sha256", mode), ("x-amz-date", AMZ_DATE)]
    pairs += [(k.replace("_", "-"), v) for k, v in headers.items()]
    pairs.append(
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, "
            f"Signature={SEED}",
        )
    )
    head = RequestHead.build("PUT", "/b/k", pairs)
    return head, sigv4.parse_auth(head)


def test_spec_is_none_for_plain_payloads() -> None:
    for mode in (sigv4.UNSIGNED_PAYLOAD, sigv4.EMPTY_SHA256):
        assert chunked_spec(*spec_head(mode), KEY) is None


def test_spec_for_signed_streaming_carries_the_chain_start() -> None:
    spec = chunked_spec(*spec_head(sigv4.STREAMING_SIGNED, x_amz_decoded_content_length="42"), KEY)
    assert spec == ChunkedSpec(sigv4.STREAMING_SIGNED, 42, (), KEY, SEED, AMZ_DATE, SCOPE)


def test_spec_for_unsigned_trailer_needs_no_key_and_tolerates_missing_content_encoding() -> None:
    head, signed = spec_head(
        sigv4.STREAMING_UNSIGNED_TRAILER,
        x_amz_decoded_content_length="0",
        x_amz_trailer="X-Amz-Checksum-CRC64NVME",
    )
    assert chunked_spec(head, signed, KEY) == ChunkedSpec(
        sigv4.STREAMING_UNSIGNED_TRAILER, 0, ("x-amz-checksum-crc64nvme",)
    )


@pytest.mark.parametrize(
    ("mode", "headers", "code", "status"),
    [
        (sigv4.STREAMING_SIGNED, {}, "MissingContentLength", 411),
        (sigv4.STREAMING_SIGNED, {"x_amz_decoded_content_length": "-1"}, "InvalidArgument", 400),
        (sigv4.STREAMING_SIGNED, {"x_amz_decoded_content_length": "1e3"}, "InvalidArgument", 400),
        (sigv4.STREAMING_SIGNED, {"x_amz_decoded_content_length": "٣"}, "InvalidArgument", 400),
        (
            sigv4.STREAMING_SIGNED,
            {"x_amz_decoded_content_length": str(5 * 1024**4 + 1)},
            "EntityTooLarge",
            400,
        ),
        (
            sigv4.STREAMING_SIGNED,
            {"x_amz_decoded_content_length": "1", "x_amz_trailer": "x-amz-checksum-crc32"},
            "InvalidArgument",
            400,
        ),
        (sigv4.STREAMING_SIGNED_TRAILER, {"x_amz_decoded_content_length": "1"}, "InvalidRequest", 400),
        (sigv4.STREAMING_UNSIGNED_TRAILER, {"x_amz_decoded_content_length": "1"}, "InvalidRequest", 400),
        (
            sigv4.STREAMING_UNSIGNED_TRAILER,
            {
                "x_amz_decoded_content_length": "1",
                "x_amz_trailer": "x-amz-checksum-crc32,x-amz-checksum-sha1",
            },
            "InvalidArgument",
            400,
        ),
        (
            sigv4.STREAMING_UNSIGNED_TRAILER,
            {"x_amz_decoded_content_length": "1", "x_amz_trailer": "x-amz-checksum-md5"},
            "InvalidArgument",
            400,
        ),
        (
            sigv4.STREAMING_UNSIGNED_TRAILER,
            {"x_amz_decoded_content_length": "1", "x_amz_trailer": "x-amz-meta-a"},
            "InvalidArgument",
            400,
        ),
    ],
)
def test_spec_rejects_invalid_headers(mode: str, headers: dict[str, str], code: str, status: int) -> None:
    with pytest.raises(S3Error) as info:
        chunked_spec(*spec_head(mode, **headers), KEY)
    assert (info.value.code, info.value.status) == (code, status)


def test_spec_accepts_exactly_five_tib() -> None:
    spec = chunked_spec(
        *spec_head(sigv4.STREAMING_SIGNED, x_amz_decoded_content_length=str(5 * 1024**4)), KEY
    )
    assert spec is not None and spec.decoded_length == 5 * 1024**4


# --- properties ---------------------------------------------------------------------------------------

_modes = st.sampled_from(["signed", "signed-crc32c", "signed-sha1", "unsigned-crc32", "unsigned-crc64nvme"])


def build(mode: str, payload: bytes, sizes: list[int]) -> tuple[ChunkedSpec, bytes]:
    if mode == "signed":
        return signed_spec(len(payload)), signed_body(payload, sizes)
    kind, algorithm = mode.split("-")
    name = f"x-amz-checksum-{algorithm}"
    if kind == "signed":
        return signed_spec(len(payload), name), signed_body(payload, sizes, algorithm)
    trailer = [(name, checksum_b64(algorithm, payload))]
    return unsigned_spec(len(payload), name), encode_unsigned(split_payload(payload, sizes), trailer)


_payloads = st.binary(max_size=3000)
_sizes = st.lists(st.integers(1, 1500), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_modes, _payloads, _sizes, st.lists(st.integers(0, 6000), max_size=30))
def test_any_split_of_a_valid_body_decodes_identically(
    mode: str, payload: bytes, sizes: list[int], cuts: list[int]
) -> None:
    spec, body = build(mode, payload, sizes)
    run = Run(spec)
    run.feed_split(body, [c for c in cuts if c <= len(body)])
    assert len(run.released) == max(len(payload) - 1, 0)  # the last byte waits for finish()
    assert run.finish() == payload
    assert run.decoder.decoded_bytes == len(payload)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_modes, st.binary(min_size=1, max_size=600), _sizes, st.data())
def test_a_single_corrupted_byte_never_yields_a_different_payload(
    mode: str, payload: bytes, sizes: list[int], data: st.DataObject
) -> None:
    spec, body = build(mode, payload, sizes)
    position = data.draw(st.integers(0, len(body) - 1))
    replacement = data.draw(st.integers(0, 255).filter(lambda b: b != body[position]))
    corrupted = body[:position] + bytes([replacement]) + body[position + 1 :]
    run = Run(spec)
    try:
        run.feed(corrupted)
        result = run.finish()
    except S3Error:
        assert len(run.released) < len(payload)  # the upstream upload cannot complete
        if mode.startswith("signed"):  # only verified chunks are released
            assert bytes(run.released) == payload[: len(run.released)]
    else:
        assert result == payload  # e.g. a hex digit's case flipped


@settings(max_examples=500, deadline=None)
@given(_modes, st.binary(max_size=2000), st.integers(0, 5000), st.lists(st.integers(0, 2000), max_size=10))
def test_random_input_only_ever_raises_s3_errors(
    mode: str, junk: bytes, length: int, cuts: list[int]
) -> None:
    spec, _ = build(mode, b"\0" * length, [4096])
    run = Run(spec, max_chunk_size=4096, max_line=256)
    try:
        run.feed_split(junk, [c for c in cuts if c <= len(junk)])
        run.finish()
    except S3Error:
        pass
    assert len(run.decoder._line) <= 257
    assert len(run.released) <= length


@settings(max_examples=200, deadline=None)
@given(_modes, _payloads, _sizes, st.binary(min_size=1, max_size=50))
def test_garbage_after_a_valid_body_is_rejected_and_last_byte_kept(
    mode: str, payload: bytes, sizes: list[int], garbage: bytes
) -> None:
    spec, body = build(mode, payload, sizes)
    run = Run(spec)
    run.feed(body)
    with pytest.raises(S3Error):
        run.feed(garbage)
        run.finish()
    assert len(run.released) == max(len(payload) - 1, 0)
