"""The S3 port: aiohttp's HTTP/1.1 protocol (keep-alive, pipelining, limits, TLS) with one handler and
no router. Every request goes to the S3 pipeline, but STS's form POST to `/` when `[sts]` is on.

aiohttp's `web.Application` would add a router, match info and middleware chains for a port with one
route: 8 us of CPU per small request (`python -m bench.floor`). Without it the handler answers `Expect`
itself, as the Application does before calling a route: any `Expect` header admits the request first,
so a refused upload never sends its body.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from proxy.gateway import Gateway
from proxy.identity import sts
from proxy.s3 import pipeline


class S3Listener:
    """The handler of aiohttp's low-level `web.Server` on the S3 port."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.sts: sts.StsService | None = None
        settings = gateway.settings
        if settings.sts.enabled:
            self.sts = sts.StsService(
                settings.sts,
                settings.server_key(),
                settings.resolve,
                lambda principal, now: gateway.state.view(now).keys.sessions_not_before.get(principal),
                gateway.bus.emit_later,
            )

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        # Only `POST /` with a form body can be STS: no S3 operation has that shape.
        if self.sts is not None and request.method == hdrs.METH_POST and sts.is_sts_call(request):
            if request.headers.get(hdrs.EXPECT):
                await sts.expect_continue(request)
            return await sts.handle(self.sts, request)
        if request.headers.get(hdrs.EXPECT):
            refused = await pipeline.expect_continue(self.gateway, request)
            await request.writer.drain()
            if refused is not None:
                return refused
        return await pipeline.handle(self.gateway, request)

    async def close(self) -> None:
        if self.sts is not None:
            await self.sts.close()
