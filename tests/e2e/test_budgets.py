"""Byte budgets and read-once grants, through the real gateway with boto3: the download in flight is cut
at the limit (the client sees an error, never a clean short object), the next read is refused with
AccessDenied saying the budget is spent, and ranged parallel reads count once per byte."""

from __future__ import annotations

import io
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError, IncompleteReadError, ResponseStreamingError
from support.awscli import cli_for
from support.world import BUCKET, World
from urllib3.exceptions import ProtocolError

from proxy.access.budgets import Budget

MiB = 1024 * 1024
CUT = (IncompleteReadError, ResponseStreamingError, ProtocolError, ConnectionError)


def _put(world: World, key: str, size: int) -> bytes:
    data = secrets.token_bytes(size)
    world.upstream().put_object(Bucket=BUCKET, Key=key, Body=data)
    return data


def _denied(exc: pytest.ExceptionInfo[ClientError]) -> str:
    assert exc.value.response["Error"]["Code"] == "AccessDenied"
    return str(exc.value.response["Error"]["Message"])


def test_download_past_the_byte_budget_is_cut_at_the_limit_and_the_next_read_refused(
    world: World, unique: str
) -> None:
    who = world.person(f"budget-{unique}")
    prefix = f"budget-{unique}/"
    data = _put(world, prefix + "weights.bin", 12 * MiB)
    limit = 10 * MiB + 12345  # more than one slice, less than the object
    grant = world.grant(who, f"s3://{BUCKET}/{prefix}", "read", budget=Budget(max_bytes=limit))
    s3 = world.client(who)

    body = s3.get_object(Bucket=BUCKET, Key=prefix + "weights.bin")["Body"]
    received = bytearray()
    with pytest.raises(CUT):
        while chunk := body.read(256 * 1024):
            received += chunk
    assert len(received) == limit  # exactly what the budget paid for, then an error
    assert bytes(received) == data[: len(received)]
    assert world.usage(grant).bytes == limit  # every byte the budget allowed left, and no more

    world.sync()  # the grant was marked spent: every gateway reloads it
    with pytest.raises(ClientError) as refused:
        s3.get_object(Bucket=BUCKET, Key=prefix + "weights.bin")
    message = _denied(refused)
    assert "budget" in message and "spent" in message
    assert "/request?" in message and prefix in message


def test_single_use_grant_serves_one_full_read_and_refuses_the_second(world: World, unique: str) -> None:
    who = world.person(f"once-{unique}")
    prefix = f"once-{unique}/"
    data = _put(world, prefix + "model.safetensors", 3 * MiB)
    grant = world.grant(who, f"s3://{BUCKET}/{prefix}", "read", budget=Budget(single_use=True))
    s3 = world.client(who)

    assert s3.get_object(Bucket=BUCKET, Key=prefix + "model.safetensors")["Body"].read() == data
    with pytest.raises(ClientError) as refused:
        s3.get_object(Bucket=BUCKET, Key=prefix + "model.safetensors")
    assert "single-use" in _denied(refused)
    # Not even a piece of it, by range.
    with pytest.raises(ClientError) as piece:
        s3.get_object(Bucket=BUCKET, Key=prefix + "model.safetensors", Range="bytes=100-199")
    _denied(piece)
    assert world.usage(grant).bytes == len(data)
    assert world.usage(grant).objects == 1


def test_ranged_parallel_download_counts_each_byte_once(world: World, unique: str) -> None:
    """s5cmd and the aws cli fetch big objects as parallel ranges: one full pass under a single-use
    grant works, counts the object's size exactly, and a second pass is refused."""
    who = world.person(f"ranges-{unique}")
    prefix = f"ranges-{unique}/"
    data = _put(world, prefix + "shard.bin", 9 * MiB + 7)
    grant = world.grant(who, f"s3://{BUCKET}/{prefix}", "read", budget=Budget(single_use=True))
    s3 = world.client(who)
    config = TransferConfig(multipart_threshold=MiB, multipart_chunksize=MiB, max_concurrency=4)

    out = io.BytesIO()
    s3.download_fileobj(BUCKET, prefix + "shard.bin", out, Config=config)
    assert out.getvalue() == data
    assert world.usage(grant).bytes == len(data)

    def again(start: int) -> str:
        try:
            s3.get_object(Bucket=BUCKET, Key=prefix + "shard.bin", Range=f"bytes={start}-{start + MiB - 1}")
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return "served"

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(again, range(0, 8 * MiB, 2 * MiB))) == {"AccessDenied"}
    assert world.usage(grant).bytes == len(data)


