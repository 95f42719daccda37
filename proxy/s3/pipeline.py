"""The S3 pipeline: every request runs authenticate -> classify -> authorize -> forward -> record.

`handle` and `admit` hold the order; each step is one call into a module that does only that step:
sigv4 (authenticate), operations (classify), the grant index and access.decide (authorize), bodies and
relay (forward), trace (record). A denial is a value (`Deny`) until it becomes the S3 error answered.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

import structlog
from aiohttp import web

from proxy.access.decide import (
    ABSENT,
    BUDGET_SPENT,
    CREATE_ONLY,
    PROTECTED,
    SOURCE_NETWORK,
    Allow,
    Decision,
    Deny,
    within_networks,
    within_protection,
)
from proxy.access.grants import Target
from proxy.audit.text import clean_text
from proxy.errors import S3Error
from proxy.gateway import Gateway
from proxy.identity.principals import Caller
from proxy.live_state import View
from proxy.observe.events import Outcome
from proxy.s3 import bodies, bucketlist, forwarding, relay, sigv4
from proxy.s3.budget import BudgetedRead, budgeted_grant
from proxy.s3.budget import refused as budget_refused
from proxy.s3.httpclient import Body, UpstreamError
from proxy.s3.operations import Operation, classify
from proxy.s3.request import RequestHead
from proxy.s3.trace import Meter, Trace, event_of
from proxy.s3.upstream import UpstreamRequest
from proxy.s3.watch import TransferCut, TransferWatch

log = structlog.get_logger("grantgate.s3")

REQUEST_URL_HEADER = "x-grantgate-request-url"
DENY_REASON_HEADER = "x-grantgate-deny-reason"
# Set by the Expect handler, so the handler that follows it continues the same request.
_TRACE = "grantgate.trace"
_ADMISSION = "grantgate.admission"


@dataclass(frozen=True, slots=True)
class Admission:
    """A request that passed authentication, classification and (for all but body-keyed ops) authorization."""

    head: RequestHead
    signed: sigv4.SignedRequest
    caller: Caller
    signing_key: bytes
    operation: Operation
    view: View  # the grant view this request is decided on, read once
    now: datetime


async def handle(gateway: Gateway, request: web.BaseRequest) -> web.StreamResponse:
    """One S3 request: admit (authenticate, classify, authorize), forward, and record its one event."""
    trace = _trace_of(request, gateway)
    try:
        if gateway.state.behind:  # read-your-writes: see proxy/written.py
            await gateway.state.catch_up()
        admission = request.get(_ADMISSION) or admit(gateway, request, trace)
        if admission.operation.gateway_answers:
            return list_buckets(gateway, request, admission, trace)
        return await forward(gateway, request, admission, trace)
    except S3Error as err:
        return _refused(request, trace, err)
    except (ConnectionError, asyncio.CancelledError):  # reset, broken pipe: the client is gone
        trace.end(Outcome.CLIENT_DISCONNECTED)
        raise
    except Exception:
        log.exception("request_failed", request_id=trace.request_id)
        trace.end(Outcome.INTERNAL_ERROR)
        return _refused(request, trace, S3Error.internal())
    finally:
        record(gateway, trace)


async def expect_continue(gateway: Gateway, request: web.BaseRequest) -> web.StreamResponse | None:
    """Admit the request before `100 Continue`, so a refused upload never sends its body."""
    trace = _trace_of(request, gateway)
    handed_on = False  # to `handle`, which records the event
    try:
        if gateway.state.behind:
            await gateway.state.catch_up()
        request[_ADMISSION] = admit(gateway, request, trace)
        await request.writer.write(b"HTTP/%d.%d 100 Continue\r\n\r\n" % request.version)
        handed_on = True
        return None
    except S3Error as err:
        response = _refused(request, trace, err)
    except (ConnectionError, asyncio.CancelledError):
        trace.end(Outcome.CLIENT_DISCONNECTED)
        raise
    except Exception:
        log.exception("request_failed", request_id=trace.request_id)
        trace.end(Outcome.INTERNAL_ERROR)
        response = _refused(request, trace, S3Error.internal())
    finally:
        if not handed_on:  # the handler never runs for a refused Expect: the event is recorded here
            record(gateway, trace)
    response.force_close()  # the body the client may still send is not read
    return response


def admit(gateway: Gateway, request: web.BaseRequest, trace: Trace) -> Admission:
    now = datetime.now(UTC)
    view = gateway.state.view(now)  # the one read of grants and keys for this request
    head = RequestHead.build(request.method, request.raw_path, request.headers)
    host = gateway.signed_host(request)
    signed, caller, signing_key = authenticate(gateway, view, head, host, now, trace)
    operation = trace.operation = classify(
        head, virtual_host_base=gateway.settings.server.virtual_host_base, host=host
    )
    spot_decoy(gateway, operation, trace)
    # DeleteObjects is authorized once its body is read; ListBuckets shows only what is granted.
    if not operation.body_targets and not operation.gateway_answers:
        decision = trace.decision = authorize(
            gateway, view, caller, operation, operation.targets, now, trace.source_ip
        )
        if isinstance(decision, Deny):
            raise refusal(gateway, caller, decision, trace.source_ip)
    return Admission(head, signed, caller, signing_key, operation, view, now)


def authenticate(
    gateway: Gateway, view: View, head: RequestHead, host: str, now: datetime, trace: Trace
) -> tuple[sigv4.SignedRequest, Caller, bytes]:
    signed = sigv4.parse_auth(head)
    trace.access_key_id = signed.access_key_id  # as sent: audited even when the signature is forged
    caller, secret = view.keys.resolve(signed.access_key_id, signed.security_token, now)
    signing_key = sigv4.verify(head, signed, secret, now, host=host, max_skew=gateway.max_skew)
    # Named only once proven: a forged request must not be audited (or alerted on) as its key's owner.
    trace.caller = caller
    return signed, caller, signing_key


def spot_decoy(gateway: Gateway, operation: Operation, trace: Trace) -> None:
    """Mark a read of a decoy on the trace, allowed or not: its event raises the alert (an anomaly
    rule's job). The request itself goes on exactly as any other, so nothing tells it apart."""
    if gateway.decoys:
        touched = gateway.decoys.touched(operation.targets)
        if touched is not None:
            trace.decoy = touched.describe()


def authorize(
    gateway: Gateway,
    view: View,
    caller: Caller,
    operation: Operation,
    targets: tuple[Target, ...],
    now: datetime,
    source: str,
) -> Decision:
    """Allow only under active grants usable from the caller's network (a pure decision over `view`)."""
    decision = view.grants.decide(caller.principal.name, list(targets), now)
    if isinstance(decision, Deny):
        if _probes_granted_directory(view, caller, operation, now):
            return Deny(ABSENT, decision.target)
        return decision
    decision = within_networks(decision, lambda grant: gateway.networks.allows(grant, source))
    return within_protection(decision, targets, gateway.policy.protects)


def _probes_granted_directory(view: View, caller: Caller, op: Operation, now: datetime) -> bool:
    """HEAD on `dir` when a grant covers `dir/...`: pyarrow and s3fs probe a dataset's directory this
    way before listing it. S3 would answer 404 for such a key; saying so reveals nothing the grant
    does not already allow, while a 403 makes those clients give up."""
    if op.name != "HeadObject" or op.bucket is None or not op.key:
        return False
    return view.grants.has_grant_below(caller.principal.name, op.bucket, op.key.rstrip("/") + "/", now)


def refusal(gateway: Gateway, caller: Caller, deny: Deny, source: str) -> S3Error:
    """The S3 error a denial is answered with."""
    if deny.reason == ABSENT:
        return S3Error.no_such_key()
    if deny.reason == BUDGET_SPENT and deny.grant is not None:
        return budget_refused(deny.grant, "", gateway.settings.server.public_url)
    if deny.reason == SOURCE_NETWORK and deny.grant is not None:
        grant = deny.grant
        err = S3Error.access_denied(
            f"Access Denied: grant {grant.id} on {grant.resource} cannot be used from {source}."
        )
    elif deny.reason == CREATE_ONLY and deny.grant is not None and deny.target is not None:
        err = S3Error.access_denied(
            f"Access Denied: grant {deny.grant.id} on {deny.grant.resource} may create new objects only; "
            "a write with its own If-Match or If-None-Match (other than *) may replace one and needs write.",
            resource=deny.target.describe(),
        )
    elif deny.reason == PROTECTED and deny.grant is not None and deny.target is not None:
        target = deny.target
        url = request_access_url(gateway.settings.server.public_url, target)
        err = S3Error.access_denied(
            f"Access Denied: {target.describe()} is protected: {target.action.value} there needs a grant "
            f"approved by two people, and grant {deny.grant.id} was approved by {deny.grant.approvals}. "
            f"Request access at {url}",
            resource=target.describe(),
        )
        err.headers[REQUEST_URL_HEADER] = url
    elif deny.target is None:
        err = S3Error.access_denied("Access Denied: this operation is not supported by the gateway.")
    else:
        target = deny.target
        url = request_access_url(gateway.settings.server.public_url, target)
        err = S3Error.access_denied(
            f"Access Denied: {caller.principal.name} has no active grant for {target.action.value} on "
            f"{target.describe()}. Request access at {url}",
            resource=target.describe(),
        )
        err.headers[REQUEST_URL_HEADER] = url
    err.headers[DENY_REASON_HEADER] = deny.reason
    return err


def request_access_url(public_url: str, target: Target) -> str:
    return f"{public_url}/request?" + urlencode(
        {"resource": target.describe(), "action": target.action.value}
    )


async def forward(
    gateway: Gateway, request: web.BaseRequest, admission: Admission, trace: Trace
) -> web.StreamResponse:
    """Re-sign and stream the request to the bucket, then relay its answer."""
    head, op = admission.head, admission.operation
    trace.meter = Meter(transfer_watch(gateway, admission))
    guard = await overwrite_guard(gateway, op, trace.decision)
    body: Body
    if op.body_targets:
        body, framing = await authorized_key_list(gateway, request, admission, trace)
    else:
        body, framing = await bodies.upstream_body(
            request,
            head,
            admission.signed,
            admission.signing_key,
            trace.meter.inbound,
            verify_sha256=gateway.settings.server.verify_payload_sha256,
            read_timeout=gateway.settings.upstream.read_timeout_seconds,
        )
    upstream_req = UpstreamRequest(
        method=head.method,
        bucket=op.bucket,
        key=op.key,
        query=head.query,
        headers={
            **forwarding.upstream_headers(head.headers),
            **framing.headers,
            **({"content-length": str(framing.content_length)} if framing.content_length or body else {}),
            **guard,
        },
        body=body,
        payload_hash=framing.payload_hash,
    )
    try:
        upstream = await gateway.upstream.send(upstream_req)
    except UpstreamError as exc:
        failure = bodies.failure(body)
        if failure is not None:
            raise failure from exc
        if request.transport is None or request.transport.is_closing():
            # The caller hung up mid-upload; the upstream request failed because its body did.
            raise ConnectionResetError("client disconnected during the upload") from exc
        trace.end(Outcome.UPSTREAM_ERROR)
        log.warning("upstream_unreachable", request_id=trace.request_id, error=repr(exc))
        raise S3Error.service_unavailable("The storage backend could not be reached.") from exc
    try:
        failure = bodies.failure(body)
        if failure is not None:
            raise failure
        read = budgeted_read(gateway, op, trace)
        try:
            return await relay.relay(request, upstream, trace, read)
        finally:
            if read is not None:
                await read.close()
    finally:
        upstream.release()


async def overwrite_guard(gateway: Gateway, op: Operation, decision: Decision | None) -> dict[str, str]:
    """`If-None-Match: *` for a write allowed only if it replaces nothing, once the bucket is known to
    honour it for this operation (proxy/s3/conditional.py); refused where it is not: fail closed."""
    if not isinstance(decision, Allow) or not decision.create_only or op.bucket is None:
        return {}
    enforcement = await gateway.conditional_writes.enforcement(op.bucket)
    if not enforcement.covers(op.name):
        log.warning(
            "conditional_write_not_enforced", bucket=op.bucket, operation=op.name, detail=enforcement.detail
        )
        err = S3Error.access_denied(
            f"Access Denied: bucket {op.bucket} does not enforce If-None-Match on {op.name}, so a grant "
            "that may create new objects only cannot be honoured for it; ask for write.",
            resource=f"s3://{op.bucket}/{op.key or ''}",
        )
        err.headers[DENY_REASON_HEADER] = "create_not_enforced"
        raise err
    return {"if-none-match": "*"}


def list_buckets(
    gateway: Gateway, request: web.BaseRequest, admission: Admission, trace: Trace
) -> web.Response:
    """ListBuckets: the buckets the caller holds an active grant on, usable from where it calls (see
    proxy/s3/bucketlist.py for why the gateway answers it itself)."""
    caller, source = admission.caller, trace.source_ip
    held = admission.view.grants.buckets_held(caller.principal.name, admission.now)
    buckets = bucketlist.visible(held, lambda grant: gateway.networks.allows(grant, source))
    region = gateway.settings.upstream.region
    listing = bucketlist.page(buckets, dict(admission.head.query), region)
    trace.decision = Allow(tuple(grant for bucket in listing.buckets for grant in bucket.grants))
    body = bucketlist.to_xml(listing, caller.principal.name, region)
    trace.gateway_status = 200
    trace.meter.outbound(len(body))
    trace.ttfb_ms = trace.since_start_ms()
    headers = {"x-amz-request-id": trace.request_id, "x-grantgate-request-id": trace.request_id}
    response = web.Response(body=body, headers=headers, content_type="application/xml")
    relay.closing_if_spliced(request, response)
    return response


async def authorized_key_list(
    gateway: Gateway, request: web.BaseRequest, admission: Admission, trace: Trace
) -> tuple[bytes, forwarding.Framing]:
    """DeleteObjects: its body, once every key in it is authorized (delete, and admin when bypassing
    governance retention, on each)."""
    op = admission.operation
    data, keys = await bodies.key_list(request, admission.signed, trace.meter.inbound)
    trace.keys_touched = len(keys)
    targets = op.targets_in_body(keys)
    decision = trace.decision = authorize(
        gateway, admission.view, admission.caller, op, targets, admission.now, trace.source_ip
    )
    if isinstance(decision, Deny):
        raise refusal(gateway, admission.caller, decision, trace.source_ip)
    return data, forwarding.plain_framing(admission.signed.payload_hash, len(data))


def budgeted_read(gateway: Gateway, op: Operation, trace: Trace) -> BudgetedRead | None:
    """A read that draws on its grant's budget; None (one check) for grants without one."""
    grant = budgeted_grant(op, trace.decision)
    if grant is None or op.bucket is None or op.key is None:
        return None
    return BudgetedRead(
        gateway.ledger, grant, op.bucket, op.key, gateway.settings.server.public_url, gateway.bus.emit
    )


def transfer_watch(gateway: Gateway, admission: Admission) -> TransferWatch | None:
    """A watch over the admitted targets (DeleteObjects, decided from its small body, needs none)."""
    op = admission.operation
    if op.body_targets or not op.targets:
        return None
    caller = admission.caller
    return TransferWatch(
        gateway.state.view,
        caller.principal.name,
        list(op.targets),
        access_key_id=None if caller.temporary else caller.access_key_id,
    )


def record(gateway: Gateway, trace: Trace) -> None:
    """The request's one outcome event, to the observers."""
    gateway.bus.emit_later(event_of(trace, trace.since_start_ms()))


def _refused(request: web.BaseRequest, trace: Trace, err: S3Error) -> web.Response:
    if isinstance(err, TransferCut):  # an upload cut by a revocation
        trace.end(err.outcome)
    trace.error = err
    return relay.error_response(request, err, trace.request_id)


def _trace_of(request: web.BaseRequest, gateway: Gateway) -> Trace:
    trace: Trace | None = request.get(_TRACE)
    if trace is None:
        trace = request[_TRACE] = Trace(
            request_id=secrets.token_hex(8).upper(),
            started_at=time.time(),
            started=time.perf_counter(),
            source_ip=clean_text(gateway.client_address(request)),
            user_agent=clean_text(request.headers.get("User-Agent", "")[:256]),
            method=request.method,
        )
    return trace
