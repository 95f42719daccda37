"""Bucket and key resolution: decoding once, refusing unsafe names, virtual hosts, copy sources."""

from __future__ import annotations

import pytest
from botocore.handlers import _quote_source_header_from_dict
from botocore.utils import percent_encode
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import S3Error
from proxy.s3.addressing import (
    MAX_KEY_BYTES,
    Address,
    decode_key,
    object_path,
    parse_copy_source,
    resolve,
    validate_bucket,
    validate_key,
)
from proxy.s3.request import RequestHead

BASE = "s3.test.local"


def head(path: str, host: str = "localhost:9000") -> RequestHead:
    return RequestHead.build("GET", path, [("Host", host)])


def error_code(fn: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(S3Error) as err:
        fn(*args, **kwargs)  # type: ignore[operator]
    assert err.value.status == 400
    return err.value.code


# --- path style ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "bucket", "key"),
    [
        ("/", None, None),
        ("/data-bucket", "data-bucket", None),
        ("/data-bucket/", "data-bucket", None),
        ("/data-bucket/a", "data-bucket", "a"),
        ("/data-bucket/a/b/c.bin", "data-bucket", "a/b/c.bin"),
        ("/data-bucket//a", "data-bucket", "/a"),  # only ONE slash separates bucket and key
        ("/data-bucket/a//b/", "data-bucket", "a//b/"),
        ("/data-bucket/a%2Fb", "data-bucket", "a/b"),
        ("/data-bucket/a%252Fb", "data-bucket", "a%2Fb"),  # decoded once: the text %2F stays
        ("/data-bucket/a+b", "data-bucket", "a+b"),  # '+' is not a space in a path
        ("/data-bucket/a%20b", "data-bucket", "a b"),
        ("/data-bucket/%C3%BCber", "data-bucket", "über"),
        ("/data-bucket/u\u0308ber", "data-bucket", "u\u0308ber"),  # no unicode normalisation
        ("/data-bucket/a./b..", "data-bucket", "a./b.."),  # trailing dots are not dot segments
        ("/data-bucket/.../....", "data-bucket", ".../...."),
        ("/data-bucket/.hidden/x", "data-bucket", ".hidden/x"),
        ("/data-bucket/a%3Fb%23c", "data-bucket", "a?b#c"),
        ("/%64ata-bucket/k", "data-bucket", "k"),
        ("/my.dotted.bucket/k", "my.dotted.bucket", "k"),
    ],
)
def test_path_style_takes_the_first_segment_as_bucket_and_the_rest_as_key(
    path: str, bucket: str | None, key: str | None
) -> None:
    assert resolve(head(path)) == Address(bucket, key, virtual_host=False)


@pytest.mark.parametrize(
    "path",
    [
        "/b/a/../secret",
        "/b/..",
        "/b/../x",
        "/b/.",
        "/b/./x",
        "/b/a/.",
        "/b/a/%2e%2e/secret",
        "/b/a/%2E/x",
        "/b/a%2F..%2Fsecret",
        "/b/a\\..\\secret",
        "/b/a%5C..%5Csecret",
        "/b/a%00b",
        "/b/a%0Ab",
        "/b/a%0Db",
        "/b/a%1Fb",
        "/b/a\tb",
    ],
)
def test_dot_segments_and_control_characters_are_refused(path: str) -> None:
    assert error_code(resolve, head(path.replace("/b/", "/data-bucket/", 1))) == "InvalidArgument"


@pytest.mark.parametrize(
    "path",
    [
        "/data-bucket/%",
        "/data-bucket/a%2",
        "/data-bucket/a%zz",
        "/data-bucket/a%%41",
        "/data-bucket/%FF",  # not UTF-8
        "/data-bucket/%C3",  # truncated sequence
        "/data-bucket/%C0%AF",  # overlong '/'
        "/data-bucket/%E0%80%AE",  # overlong '.'
        "/data-bucket/%ED%A0%80",  # surrogate
        "/data-bucket/\udcff",  # undecodable raw byte as surrogateescape
        "data-bucket/k",  # not an origin-form path
        "",
    ],
)
def test_invalid_percent_encoding_or_utf8_is_invalid_uri(path: str) -> None:
    assert error_code(resolve, head(path)) == "InvalidURI"


