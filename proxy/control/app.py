"""The control listener: health probes and the page the 403's access-request link opens."""

from __future__ import annotations

from html import escape

from aiohttp import web

from proxy.config import Settings
from proxy.control import audit_api, reviews_api
from proxy.control import web as web_pages
from proxy.control.api import WORKFLOW, api_app
from proxy.control.approver_context import APPROVER_CONTEXT, ApproverContext
from proxy.control.trail import TRAIL, Trail
from proxy.live_state import LiveState
from proxy.notify.notifiers import Notifiers, install_slack
from proxy.observe.observers import Observability, install_metrics
from proxy.s3.bucketprobe import BucketProbe
from proxy.s3.prefixsize import PrefixSizer
from proxy.workflow.service import Workflow

STATE = web.AppKey("state", LiveState)
BUCKET_PROBE = web.AppKey("bucket_probe", BucketProbe)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    # Out of the load balancer as soon as the store is unreachable: a replica that still reaches it serves
    # fresh state, while this one may only ride out its grace period.
    ready = state.ready and state.store_healthy
    body: dict[str, object] = {
        "status": "ready" if ready else "unavailable",
        "state_version": state.version,
        "store": "reachable" if state.store_healthy else "unreachable",
    }
    # And as soon as the bucket is unreachable or refuses the gateway's credentials: every request
    # this replica admitted would fail. Cached, so probes cost the bucket little.
    probe = request.app.get(BUCKET_PROBE)
    if probe is not None:
        bucket = await probe.health()
        body["bucket"] = bucket.status
        if bucket.detail and not bucket.ok:
            body["bucket_detail"] = bucket.detail
        ready = ready and bucket.ok
        body["status"] = "ready" if ready else "unavailable"
    return web.json_response(body, status=200 if ready else 503)


async def request_page(request: web.Request) -> web.Response:
    resource = request.query.get("resource", "")
    action = request.query.get("action", "read")
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Request access · GrantGate</title>
<style>body{{font-family:system-ui,sans-serif;max-width:44rem;margin:3rem auto;color:#1f2933}}
code{{background:#f0f4f8;padding:.1rem .3rem;border-radius:4px}}</style></head><body>
<h1>Request access</h1>
<p>You were denied <strong>{escape(action)}</strong> on <code>{escape(resource)}</code>.</p>
<p>Ask an administrator to grant it, for example:</p>
<pre><code>grantgate grants add YOUR_NAME {escape(resource)} --actions {escape(action)} \\
    --duration 8h</code></pre>
</body></html>"""
    return web.Response(text=body, content_type="text/html")


def control_app(
    state: LiveState,
    workflow: Workflow | None = None,
    observability: Observability | None = None,
    notifiers: Notifiers | None = None,
    settings: Settings | None = None,
    bucket_probe: BucketProbe | None = None,
    sizer: PrefixSizer | None = None,
) -> web.Application:
    app = web.Application()
    app[STATE] = state
    if bucket_probe is not None:
        app[BUCKET_PROBE] = bucket_probe
    if workflow is not None:
        app[WORKFLOW] = workflow
        context = ApproverContext(workflow, observability.audit if observability else None, sizer)
        app[APPROVER_CONTEXT] = context
        if notifiers is not None and notifiers.slack is not None:
            notifiers.slack.describe = context.lines
        api = api_app(workflow, context)
        reviews_api.install(api)
        if observability is not None:
            # A grant's use, bytes per grant and who had access when: for the pages and the API alike.
            trail = Trail(workflow, observability.audit, observability.settings.audit.reader_groups)
            app[TRAIL] = trail
            api[TRAIL] = trail
            audit_api.install(api, observability)
        app.add_subapp("/api/v1", api)
    if observability is not None:
        install_metrics(app, observability)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if workflow is not None and settings is not None:
        # The request form, my access, the approver's inbox, active grants, and sign-in.
        web_pages.install(
            app,
            workflow,
            settings.web,
            server_key=settings.server_key(),
            public_url=settings.server.public_url,
            resolve=settings.resolve,
        )
    else:
        app.router.add_get("/request", request_page)
    install_slack(app, notifiers, workflow)
    return app
