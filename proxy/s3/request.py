"""The parts of an incoming HTTP request that S3 semantics depend on, decoupled from aiohttp."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes

from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping

from proxy.errors import S3Error


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    raw_path: str  # exactly as received, still percent-encoded, without the query
    raw_query: str  # exactly as received, without the leading '?'
    headers: MultiMapping[str]  # case-insensitive; repeated headers kept
    query: tuple[tuple[str, str], ...]  # decoded once, in the order received

    @classmethod
    def build(
        cls, method: str, raw_path_and_query: str, headers: MultiMapping[str] | list[tuple[str, str]]
    ) -> RequestHead:
        raw_path, _, raw_query = raw_path_and_query.partition("?")
        hdrs = headers if isinstance(headers, CIMultiDictProxy | CIMultiDict) else CIMultiDict(headers)
        return cls(method.upper(), raw_path, raw_query, hdrs, parse_query(raw_query))

    @property
    def host(self) -> str:
        return self.headers.get("Host", "")

    def query_value(self, name: str) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return None

    def has_query(self, name: str) -> bool:
        return any(k == name for k, _ in self.query)


def parse_query(raw_query: str) -> tuple[tuple[str, str], ...]:
    """Split and percent-decode a query string once. A bare `?uploads` yields ("uploads", "").

    '+' is kept literally: SigV4 clients encode a space as %20, and S3 itself does not treat '+' as a
    space in the query of a signed request.
    """
    if not raw_query:
        return ()
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        try:
            pairs.append((_strict_unquote(name), _strict_unquote(value)))
        except UnicodeDecodeError:
            raise S3Error.invalid_argument("query string is not valid UTF-8") from None
    return tuple(pairs)


def _strict_unquote(text: str) -> str:
    """unquote(text, errors="strict"), without its per-call regex split for the usual all-ASCII text.

    For ASCII text unquote() decodes the whole string as one run: unquote_to_bytes(text).decode().
    """
    if "%" not in text:
        return text
    if text.isascii():
        return unquote_to_bytes(text).decode("utf-8")
    return unquote(text, errors="strict")
