"""A local SMTP server (aiosmtpd) that demands STARTTLS and then authentication, as a mail relay does;
it keeps what it was handed."""

from __future__ import annotations

import email
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from support.certs import self_signed_cert
from support.world import free_port

USERNAME, PASSWORD = "grantgate", "smtp-e2e-secret"


@dataclass
class Mailbox:
    host: str = "127.0.0.1"
    port: int = 0
    ca_file: Path | None = None
    messages: list[tuple[tuple[str, ...], Message]] = field(default_factory=list)

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
        assert session.authenticated and session.ssl is not None  # the server refuses otherwise
        self.messages.append((tuple(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for rcpt, m in self.messages if address in rcpt]


def _authenticator(_server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USERNAME.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@contextmanager
def running_smtp(directory: Path) -> Iterator[Mailbox]:
    cert, key = self_signed_cert(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    box = Mailbox(port=free_port(), ca_file=cert)
    controller = Controller(
        box,
        hostname=box.host,
        port=box.port,
        tls_context=context,
        require_starttls=True,
        authenticator=_authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
