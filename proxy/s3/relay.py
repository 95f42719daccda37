"""Answers back to the client: the bucket's answer relayed unchanged (spliced in the kernel when it can
be, else copied as it arrives), and the gateway's own S3 errors."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web

from proxy.errors import S3Error
from proxy.observe.events import Outcome
from proxy.s3 import forwarding, passthrough, splice
from proxy.s3.budget import BudgetedRead
from proxy.s3.httpclient import UpstreamError, UpstreamResponse
from proxy.s3.trace import Trace, identity_of
from proxy.s3.watch import TransferCut

log = structlog.get_logger("grantgate.s3")


class _Relayed(web.StreamResponse):
    """A streamed answer whose headers leave with its first piece of body (as web.Response's do):
    a small object then costs one socket write instead of two."""

    _send_headers_immediately = False


async def relay(
    request: web.BaseRequest, upstream: UpstreamResponse, trace: Trace, budget: BudgetedRead | None = None
) -> web.StreamResponse:
    """Stream the bucket's answer back unchanged: status, headers, body (206/304/412/416 included).

    `budget`: a read drawing on its grant's budget, refused before any header goes out when the budget
    cannot take it, and cut at the limit (never a clean short object) when it runs out mid-body."""
    if budget is not None:
        await budget.open(upstream.status, upstream.headers, upstream.content_length)
    trace.upstream_status = upstream.status
    trace.identity = identity_of(trace.operation, upstream.status, upstream.headers)
    response = _Relayed(status=upstream.status, reason=upstream.reason)
    for name, value in forwarding.downstream_headers(upstream.headers):
        response.headers.add(name, value)
    response.headers["x-grantgate-request-id"] = trace.request_id
    closing_if_spliced(request, response)
    length = upstream.content_length
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    trace.ttfb_ms = trace.since_start_ms()
    if request.method == "HEAD" or upstream.status in (204, 304):
        await response.write_eof()
        return response
    moved = trace.meter.outbound
    try:
        if budget is not None:
            await _budgeted_copy(response, upstream, moved, budget)
        elif not await passthrough.download(request, response, upstream, moved):
            async for data in upstream.content.iter_any():
                moved(len(data))
                await response.write(data)
    except TransferCut as cut:
        # Headers are out, so no error can be sent: cut the client off, as for a short upstream body.
        trace.end(cut.outcome)
        log.warning("transfer_cut", request_id=trace.request_id, outcome=cut.outcome.value)
        if cut.outcome is Outcome.BUDGET_SPENT and request.transport is not None:
            # What the budget paid for still reaches the client; then the connection ends short of
            # the promised length, which every client reports as an incomplete body.
            request.transport.close()
        else:
            _abort(request)
        raise ConnectionResetError(cut.code) from None
    except ConnectionResetError:
        raise  # the client went away: the pipeline records it
    except (UpstreamError, TimeoutError, splice.SourceClosed) as exc:
        # The bucket sent less than it promised, or stalled past the read timeout: cut the client off
        # rather than end a short object cleanly (or append an error document to its body).
        trace.end(Outcome.UPSTREAM_ERROR)
        log.warning("upstream_body_failed", request_id=trace.request_id, error=repr(exc))
        _abort(request)
        raise ConnectionResetError("upstream body incomplete") from exc
    await response.write_eof()
    return response


async def _budgeted_copy(
    response: web.StreamResponse,
    upstream: UpstreamResponse,
    moved: Callable[[int], None],
    budget: BudgetedRead,
) -> None:
    # Never spliced: every piece is counted against the budget before it is sent.
    async for data in upstream.content.iter_any():
        allowed = await budget.take(len(data))
        if allowed:
            moved(allowed)
            await response.write(data if allowed == len(data) else data[:allowed])
        if allowed < len(data):
            raise budget.cut()


def error_response(request: web.BaseRequest, err: S3Error, request_id: str) -> web.Response:
    """S3's XML error (no body for HEAD), on a connection closed after it if an upload was spliced."""
    headers = {"x-amz-request-id": request_id, "x-grantgate-request-id": request_id, **err.headers}
    body = b"" if request.method == "HEAD" else err.to_xml(request_id)
    response = web.Response(status=err.status, body=body, headers=headers, content_type="application/xml")
    closing_if_spliced(request, response)
    return response


def closing_if_spliced(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """A connection whose upload was spliced past aiohttp's parser cannot carry another request."""
    if request.get(passthrough.CLOSE_AFTER):
        response.force_close()


def _abort(request: web.BaseRequest) -> None:
    if request.transport is not None:
        request.transport.abort()
