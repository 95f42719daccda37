"""S3 flexible checksums: standard check values, botocore agreement, incremental updates, header names."""

from __future__ import annotations

import base64
import io

import pytest
from botocore import httpchecksum
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import S3Error
from proxy.s3.checksums import ALGORITHMS, algorithm_for_header, checksum_header_name, new_checksum

# The catalogued CRC "check" values (CRC of b"123456789") and the FIPS digests of the same input.
CHECK_VALUES = {
    "CRC32": (0xCBF43926).to_bytes(4, "big"),
    "CRC32C": (0xE3069283).to_bytes(4, "big"),
    "CRC64NVME": (0xAE8B14860A799888).to_bytes(8, "big"),
    "SHA1": bytes.fromhex("f7c3bc1d808e04732adf679965ccc34ca7ae3441"),
    "SHA256": bytes.fromhex("15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225"),
}

BOTOCORE = {
    "CRC32": httpchecksum.Crc32Checksum,
    "CRC32C": httpchecksum.CrtCrc32cChecksum,
    "CRC64NVME": httpchecksum.CrtCrc64NvmeChecksum,
    "SHA1": httpchecksum.Sha1Checksum,
    "SHA256": httpchecksum.Sha256Checksum,
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_check_value_of_123456789(algorithm: str) -> None:
    checksum = new_checksum(algorithm)
    checksum.update(b"123456789")
    assert checksum.digest() == CHECK_VALUES[algorithm]
    assert checksum.b64digest() == base64.b64encode(CHECK_VALUES[algorithm]).decode()


def test_documented_crc32c_of_the_chunked_upload_example() -> None:
    # AWS's trailing-checksum example: 66560 bytes of 'a' carry x-amz-checksum-crc32c:sOO8/Q==.
    checksum = new_checksum("crc32c")
    checksum.update(b"a" * 66560)
    assert checksum.b64digest() == "sOO8/Q=="


def test_empty_input_digests() -> None:
    assert new_checksum("CRC32").b64digest() == "AAAAAA=="
    assert new_checksum("CRC64NVME").b64digest() == "AAAAAAAAAAA="
    assert new_checksum("SHA256").b64digest() == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(ALGORITHMS),
    st.binary(max_size=5000),
    st.lists(st.integers(0, 5000), max_size=8),
)
def test_incremental_updates_match_botocore_over_the_whole_input(
    algorithm: str, data: bytes, cuts: list[int]
) -> None:
    checksum = new_checksum(algorithm)
    last = 0
    for cut in sorted({c for c in cuts if c <= len(data)}):
        checksum.update(memoryview(data)[last:cut])  # the decoder feeds memoryviews
        last = cut
    checksum.update(data[last:])
    assert checksum.b64digest() == BOTOCORE[algorithm]().handle(io.BytesIO(data))


@pytest.mark.parametrize("name", ["crc32", "Crc32C", "CRC64NVME", "sha1", "sha256"])
def test_algorithm_names_are_case_insensitive(name: str) -> None:
    lower, upper = new_checksum(name.lower()), new_checksum(name.upper())
    lower.update(b"x")
    upper.update(b"x")
    assert lower.digest() == upper.digest()


@pytest.mark.parametrize("name", ["MD5", "xxhash64", "", "crc"])
def test_unknown_algorithm_is_an_invalid_request(name: str) -> None:
    with pytest.raises(S3Error) as info:
        new_checksum(name)
    assert (info.value.code, info.value.status) == ("InvalidRequest", 400)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_header_names_round_trip(algorithm: str) -> None:
    name = checksum_header_name(algorithm.lower())
    assert name == "x-amz-checksum-" + algorithm.lower()
    assert algorithm_for_header(name) == algorithm
    assert algorithm_for_header(name.upper()) == algorithm


@pytest.mark.parametrize(
    "name",
    ["x-amz-checksum-md5", "x-amz-checksum-", "x-amz-checksum-mode", "content-md5", "x-amz-meta-crc32"],
)
def test_other_headers_are_not_checksums(name: str) -> None:
    assert algorithm_for_header(name) is None


def test_header_name_of_unknown_algorithm_is_rejected() -> None:
    with pytest.raises(S3Error):
        checksum_header_name("md5")
