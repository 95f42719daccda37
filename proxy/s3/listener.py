"""The S3 port's routes: every request goes to the S3 pipeline, but STS's form POST when `[sts]` is on."""

from __future__ import annotations

from aiohttp import web

from proxy.gateway import Gateway
from proxy.identity import sts
from proxy.s3 import pipeline


def install(app: web.Application, gateway: Gateway) -> None:
    app[pipeline.GATEWAY] = gateway
    if gateway.settings.sts.enabled:
        settings = gateway.settings
        service = sts.StsService(
            settings.sts,
            settings.server_key(),
            settings.resolve,
            lambda principal, now: gateway.state.view(now).keys.sessions_not_before.get(principal),
            gateway.bus.emit_later,
        )
        sts.install(app, service)
        # Only `POST /` can be STS: the other S3 requests never pass this route.
        app.router.add_post("/", _post_to_root, expect_handler=_expect_post_to_root)
    app.router.add_route("*", "/{tail:.*}", pipeline.handle, expect_handler=pipeline.expect_continue)


async def _post_to_root(request: web.Request) -> web.StreamResponse:
    if sts.is_sts_call(request):
        return await sts.handle(request)
    return await pipeline.handle(request)


async def _expect_post_to_root(request: web.Request) -> web.StreamResponse | None:
    if sts.is_sts_call(request):
        await sts.expect_continue(request)
        return None
    return await pipeline.expect_continue(request)
