"""A small client for GrantGate's JSON API, used by the CLI: where to connect, with which token.

The API address and token come from GRANTGATE_API_URL / GRANTGATE_TOKEN, else from the CLI config file
(`$XDG_CONFIG_HOME/grantgate/cli.toml`, written by `grantgate login`).
"""

from __future__ import annotations

import json
import os
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_URL = "GRANTGATE_API_URL"
ENV_TOKEN = "GRANTGATE_TOKEN"  # noqa: S105 - the variable's name, not a secret
TIMEOUT_SECONDS = 30.0
# How the API tells the CLI from other callers, to say where a request was made (proxy/control/api.py).
CLI_USER_AGENT = "grantgate-cli"


class ApiError(Exception):
    """A failed API call, with a message fit to show as is."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.problem = problem or {}  # the whole problem+json, e.g. the terms a refusal carries


def cli_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "grantgate" / "cli.toml"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    api_url: str
    token: str


def load_client_config(fallback_url: str | None = None) -> ClientConfig:
    """Environment first, then the CLI config file, then `fallback_url` (the server config's public_url)."""
    file_values: dict[str, Any] = {}
    path = cli_config_path()
    if path.exists():
        try:
            file_values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ApiError(f"{path}: invalid TOML: {exc}") from None
    url = os.environ.get(ENV_URL) or str(file_values.get("api_url") or "") or (fallback_url or "")
    token = os.environ.get(ENV_TOKEN) or str(file_values.get("token") or "")
    if not url:
        raise ApiError(f"no API address: set {ENV_URL} (e.g. http://127.0.0.1:9001) or run `grantgate login`")
    if not token:
        raise ApiError(
            f"no API token: set {ENV_TOKEN} or run `grantgate login` (an admin creates one with "
            "`grantgate tokens create YOUR_NAME`)"
        )
    return ClientConfig(url.rstrip("/"), token)


def save_client_config(config: ClientConfig) -> Path:
    """Write the CLI config file, readable only by its owner (it holds a token)."""
    path = cli_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"api_url = {json.dumps(config.api_url)}\ntoken = {json.dumps(config.token)}\n")
    tmp.replace(path)
    return path


class ApiClient:
    def __init__(self, config: ClientConfig) -> None:
        self.base = config.api_url
        self._token = config.token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, **query: Any) -> Any:
        params = {k: _query_value(v) for k, v in query.items() if v is not None}
        url = f"{self.base}/api/v1{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        if not url.startswith(("http://", "https://")):
            raise ApiError(f"the API address must start with http:// or https://, got {self.base!r}")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - scheme checked above
        request.add_header("Authorization", f"Bearer {self._token}")
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", CLI_USER_AGENT)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
                raw = response.read()
                lines = response.headers.get_content_type() == "application/x-ndjson"
        except urllib.error.HTTPError as exc:
            raise _problem(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"cannot reach the GrantGate API at {self.base}: {reason}") from None
        if lines:  # an export: one JSON document per line
            return [json.loads(line) for line in raw.splitlines() if line.strip()]
        return json.loads(raw) if raw else None

    # One method per route, so the CLI reads as what it does.

    def whoami(self) -> dict[str, Any]:
        return _object(self.call("GET", "/whoami"))

    def create_request(self, body: dict[str, Any]) -> dict[str, Any]:
        return _object(self.call("POST", "/requests", body))

    def get_request(self, request_id: str) -> dict[str, Any]:
        return _object(self.call("GET", f"/requests/{_segment(request_id)}"))

    def list_requests(self, **query: Any) -> list[dict[str, Any]]:
        return _objects(_object(self.call("GET", "/requests", **query)).get("requests"))

    def decide(self, request_id: str, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        return _object(self.call("POST", f"/requests/{_segment(request_id)}/{verb}", body))

    def list_grants(self, **query: Any) -> list[dict[str, Any]]:
        return _objects(_object(self.call("GET", "/grants", **query)).get("grants"))

    def revoke_grant(self, grant_id: str, reason: str = "") -> dict[str, Any]:
        return _object(self.call("DELETE", f"/grants/{_segment(grant_id)}", {"reason": reason}))


# The API's answers are checked for shape once here, so a wrong server (or proxy) in between gives one
# readable line rather than a KeyError deep in the CLI.


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(f"unexpected answer from the GrantGate API: expected a JSON object, got {value!r:.80}")
    return value


def _objects(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ApiError(
            f"unexpected answer from the GrantGate API: expected a list of objects, got {value!r:.80}"
        )
    return value


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _problem(exc: urllib.error.HTTPError) -> ApiError:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    if isinstance(body, dict) and body.get("detail"):
        return ApiError(str(body["detail"]), exc.code, body.get("code"), body)
    return ApiError(f"the API answered {exc.code} {exc.reason}", exc.code)
