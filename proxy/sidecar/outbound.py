"""The job's request as it leaves the sidecar: its own auth removed, signed with the pod's credentials (pure).

Signing uses proxy.s3.sigv4.sign, the same code that signs upstream and verifies callers at the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from proxy.s3 import sigv4
from proxy.s3.request import RequestHead
from proxy.s3.upstream import Credentials
from proxy.sidecar.resign import ResignKey

# The job's authentication and the hop's own framing: replaced or recomputed for the next hop.
_DROP = frozenset(
    {
        "authorization",
        "host",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
        "content-length",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)
# Forwarded but not signed: clients and HTTP libraries may rewrite them on the way.
_UNSIGNED = frozenset({"user-agent", "accept-encoding", "accept"})


@dataclass(frozen=True, slots=True)
class Outbound:
    query: tuple[tuple[str, str], ...]
    headers: dict[str, str]  # to send: signed ones, the signature's own, and the unsigned extras
    payload_hash: str
    resign: ResignKey | None  # set when the body's chunk signatures must be re-signed


def job_payload_hash(head: RequestHead) -> str:
    """What the job declared about its body; UNSIGNED-PAYLOAD when it declared nothing."""
    declared = head.headers.get("x-amz-content-sha256") or head.query_value("X-Amz-Content-Sha256")
    return declared.strip() if declared else sigv4.UNSIGNED_PAYLOAD


def build(head: RequestHead, creds: Credentials, *, host: str, region: str, now: datetime) -> Outbound:
    """Re-sign `head` for the gateway at `host`, keeping path, query, payload hash and framing."""
    query = tuple(
        (k, v) for k, v in head.query if k not in sigv4.PRESIGN_PARAMS and k != "X-Amz-Content-Sha256"
    )
    to_sign: dict[str, str] = {"host": host}
    extra: dict[str, str] = {}
    for name, value in head.headers.items():
        lname = name.lower()
        if lname in _DROP:
            continue
        target = extra if lname in _UNSIGNED else to_sign
        target[lname] = f"{target[lname]},{value}" if lname in target else value
    payload_hash = job_payload_hash(head)
    added = sigv4.sign(
        head.method,
        head.raw_path,
        query,
        to_sign,
        payload_hash,
        access_key_id=creds.access_key_id,
        secret=creds.secret_access_key,
        session_token=creds.session_token,
        region=region,
        now=now,
    )
    resign = None
    if payload_hash in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER):
        amz_date = added["x-amz-date"]
        resign = ResignKey(
            signing_key=sigv4.signing_key(creds.secret_access_key, amz_date[:8], region),
            amz_date=amz_date,
            scope=f"{amz_date[:8]}/{region}/s3/aws4_request",
            seed_signature=added["Authorization"].rsplit("Signature=", 1)[1],
        )
    return Outbound(query, {**extra, **to_sign, **added}, payload_hash, resign)
