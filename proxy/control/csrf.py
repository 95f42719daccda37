"""CSRF protection for the web pages: a synchronizer token bound to the session (pure).

Every state-changing form carries the session's token in a hidden field; a POST without it, or with
another session's token, is refused with 403 before any handler runs.
"""

from __future__ import annotations

import hmac

FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def needs_check(method: str) -> bool:
    return method.upper() not in SAFE_METHODS


def token_matches(session_token: str | None, submitted: str | None) -> bool:
    if not session_token or not submitted:
        return False
    return hmac.compare_digest(session_token.encode(), submitted.encode())