def test_max_objects_counts_distinct_objects_not_reads(world: World, unique: str) -> None:
    who = world.person(f"objects-{unique}")
    prefix = f"objects-{unique}/"
    first = _put(world, prefix + "a.bin", 1000)
    _put(world, prefix + "b.bin", 1000)
    grant = world.grant(who, f"s3://{BUCKET}/{prefix}", "read", budget=Budget(max_objects=1))
    s3 = world.client(who)

    assert s3.get_object(Bucket=BUCKET, Key=prefix + "a.bin")["Body"].read() == first
    assert s3.get_object(Bucket=BUCKET, Key=prefix + "a.bin", Range="bytes=0-9")["Body"].read() == first[:10]
    with pytest.raises(ClientError) as refused:
        s3.get_object(Bucket=BUCKET, Key=prefix + "b.bin")
    assert "1 object(s)" in _denied(refused)
    assert world.usage(grant).objects == 1


def test_grant_without_budget_is_not_counted(world: World, unique: str) -> None:
    who = world.person(f"free-{unique}")
    prefix = f"free-{unique}/"
    data = _put(world, prefix + "x.bin", 2 * MiB)
    grant = world.grant(who, f"s3://{BUCKET}/{prefix}", "read")
    s3 = world.client(who)
    for _ in range(2):
        assert s3.get_object(Bucket=BUCKET, Key=prefix + "x.bin")["Body"].read() == data
    assert world.usage(grant).bytes == 0


def test_aws_cli_ranged_download_fits_a_budget_of_one_copy_and_a_smaller_one_cuts_it(
    world: World, unique: str, tmp_path: Path
) -> None:
    """`aws s3 cp` fetches an object above 8 MiB as parallel 8 MiB ranges: a budget of exactly one copy
    lets one download through, counted once per byte, and refuses the next; a budget short of one copy
    makes the cli fail (never a silently short file) with exactly the budget sent."""
    size = 20 * MiB + 3  # three ranges
    prefix = f"cli-budget-{unique}/"
    data = _put(world, prefix + "model.safetensors", size)
    url = f"s3://{BUCKET}/{prefix}model.safetensors"

    whole = world.person(f"cli-whole-{unique}")
    grant = world.grant(whole, f"s3://{BUCKET}/{prefix}", "read", budget=Budget(max_bytes=size))
    cli = cli_for(world, whole, False, tmp_path / "whole")
    cli.ok("s3", "cp", url, str(tmp_path / "copy.bin"))
    assert (tmp_path / "copy.bin").read_bytes() == data
    assert world.usage(grant).bytes == size
    world.sync()
    cli.denied("s3", "cp", url, str(tmp_path / "again.bin"), code="403")  # its HEAD: no body to explain
    assert not (tmp_path / "again.bin").exists()
    assert any(
        e["principal"] == whole.name and e["operation"] == "HeadObject" and e["deny_reason"] == "budget_spent"
        for e in world.http.events()
    )

    short = world.person(f"cli-short-{unique}")
    limit = 12 * MiB
    grant = world.grant(short, f"s3://{BUCKET}/{prefix}", "read", budget=Budget(max_bytes=limit))
    done = cli_for(world, short, False, tmp_path / "short").run("s3", "cp", url, str(tmp_path / "cut.bin"))
    assert done.returncode != 0, done.stdout
    assert not (tmp_path / "cut.bin").exists()  # the cli keeps no partial file under the real name
    # Never past the limit; short of it when the cli, on its first refused range, hung up on the others.
    assert 0 < world.usage(grant).bytes <= limit