def test_key_length_is_counted_in_utf8_bytes() -> None:
    assert decode_key("a" * MAX_KEY_BYTES) == "a" * MAX_KEY_BYTES
    assert decode_key("%C3%A9" * (MAX_KEY_BYTES // 2)) == "é" * (MAX_KEY_BYTES // 2)
    assert error_code(decode_key, "a" * (MAX_KEY_BYTES + 1)) == "KeyTooLongError"
    assert error_code(decode_key, "%C3%A9" * (MAX_KEY_BYTES // 2) + "a") == "KeyTooLongError"


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "Data-Bucket",
        "data_bucket",
        "-data",
        "data-",
        ".data",
        "data.",
        "da..ta",
        "192.168.1.1",
        "10.0.0.255",
        "dàta",
        "data bucket",
        "data/bucket",
        "data\nbucket",
        "data-bucket\n",
        "arn:aws:s3",
        "",
    ],
)
def test_bucket_names_outside_s3_rules_are_refused(name: str) -> None:
    assert error_code(validate_bucket, name) == "InvalidBucketName"


@pytest.mark.parametrize("name", ["abc", "a" * 63, "data-bucket", "my.dotted.bucket", "1-2", "192.168.1.1a"])
def test_bucket_names_within_s3_rules_are_kept(name: str) -> None:
    assert validate_bucket(name) == name


@pytest.mark.parametrize(
    "path", ["/Data-Bucket/k", "/data_bucket/k", "/data-bucket%2Fk", "//k", "//", "/ab/k"]
)
def test_invalid_bucket_in_path_is_invalid_bucket_name(path: str) -> None:
    assert error_code(resolve, head(path)) == "InvalidBucketName"


# --- virtual hosted -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        (f"data-bucket.{BASE}", "/k", Address("data-bucket", "k", True)),
        (f"data-bucket.{BASE}:9000", "/a/b", Address("data-bucket", "a/b", True)),
        ("Data-Bucket.S3.TEST.local:9000", "/k", Address("data-bucket", "k", True)),
        (f"data-bucket.{BASE}.", "/k", Address("data-bucket", "k", True)),
        (f"my.dotted.bucket.{BASE}", "/k", Address("my.dotted.bucket", "k", True)),
        (f"data-bucket.{BASE}", "/", Address("data-bucket", None, True)),
        (f"data-bucket.{BASE}", "//", Address("data-bucket", "/", True)),
        # The whole path is the key: a bucket name in it is just the first key segment.
        (f"data-bucket.{BASE}", "/other-bucket/secret", Address("data-bucket", "other-bucket/secret", True)),
        (f"data-bucket.{BASE}", "/other-bucket/", Address("data-bucket", "other-bucket/", True)),
        (f"data-bucket.{BASE}", "/a%2Fb", Address("data-bucket", "a/b", True)),
        # Anything that is not <bucket>.<base> stays path style.
        (BASE, "/data-bucket/k", Address("data-bucket", "k", False)),
        (f"{BASE}:9000", "/", Address(None, None, False)),
        ("localhost:9000", "/data-bucket/k", Address("data-bucket", "k", False)),
        ("127.0.0.1:9000", "/data-bucket/k", Address("data-bucket", "k", False)),
        ("[::1]:9000", "/data-bucket/k", Address("data-bucket", "k", False)),
        (f"evil{BASE}", "/data-bucket/k", Address("data-bucket", "k", False)),
        (f"data-bucket.{BASE}.evil.example", "/other/k", Address("other", "k", False)),
        ("", "/data-bucket/k", Address("data-bucket", "k", False)),
    ],
)
def test_virtual_host_bucket_comes_from_the_host(host: str, path: str, expected: Address) -> None:
    assert resolve(head(path, host), virtual_host_base=BASE) == expected


def test_without_a_base_every_host_is_path_style() -> None:
    assert resolve(head("/other/k", f"data-bucket.{BASE}")) == Address("other", "k", False)


def test_base_given_with_port_or_capitals_still_matches() -> None:
    got = resolve(head("/k", f"data-bucket.{BASE}:9000"), virtual_host_base="S3.Test.Local:9000")
    assert got == Address("data-bucket", "k", True)


def test_explicit_host_overrides_the_host_header() -> None:
    got = resolve(head("/k", f"data-bucket.{BASE}"), virtual_host_base=BASE, host=f"other-bucket.{BASE}")
    assert got == Address("other-bucket", "k", True)


@pytest.mark.parametrize(
    "host", [f"-bad.{BASE}", f"a..b.{BASE}", f"UPPER_CASE.{BASE}", f"x.{BASE}", f".{BASE}"]
)
def test_invalid_bucket_in_virtual_host_is_invalid_bucket_name(host: str) -> None:
    assert error_code(resolve, head("/k", host), virtual_host_base=BASE) == "InvalidBucketName"


def test_virtual_host_keys_get_the_same_safety_checks() -> None:
    assert (
        error_code(resolve, head("/a/../b", f"data-bucket.{BASE}"), virtual_host_base=BASE)
        == "InvalidArgument"
    )


