"""The sidecar's refusals of requests it must not re-sign (pure)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.sidecar.guard import own_hosts, refusal, without_cors

HOSTS = own_hosts("127.0.0.1", 9000)


@pytest.mark.parametrize("host", ["127.0.0.1:9000", "localhost:9000", "LOCALHOST:9000"])
def test_requests_to_the_sidecars_own_address_pass(host: str) -> None:
    assert refusal({"Host": host}, HOSTS) is None


@pytest.mark.parametrize(
    "host", ["evil.example:9000", "127.0.0.1:9001", "127.0.0.1", "", "169.254.169.254", "127.0.0.1:9000.evil"]
)
def test_another_host_is_refused(host: str) -> None:
    # DNS rebinding: a page's own name, now resolving to 127.0.0.1, still arrives as that name.
    assert "own address" in (refusal({"Host": host}, HOSTS) or "")


@pytest.mark.parametrize(
    "header",
    [
        ("Origin", "https://evil.example"),
        ("Origin", "null"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "no-cors"),
    ],
)
def test_browser_requests_are_refused(header: tuple[str, str]) -> None:
    headers = CIMultiDict([("Host", "127.0.0.1:9000"), header])
    assert "web browser" in (refusal(headers, HOSTS) or "")


def test_ipv6_and_localhost_listeners_know_their_names() -> None:
    assert "[::1]:9000" in own_hosts("::1", 9000)
    assert {"127.0.0.1:9000", "[::1]:9000", "localhost:9000"} <= own_hosts("localhost", 9000)
    assert "127.0.0.1" in own_hosts("127.0.0.1", 80)


def test_cors_headers_never_reach_the_caller() -> None:
    upstream = [
        ("Access-Control-Allow-Origin", "*"),
        ("access-control-allow-credentials", "true"),
        ("Content-Type", "application/octet-stream"),
        ("ETag", '"abc"'),
    ]
    assert without_cors(upstream) == [("Content-Type", "application/octet-stream"), ("ETag", '"abc"')]
