"""The S3 listener: every request runs authenticate -> classify -> authorize -> forward -> record.

Each step is one call into a module that does only that step; this file holds the order and the I/O.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

import structlog
from aiohttp import web

from proxy.access.decide import Allow, Deny
from proxy.access.grants import Action, Scope, Target
from proxy.access.index import GrantIndex
from proxy.audit.text import clean_text
from proxy.gateway import Gateway
from proxy.identity import sts
from proxy.identity.principals import Caller
from proxy.observe.events import RequestEvent
from proxy.s3 import forwarding, passthrough, sigv4, splice
from proxy.s3.checksums import new_checksum
from proxy.s3.chunked import ChunkedDecoder, ChunkedSpec, chunked_spec
from proxy.s3.errors import S3Error
from proxy.s3.httpclient import UpstreamError, UpstreamResponse
from proxy.s3.operations import Operation, classify
from proxy.s3.request import RequestHead
from proxy.s3.upstream import UpstreamRequest
from proxy.s3.watch import TransferCut, TransferWatch
from proxy.s3.xmlbodies import MAX_DELETE_BODY, delete_objects_keys

log = structlog.get_logger("grantgate.s3")

GATEWAY = web.AppKey("gateway", Gateway)
_ADMISSION = "grantgate.admission"
_EVENT = "grantgate.event"
REQUEST_URL_HEADER = "x-grantgate-request-url"
# An empty object's aws-chunked framing: a final chunk and at most a trailer, never more than this.
EMPTY_CHUNKED_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class Admission:
    """A request that passed authentication, classification and (for all but body-keyed ops) authorization."""

    head: RequestHead
    signed: sigv4.SignedRequest
    caller: Caller
    signing_key: bytes
    operation: Operation


# ---------------------------------------------------------------- the pipeline


async def handle(request: web.Request) -> web.StreamResponse:
    if sts.routes_here(request):  # workload identity: STS's form POST, never an S3 operation
        return await sts.handle(request)
    gateway = request.app[GATEWAY]
    event = _event_for(request)
    started = time.perf_counter()
    try:
        admission = request.get(_ADMISSION) or admit(gateway, request, event)
        return await forward(gateway, request, admission, event, started)
    except S3Error as err:
        return _closing_if_spliced(request, error_response(err, event))
    except (ConnectionError, asyncio.CancelledError):  # reset, broken pipe: the client is gone
        if event.outcome == "ok":  # not cut by the gateway itself (revoked, upstream_error)
            event.outcome = "client_disconnected"
        raise
    except Exception:
        log.exception("request_failed", request_id=event.request_id)
        event.outcome = "internal_error"
        return _closing_if_spliced(request, error_response(S3Error.internal(), event))
    finally:
        event.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        gateway.bus.emit(event)


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """Check the request before `100 Continue`, so a refused upload never sends its body."""
    if sts.routes_here(request):
        return await sts.expect_continue(request)
    gateway = request.app[GATEWAY]
    event = _event_for(request)
    try:
        request[_ADMISSION] = admit(gateway, request, event)
    except S3Error as err:
        # The handler never runs for a refused Expect, so the outcome is recorded here.
        gateway.bus.emit(event)
        response = error_response(err, event)
        response.force_close()
        return response
    await request.writer.write(b"HTTP/%d.%d 100 Continue\r\n\r\n" % request.version)
    return None


def admit(gateway: Gateway, request: web.Request, event: RequestEvent) -> Admission:
    now = datetime.now(UTC)
    view = gateway.state.view(now)
    head = RequestHead.build(request.method, request.raw_path, request.headers)
    host = gateway.signed_host(request)

    # authenticate
    signed = sigv4.parse_auth(head)
    event.access_key_id = clean_text(signed.access_key_id)  # not yet verified: anything may be in it
    caller, secret = view.keys.resolve(signed.access_key_id, signed.security_token, now)
    signing_key = sigv4.verify(head, signed, secret, now, host=host, max_skew=gateway.max_skew)
    # Named only once proven: a forged request must not be audited (or alerted on) as its key's owner.
    event.principal = caller.principal.name
    event.groups = tuple(sorted(caller.principal.groups))

    # classify
    operation = classify(head, virtual_host_base=gateway.settings.server.virtual_host_base, host=host)
    event.operation, event.bucket, event.key = operation.name, operation.bucket, operation.key
    event.action = operation.action.value if operation.action else None
    event.prefix = next((t.key for t in operation.targets if t.scope is Scope.PREFIX and t.bucket), None)

    # authorize (DeleteObjects is decided once its body is read)
    if not operation.body_targets:
        try:
            event.grant_ids = authorize(gateway, caller, operation.targets, now, event.source_ip)
        except S3Error:
            if _probes_granted_directory(view.grants, caller, operation, now):
                raise S3Error.no_such_key() from None
            raise
    return Admission(head, signed, caller, signing_key, operation)


def _probes_granted_directory(grants: GrantIndex, caller: Caller, op: Operation, now: datetime) -> bool:
    """HEAD on `dir` when a grant covers `dir/...`: pyarrow and s3fs probe a dataset's directory this
    way before listing it. S3 would answer 404 for such a key; saying so reveals nothing the grant
    does not already allow, while a 403 makes those clients give up."""
    if op.name != "HeadObject" or op.bucket is None or not op.key:
        return False
    return grants.has_grant_below(caller.principal.name, op.bucket, op.key.rstrip("/") + "/", now)


def authorize(
    gateway: Gateway, caller: Caller, targets: tuple[Target, ...], now: datetime, source: str
) -> tuple[str, ...]:
    decision = gateway.state.view(now).grants.decide(caller.principal.name, list(targets), now)
    if not isinstance(decision, Allow):
        raise denial(gateway, caller, decision)
    for grant in decision.grants:
        if not gateway.networks.allows(grant, source):
            err = S3Error.access_denied(
                f"Access Denied: grant {grant.id} on {grant.resource} cannot be used from {source}."
            )
            err.headers["x-grantgate-deny-reason"] = "source_network"
            raise err
    return decision.grant_ids


def denial(gateway: Gateway, caller: Caller, deny: Deny) -> S3Error:
    target = deny.target
    if target is None:
        err = S3Error.access_denied("Access Denied: this operation is not supported by the gateway.")
        err.headers["x-grantgate-deny-reason"] = deny.reason
        return err
    url = request_access_url(gateway.settings.server.public_url, target)
    err = S3Error.access_denied(
        f"Access Denied: {caller.principal.name} has no active grant for {target.action.value} on "
        f"{target.describe()}. Request access at {url}",
        resource=target.describe(),
    )
    err.headers[REQUEST_URL_HEADER] = url
    err.headers["x-grantgate-deny-reason"] = deny.reason
    return err


def request_access_url(public_url: str, target: Target) -> str:
    return f"{public_url}/request?" + urlencode(
        {"resource": target.describe(), "action": target.action.value}
    )


# ---------------------------------------------------------------- forward


async def forward(
    gateway: Gateway, request: web.Request, admission: Admission, event: RequestEvent, started: float
) -> web.StreamResponse:
    head, op = admission.head, admission.operation
    watch = transfer_watch(gateway, admission, event)
    body, framing = await request_body(gateway, request, admission, event, watch)
    upstream_req = UpstreamRequest(
        method=head.method,
        bucket=op.bucket,
        key=op.key,
        query=head.query,
        headers={
            **forwarding.upstream_headers(head.headers),
            **framing.headers,
            **({"content-length": str(framing.content_length)} if framing.content_length or body else {}),
        },
        body=body,
        payload_hash=framing.payload_hash,
    )
    try:
        upstream = await gateway.upstream.send(upstream_req)
    except UpstreamError as exc:
        failure = _body_failure(body)
        if failure is not None:
            raise failure from exc
        if request.transport is None or request.transport.is_closing():
            # The caller hung up mid-upload; the upstream request failed because its body did.
            raise ConnectionResetError("client disconnected during the upload") from exc
        event.outcome = "upstream_error"
        log.warning("upstream_unreachable", request_id=event.request_id, error=repr(exc))
        raise S3Error.service_unavailable("The storage backend could not be reached.") from exc
    try:
        failure = _body_failure(body)
        if failure is not None:
            raise failure
        event.decision = "allow"
        return await relay(request, upstream, event, started, watch)
    finally:
        upstream.release()


async def request_body(
    gateway: Gateway,
    request: web.Request,
    admission: Admission,
    event: RequestEvent,
    watch: TransferWatch | None = None,
) -> tuple[AsyncIterator[bytes] | bytes | None, forwarding.Framing]:
    """The body to send upstream and how it is framed; DeleteObjects is authorized here, key by key."""
    head, signed, op = admission.head, admission.signed, admission.operation
    if op.body_targets:
        too_large = S3Error.malformed_xml(f"request body larger than {MAX_DELETE_BODY} bytes")
        data = await read_bounded(request, MAX_DELETE_BODY, too_large)
        event.bytes_in = len(data)
        if forwarding.is_hex_sha256(signed.payload_hash):
            _check_sha256(data, signed.payload_hash)
        keys = delete_objects_keys(data)
        event.keys_touched = len(keys)
        targets = tuple(Target(Action.DELETE, op.bucket or "", key) for key, _version in keys)
        event.grant_ids = authorize(gateway, admission.caller, targets, datetime.now(UTC), event.source_ip)
        return data, forwarding.plain_framing(signed.payload_hash, len(data))

    spec = chunked_spec(head, signed, admission.signing_key)
    if spec is not None and spec.decoded_length == 0:
        # Nothing to hold back: an empty object would complete upstream with its headers, so the
        # framing (signatures, trailer) is verified whole before anything is sent.
        decoder = ChunkedDecoder(spec)
        too_long = S3Error.incomplete_body("The aws-chunked body is longer than its declared length of 0.")
        data = await read_bounded(request, EMPTY_CHUNKED_LIMIT, too_long)
        event.bytes_in = len(data)
        decoder.feed(data)
        decoder.finish()
        return None, forwarding.decoded_framing(spec)
    if spec is not None:
        return _decoded_body(request, spec, event, watch)
    length = forwarding.content_length(head.headers)
    if length is None:
        if request.body_exists:
            raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.", 411)
        length = 0
    declared = signed.payload_hash if forwarding.is_hex_sha256(signed.payload_hash) else None
    if length == 0:
        if declared is not None:
            _check_sha256(b"", declared)
        return None, forwarding.plain_framing(signed.payload_hash, 0)
    body: AsyncIterator[bytes] = _counted(request, event, watch)
    verify = declared is not None and gateway.settings.server.verify_payload_sha256
    if verify:
        body = _sha256_verified(body, declared)
    body = _BodyStream(body)  # keeps the S3Error of a bad digest or of a revoked grant
    framing = forwarding.plain_framing(signed.payload_hash, length)
    if verify or length < passthrough.MIN_BYTES:
        return body, framing
    # Nothing to compute over the bytes: the kernel may move them (when both legs are plaintext).
    timeout = gateway.settings.upstream.read_timeout_seconds
    return passthrough.Upload(request, length, body, progress(event, "bytes_in", watch), timeout), framing


def _decoded_body(
    request: web.Request, spec: ChunkedSpec, event: RequestEvent, watch: TransferWatch | None = None
) -> tuple[AsyncIterator[bytes], forwarding.Framing]:
    decoder = ChunkedDecoder(spec)
    body = _BodyStream(_decode(request, decoder, event, watch))
    if spec.trailer_names:
        algorithm = spec.trailer_names[0].removeprefix("x-amz-checksum-")
        digest_size = len(new_checksum(algorithm).digest())
        framing = forwarding.trailer_framing(spec, digest_size)
        reframed = forwarding.reframe(body, lambda: decoder.trailer.items(), spec.decoded_length)
        return _BodyStream(reframed, body), framing
    return body, forwarding.decoded_framing(spec)


async def _decode(
    request: web.Request, decoder: ChunkedDecoder, event: RequestEvent, watch: TransferWatch | None = None
) -> AsyncIterator[bytes]:
    moved = progress(event, "bytes_in", watch)
    async for data in request.content.iter_any():
        moved(len(data))
        for piece in decoder.feed(data):
            yield piece
    for piece in decoder.finish():
        yield piece


async def _counted(
    request: web.Request, event: RequestEvent, watch: TransferWatch | None = None
) -> AsyncIterator[bytes]:
    moved = progress(event, "bytes_in", watch)
    async for data in request.content.iter_any():
        moved(len(data))
        yield data


async def _sha256_verified(pieces: AsyncIterator[bytes], declared: str) -> AsyncIterator[bytes]:
    """Pass a body through while hashing it, holding back the last piece until the hash matches, so
    a body altered in transit never completes upstream even if the bucket does not check it."""
    digest = hashlib.sha256()
    held: bytes | None = None
    async for piece in pieces:
        digest.update(piece)
        if held is not None:
            yield held
        held = piece
    _check_sha256_digest(digest.hexdigest(), declared)
    if held is not None:
        yield held


class _BodyStream:
    """Wraps a body generator so an S3Error raised while the upstream client consumes it is kept.

    The client turns any exception in a request body into a generic upstream error; the caller must still
    get the precise S3 error (a bad chunk signature, a wrong checksum).
    """

    def __init__(self, inner: AsyncIterator[bytes], linked: _BodyStream | None = None) -> None:
        self._inner = inner
        self._linked = linked
        self.error: S3Error | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._run()

    async def _run(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._inner:
                yield piece
        except S3Error as err:
            self.error = err
            raise

    def failure(self) -> S3Error | None:
        return self.error or (self._linked.failure() if self._linked else None)


def _body_failure(body: object) -> BaseException | None:
    return body.failure() if isinstance(body, _BodyStream | passthrough.Upload) else None


def progress(event: RequestEvent, counter: str, watch: TransferWatch | None) -> Callable[[int], None]:
    """Counts bytes moved into `event.<counter>`, re-checking the grant as they go: every body loop,
    spliced or not, calls it per piece."""

    def moved(count: int) -> None:
        setattr(event, counter, getattr(event, counter) + count)
        if watch is not None:
            watch.check()

    return moved


async def relay(
    request: web.Request,
    upstream: UpstreamResponse,
    event: RequestEvent,
    started: float,
    watch: TransferWatch | None = None,
) -> web.StreamResponse:
    """Stream the bucket's answer back unchanged: status, headers, body (206/304/412/416 included)."""
    event.upstream_status = event.status = upstream.status
    if upstream.status >= 400:
        event.decision, event.outcome = "allow", "upstream_status"
    response = _Relayed(status=upstream.status, reason=upstream.reason)
    for name, value in forwarding.downstream_headers(upstream.headers):
        response.headers.add(name, value)
    response.headers["x-grantgate-request-id"] = event.request_id
    _closing_if_spliced(request, response)
    length = upstream.content_length
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    event.ttfb_ms = round((time.perf_counter() - started) * 1000, 3)
    if request.method == "HEAD" or upstream.status in (204, 304):
        await response.write_eof()
        return response
    try:
        moved = progress(event, "bytes_out", watch)
        if not await passthrough.download(request, response, upstream, moved):
            async for data in upstream.content.iter_any():
                moved(len(data))
                await response.write(data)
    except TransferCut as cut:
        # Headers are out, so no error can be sent: cut the client off, as for a short upstream body.
        log.warning("transfer_cut", request_id=event.request_id, outcome=event.outcome)
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError(cut.code) from None
    except ConnectionResetError:
        raise  # the client went away: handle() records it
    except (UpstreamError, TimeoutError, splice.SourceClosed) as exc:
        # The bucket sent less than it promised, or stalled past the read timeout: cut the client off
        # rather than end a short object cleanly (or append an error document to its body).
        event.outcome = "upstream_error"
        log.warning("upstream_body_failed", request_id=event.request_id, error=repr(exc))
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("upstream body incomplete") from exc
    await response.write_eof()
    return response


