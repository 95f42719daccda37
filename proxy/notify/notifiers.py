"""Starts the notifiers of one gateway process (Slack, webhooks), subscribes them, and stops them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.access.policy import Policy
from proxy.notify import interactions
from proxy.notify.counters import Outcomes
from proxy.notify.mail import EmailNotifier
from proxy.notify.mail_settings import EmailSettings
from proxy.notify.settings import SlackSettings, WebhookSettings
from proxy.notify.slack import SlackNotifier
from proxy.notify.webhooks import WebhookDispatcher
from proxy.observe.events import EventBus
from proxy.store.messages import SlackMessages
from proxy.store.outbox import WebhookOutbox
from proxy.store.sql import SqlStore
from proxy.workflow.service import Workflow


@dataclass
class Notifiers:
    slack: SlackNotifier | None = None
    webhooks: WebhookDispatcher | None = None
    email: EmailNotifier | None = None


@contextlib.asynccontextmanager
async def notifying(
    webhooks: Sequence[WebhookSettings],
    slack: SlackSettings,
    public_url: str,
    bus: EventBus,
    registry: CollectorRegistry | None = None,
    *,
    store: SqlStore | None = None,
    email: EmailSettings | None = None,
    policy: Policy | None = None,
) -> AsyncIterator[Notifiers]:
    """Subscribe the configured notifiers (`[[webhooks]]`, `[slack]`) to `bus`; links point at `public_url`;
    their delivery counters go to `registry` if given.

    Slack needs `store`: where each request's message lives is shared by every gateway. With `store`,
    webhook deliveries are kept in its outbox until done, so a restart or a crash does not lose them."""
    found = Notifiers()
    if webhooks:
        outcomes = Outcomes(
            "grantgate_webhook_deliveries", "Webhook delivery attempts, by host and outcome.", registry
        )
        outbox = WebhookOutbox(store) if store is not None else None
        found.webhooks = WebhookDispatcher(list(webhooks), outcomes, outbox=outbox)
        found.webhooks.start()
        bus.subscribe(found.webhooks)
    if slack.enabled:
        if store is None:
            raise ValueError("Slack notifications need the store")
        outcomes = Outcomes("grantgate_slack_calls", "Slack Web API calls, by outcome.", registry)
        messages = SlackMessages(store)
        found.slack = SlackNotifier(slack, public_url, outcomes, messages)
        found.slack.start()
        bus.subscribe(found.slack)
    if email is not None and email.enabled and policy is not None:
        outcomes = Outcomes("grantgate_emails", "Notification emails, by SMTP host and outcome.", registry)
        found.email = EmailNotifier(email, policy, public_url, outcomes)
        bus.subscribe(found.email)
    try:
        yield found
    finally:
        if found.email is not None:
            await found.email.close()
        if found.slack is not None:
            await found.slack.close()
        if found.webhooks is not None:
            await found.webhooks.close()


def install_slack(app: web.Application, notifiers: Notifiers | None, workflow: Workflow | None) -> None:
    """Mount /slack/interactions and /slack/commands on the control listener when Slack is on."""
    if notifiers is None or notifiers.slack is None or workflow is None:
        return
    interactions.install(app, interactions.SlackInteractions(notifiers.slack, workflow))
