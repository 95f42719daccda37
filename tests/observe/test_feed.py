"""The feed of request events from workers 1..n to worker 0's anomaly rules, over a real Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.observe import feed
from proxy.observe.events import AnomalyAlert, RequestEvent
from proxy.observe.feed import Forwarder, decode, encode, receiving


def event(n: int, **fields: object) -> RequestEvent:
    values: dict[str, object] = {
        "request_id": f"r{n}",
        "started_at": 1_700_000_000.0 + n,
        "source_ip": "10.1.2.3",
        "user_agent": "aws-cli/2",
        "method": "GET",
        "principal": "dee",
        "groups": ("ml", "research"),
        "bucket": "models",
        "key": f"weights/{n}.safetensors",
        "decision": "allow",
        "grant_ids": ("g_1",),
        "bytes_out": 1 << 30,
    }
    return RequestEvent(**{**values, **fields})  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def sending(forwarder: Forwarder) -> AsyncIterator[None]:
    """The forwarder's connection to worker 0, kept up for the block."""
    task = asyncio.create_task(forwarder.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def path(tmp_path: Path) -> str:
    return feed.socket_path(str(tmp_path))


def test_an_event_survives_the_trip_field_for_field() -> None:
    sent = event(1, key="weights/ü 1.bin", prefix=None, ttfb_ms=1.5)
    assert decode(encode(sent)) == sent


@pytest.mark.parametrize("line", [b"[1, 2]\n", b'{"request_id": "r1"}\n', b'{"nonsense": 1}\n', b"{\n"])
def test_a_line_that_is_not_an_event_is_refused(line: bytes) -> None:
    with pytest.raises((ValueError, TypeError)):
        decode(line)


async def test_events_from_a_worker_reach_worker_0_in_order(path: str) -> None:
    received: list[RequestEvent] = []
    forwarder = Forwarder(path)
    async with receiving(path, received.append), sending(forwarder):
        sent = [event(n) for n in range(500)]
        for e in sent:
            forwarder(e)
        # Not a request: worker 0 raises its own alerts, a worker's would be counted twice.
        forwarder(AnomalyAlert(kind="x", severity="warning", message="m", at=0.0))
        await until(lambda: len(received) == len(sent))
        assert received == sent


async def test_events_of_one_moment_leave_in_one_write_and_none_is_lost_when_the_worker_stops(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[RequestEvent] = []
    writes: list[int] = []
    original = asyncio.StreamWriter.writelines

    def counted(self: asyncio.StreamWriter, lines: Any) -> None:
        lines = list(lines)
        writes.append(len(lines))
        original(self, lines)

    monkeypatch.setattr(asyncio.StreamWriter, "writelines", counted)
    forwarder = Forwarder(path, batch_seconds=0.2)
    async with receiving(path, received.append):
        async with sending(forwarder):
            for n in range(3):
                forwarder(event(n))
                await asyncio.sleep(0.01)
            await until(lambda: len(received) == 3)
            # Stopped within the batch's wait: what it held still goes out.
            forwarder(event(3))
        await until(lambda: len(received) == 4)
    assert writes == [3, 1]
    assert [e.request_id for e in received] == ["r0", "r1", "r2", "r3"]


async def test_events_wait_while_worker_0_is_away_and_flow_once_it_is_back(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[RequestEvent] = []
    connects: list[str] = []
    original = asyncio.open_unix_connection

    async def counted(target: str, **options: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        connects.append(target)
        return await original(target, **options)

    monkeypatch.setattr(asyncio, "open_unix_connection", counted)
    forwarder = Forwarder(path)
    async with sending(forwarder):
        async with receiving(path, received.append):
            forwarder(event(1))
            await until(lambda: len(received) == 1)
        # Worker 0 restarts. One event before the forwarder can have noticed (no turn of the loop since
        # worker 0 closed), one once it has: it tries to reconnect only after it let the old one go.
        forwarder(event(2))
        await until(lambda: len(connects) >= 2)
        forwarder(event(3))
        async with receiving(path, received.append):
            await until(lambda: len(received) >= 3)
        # Both kept, then delivered to the successor, in order.
        assert [e.request_id for e in received][-2:] == ["r2", "r3"]


async def test_beyond_its_backlog_a_worker_drops_events_and_says_so(path: str) -> None:
    drops: list[None] = []
    forwarder = Forwarder(path, backlog=3, on_drop=lambda: drops.append(None))
    for n in range(5):  # nobody listening, nothing running to send them
        forwarder(event(n))
    assert forwarder.dropped == 2 and len(drops) == 2

    received: list[RequestEvent] = []
    async with receiving(path, received.append), sending(forwarder):
        await until(lambda: len(received) == 3)
        assert [e.request_id for e in received] == ["r0", "r1", "r2"]


async def test_a_bad_line_is_skipped_and_the_rest_still_counted(path: str) -> None:
    received: list[RequestEvent] = []
    async with receiving(path, received.append):
        _, writer = await asyncio.open_unix_connection(path)
        writer.write(encode(event(1)) + b'{"nonsense": true}\n' + encode(event(2)))
        await writer.drain()
        await until(lambda: len(received) == 2)
        writer.close()
    assert [e.request_id for e in received] == ["r1", "r2"]
