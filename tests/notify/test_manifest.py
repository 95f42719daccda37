"""The Slack app manifest in deploy/ points at the routes GrantGate serves and asks for the scopes it uses."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml
from aiohttp import web

from proxy.notify import interactions

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "slack" / "manifest.yaml"


def test_manifest_urls_are_the_routes_the_control_listener_mounts() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    app = web.Application()
    # Only the routes are inspected: the handler object is never called.
    interactions.install(app, interactions.SlackInteractions.__new__(interactions.SlackInteractions))
    mounted = {r.resource.canonical for r in app.router.routes() if r.method == "POST"}  # type: ignore[union-attr]
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == "/grantgate"
    assert urlsplit(command["url"]).path in mounted
    assert urlsplit(manifest["settings"]["interactivity"]["request_url"]).path in mounted
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


def test_manifest_asks_for_the_scopes_of_every_web_api_method_used() -> None:
    scopes = set(yaml.safe_load(MANIFEST.read_text())["oauth_config"]["scopes"]["bot"])
    # chat.postMessage/update: chat:write; conversations.open: im:write; users.info: users:read;
    # users.lookupByEmail and the email in users.info: users:read.email; the slash command: commands.
    assert {"chat:write", "im:write", "users:read", "users:read.email", "commands"} <= scopes