# --- copy source --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("src-bucket/a/b.bin", ("src-bucket", "a/b.bin", None)),
        ("/src-bucket/a/b.bin", ("src-bucket", "a/b.bin", None)),
        ("src-bucket/a%20b%2Bc", ("src-bucket", "a b+c", None)),
        ("src-bucket/a%2Fb", ("src-bucket", "a/b", None)),
        ("src-bucket/a%252Fb", ("src-bucket", "a%2Fb", None)),
        ("src-bucket//lead", ("src-bucket", "/lead", None)),
        ("src-bucket/k%3FversionId%3Dx", ("src-bucket", "k?versionId=x", None)),
        ("src-bucket/k?versionId=abc", ("src-bucket", "k", "abc")),
        ("src-bucket/k?versionId=3%2FL4k", ("src-bucket", "k", "3/L4k")),
        ("src-bucket/k?versionId=3/L4k+x", ("src-bucket", "k", "3/L4k+x")),
        ("%73rc-bucket/k", ("src-bucket", "k", None)),
    ],
)
def test_copy_source_is_split_then_decoded_once(value: str, expected: tuple[str, str, str | None]) -> None:
    assert parse_copy_source(value) == expected


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("src-bucket", "InvalidArgument"),
        ("src-bucket/", "InvalidArgument"),
        ("/src-bucket", "InvalidArgument"),
        ("", "InvalidArgument"),
        ("src-bucket/a/../secret", "InvalidArgument"),
        ("src-bucket/a/%2E%2E/secret", "InvalidArgument"),
        ("src-bucket/a%00", "InvalidArgument"),
        ("src-bucket/a+b", "InvalidArgument"),  # S3 may read '+' as a space here: ambiguous
        ("src-bucket/k?versionId=", "InvalidArgument"),
        ("src-bucket/k?partNumber=1", "InvalidArgument"),
        ("src-bucket/k?versionId=a&x=b", "InvalidArgument"),
        ("arn:aws:s3:us-east-1:123456789012:accesspoint/ap/object/k", "InvalidArgument"),
        ("/arn:aws:s3:us-east-1:123456789012:accesspoint/ap/object/k", "InvalidArgument"),
        ("arn%3Aaws%3As3%3Aus-east-1%3A123456789012%3Aaccesspoint/ap/object/k", "InvalidArgument"),
        ("src%2Fbucket/k", "InvalidBucketName"),  # an encoded slash never moves the bucket boundary
        ("Src-Bucket/k", "InvalidBucketName"),
        ("//src-bucket/k", "InvalidBucketName"),
        ("src-bucket/%FF", "InvalidURI"),
        ("src-bucket/%zz", "InvalidURI"),
    ],
)
def test_bad_copy_sources_are_refused(value: str, code: str) -> None:
    assert error_code(parse_copy_source, value) == code


_SAFE_KEYS = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=80).filter(
    lambda k: all(s not in (".", "..") for s in k.replace("\\", "/").split("/"))
)


@settings(max_examples=300)
@given(key=_SAFE_KEYS, version=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9._]{1,32}", fullmatch=True)))
def test_copy_source_botocore_encodes_parses_back_to_the_same_object(key: str, version: str | None) -> None:
    source = {"Bucket": "src-bucket", "Key": key} | ({"VersionId": version} if version else {})
    assert parse_copy_source(_quote_source_header_from_dict(source)) == ("src-bucket", key, version)


# --- object_path --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("a/b.bin", "/data-bucket/a/b.bin"),
        ("a b+c", "/data-bucket/a%20b%2Bc"),
        ("ü~_-.", "/data-bucket/%C3%BC~_-."),
        ("a%2Fb", "/data-bucket/a%252Fb"),
        ("a?b#c&d=e;f", "/data-bucket/a%3Fb%23c%26d%3De%3Bf"),
        ("/lead//x/", "/data-bucket//lead//x/"),
        ("*'()!$@:,", "/data-bucket/%2A%27%28%29%21%24%40%3A%2C"),
    ],
)
def test_object_path_uses_aws_uri_encoding(key: str, path: str) -> None:
    assert object_path("data-bucket", key) == path


@settings(max_examples=300)
@given(key=_SAFE_KEYS)
def test_object_path_matches_botocore_and_resolves_back_to_the_key(key: str) -> None:
    path = object_path("data-bucket", key)
    assert path == "/data-bucket/" + percent_encode(key, safe="/~")
    assert resolve(head(path)) == Address("data-bucket", key, virtual_host=False)


@settings(max_examples=500)
@given(raw=st.text(max_size=50))
def test_decode_key_raises_only_s3_errors_and_returns_valid_keys(raw: str) -> None:
    try:
        key = decode_key(raw)
    except S3Error:
        return
    assert validate_key(key) == key
    assert len(key.encode()) <= MAX_KEY_BYTES


@settings(max_examples=1000)
@given(key=st.text(st.sampled_from("./\\a\x00\x1f \x7fé"), min_size=1, max_size=12))
def test_validate_key_refuses_exactly_control_characters_and_dot_segments(key: str) -> None:
    """The checks, done by regular expressions, against their plain definitions."""
    segments = key.replace("\\", "/").split("/")
    refused = any(c < " " for c in key) or any(s in (".", "..") for s in segments)
    try:
        validate_key(key)
    except S3Error as err:
        assert refused, err
        assert err.code == "InvalidArgument"
    else:
        assert not refused
