"""pyarrow's S3 filesystem (the AWS C++ SDK) against the real gateway: parquet in and out under a grant.

Even over plain HTTP the C++ SDK uploads every part as STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC64NVME
trailer, HTTP chunked with Expect: 100-continue; and it HEADs before it reads.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs
from support.world import BUCKET, Identity, World

# How the C++ SDK words a refusal: the error code when there is a body, the enum name for HEAD.
DENIED = r"ACCESS_DENIED|AccessDenied"


def filesystem(world: World, who: Identity, tls: bool) -> fs.S3FileSystem:
    gateway = world.https if tls else world.http
    url = urlsplit(gateway.s3_url)
    return fs.S3FileSystem(
        access_key=who.access_key_id,
        secret_key=who.secret_access_key,
        region="us-east-1",
        scheme=url.scheme,
        endpoint_override=url.netloc,
        tls_ca_file_path=str(world.ca_bundle) if tls else None,
        retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=1),
        connect_timeout=5,
        request_timeout=30,
    )


def table(rows: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "text": pa.array([f"row-{i}-{secrets.token_hex(8)}" for i in range(rows)]),
            "score": pa.array([i / 7 for i in range(rows)], pa.float64()),
        }
    )


def test_parquet_written_under_grant_reads_back_identical(world: World, unique: str, tls: bool) -> None:
    wren = world.person(f"wren-{unique}-{int(tls)}")
    world.grant(wren, f"s3://{BUCKET}/lake/{unique}/", "read,list,write")
    s3 = filesystem(world, wren, tls)
    data = table(200_000)  # several MiB: more than one upload part's worth of buffered data
    path = f"{BUCKET}/lake/{unique}/part-0.parquet"

    pq.write_table(data, path, filesystem=s3)

    assert pq.read_table(path, filesystem=s3).equals(data)
    stored = world.upstream().get_object(Bucket=BUCKET, Key=f"lake/{unique}/part-0.parquet")["Body"].read()
    assert pq.read_table(pa.BufferReader(stored)).equals(data)
    with s3.open_input_file(path) as f:
        assert f.size() == len(stored)
        f.seek(len(stored) - 4)
        assert f.read(4) == b"PAR1"


def test_file_info_and_listing_under_the_prefix(world: World, unique: str, tls: bool) -> None:
    xavi = world.person(f"xavi-{unique}-{int(tls)}")
    world.grant(xavi, f"s3://{BUCKET}/lake/{unique}/", "read,list,write")
    s3 = filesystem(world, xavi, tls)
    for name in ("a.parquet", "b.parquet", "nested/c.parquet"):
        pq.write_table(table(10), f"{BUCKET}/lake/{unique}/{name}", filesystem=s3)

    info = s3.get_file_info(f"{BUCKET}/lake/{unique}/a.parquet")
    assert info.type == fs.FileType.File
    assert (
        info.size
        == world.upstream().head_object(Bucket=BUCKET, Key=f"lake/{unique}/a.parquet")["ContentLength"]
    )
    assert s3.get_file_info(f"{BUCKET}/lake/{unique}/nested").type == fs.FileType.Directory
    assert s3.get_file_info(f"{BUCKET}/lake/{unique}/missing.parquet").type == fs.FileType.NotFound

    flat = s3.get_file_info(fs.FileSelector(f"{BUCKET}/lake/{unique}"))
    assert sorted((i.base_name, i.type) for i in flat) == [
        ("a.parquet", fs.FileType.File),
        ("b.parquet", fs.FileType.File),
        ("nested", fs.FileType.Directory),
    ]
    deep = s3.get_file_info(fs.FileSelector(f"{BUCKET}/lake/{unique}", recursive=True))
    assert sorted(i.path for i in deep if i.type == fs.FileType.File) == [
        f"{BUCKET}/lake/{unique}/a.parquet",
        f"{BUCKET}/lake/{unique}/b.parquet",
        f"{BUCKET}/lake/{unique}/nested/c.parquet",
    ]
    files = sorted(i.path for i in deep if i.type == fs.FileType.File)
    assert pq.ParquetDataset(files, filesystem=s3).read().num_rows == 30


def test_dataset_opened_by_its_granted_directory(world: World, unique: str) -> None:
    zoe = world.person(f"zoe-{unique}")
    world.grant(zoe, f"s3://{BUCKET}/lake/{unique}/", "read,list,write")
    s3 = filesystem(world, zoe, tls=False)
    pq.write_table(table(10), f"{BUCKET}/lake/{unique}/a.parquet", filesystem=s3)
    assert pq.read_table(f"{BUCKET}/lake/{unique}", filesystem=s3).num_rows == 10


def test_outside_the_prefix_is_denied(world: World, unique: str, tls: bool) -> None:
    yara = world.person(f"yara-{unique}-{int(tls)}")
    world.grant(yara, f"s3://{BUCKET}/lake/{unique}/", "read,list,write")
    secret = f"private/{unique}/salaries.parquet"
    sink = pa.BufferOutputStream()
    pq.write_table(table(5), sink)
    world.upstream().put_object(Bucket=BUCKET, Key=secret, Body=sink.getvalue().to_pybytes())
    s3 = filesystem(world, yara, tls)

    with pytest.raises(OSError, match=DENIED):
        pq.read_table(f"{BUCKET}/{secret}", filesystem=s3)
    with pytest.raises(OSError, match=DENIED):
        s3.get_file_info(fs.FileSelector(f"{BUCKET}/private/{unique}"))
    with pytest.raises(OSError, match=DENIED):
        pq.write_table(table(5), f"{BUCKET}/private/{unique}/planted.parquet", filesystem=s3)
    upstream = world.upstream().list_objects_v2(Bucket=BUCKET, Prefix=f"private/{unique}/")
    assert [o["Key"] for o in upstream["Contents"]] == [secret]