# ---------------------------------------------------------------- helpers


class _Relayed(web.StreamResponse):
    """A streamed answer whose headers leave with its first piece of body (as web.Response's do):
    a small object then costs one socket write instead of two."""

    _send_headers_immediately = False


def transfer_watch(gateway: Gateway, admission: Admission, event: RequestEvent) -> TransferWatch | None:
    """A watch over the admitted targets (DeleteObjects, decided from its small body, needs none)."""
    op = admission.operation
    if op.body_targets or not op.targets:
        return None
    caller = admission.caller
    return TransferWatch(
        gateway.state.view,
        caller.principal.name,
        list(op.targets),
        event,
        access_key_id=None if caller.temporary else caller.access_key_id,
    )


async def read_bounded(request: web.Request, limit: int, too_large: S3Error) -> bytes:
    buf = bytearray()
    async for data in request.content.iter_any():
        buf += data
        if len(buf) > limit:
            raise too_large
    return bytes(buf)


def _check_sha256(data: bytes, declared: str) -> None:
    _check_sha256_digest(hashlib.sha256(data).hexdigest(), declared)


def _check_sha256_digest(actual: str, declared: str) -> None:
    if not hmac.compare_digest(actual, declared.lower()):
        raise S3Error(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            400,
        )


def error_response(err: S3Error, event: RequestEvent) -> web.Response:
    event.status = err.status
    event.reason = err.code
    event.deny_reason = err.headers.get("x-grantgate-deny-reason")
    if event.decision != "allow":
        event.decision = "deny" if err.status in (400, 401, 403, 404, 405, 411, 501) else "error"
    if event.outcome == "ok":
        event.outcome = (
            "denied" if err.status == 403 else "client_error" if err.status < 500 else event.outcome
        )
    headers = {
        "x-amz-request-id": event.request_id,
        "x-grantgate-request-id": event.request_id,
        **err.headers,
    }
    body = b"" if event.method == "HEAD" else err.to_xml(event.request_id)
    return web.Response(status=err.status, body=body, headers=headers, content_type="application/xml")


def _closing_if_spliced(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """A connection whose upload was spliced past aiohttp's parser cannot carry another request."""
    if request.get(passthrough.CLOSE_AFTER):
        response.force_close()
    return response


def _event_for(request: web.Request) -> RequestEvent:
    event = request.get(_EVENT)
    if event is None:
        event = RequestEvent(
            request_id=secrets.token_hex(8).upper(),
            started_at=time.time(),
            source_ip=clean_text(request.app[GATEWAY].client_address(request)),
            user_agent=clean_text(request.headers.get("User-Agent", "")[:256]),
            method=request.method,
        )
        request[_EVENT] = event
    return event
