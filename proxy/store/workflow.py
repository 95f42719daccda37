"""The workflow's tables: access requests, approvals, API tokens, standing grants and expiry notices.

Works on SqlStore's engine. Every transition is a conditional update inside one transaction, so two
approvers clicking at once, or two gateways sweeping at once, still give exactly one outcome. Writes that
change what gateways must see (a new or revoked grant) bump the store version in the same transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, Update, and_, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.access.budgets import Budget
from proxy.access.grants import Action, Grant, parse_actions
from proxy.access.requests import AccessRequest, Approval, BundlePart, RequestStatus
from proxy.access.terms import TermsAcceptance
from proxy.identity.principals import Principal
from proxy.identity.tokens import ApiToken, hash_secret, new_token, parse_token, secret_matches
from proxy.store.engine import StoreError, insert_ignoring_conflict, require_aware, write_engine
from proxy.store.schema import (
    access_requests,
    api_tokens,
    grant_notices,
    grants,
    principals,
    request_approvals,
)
from proxy.store.sql import (
    SqlStore,
    actions_text,
    budget_values,
    bump_version,
    check_name,
    grant_active,
    grant_of_row,
    new_grant_id,
)

# Serialises standing-access syncs of gateways that start at the same moment (PostgreSQL).
_PG_STANDING_LOCK = 0x7374616E64  # "stand"
STANDING_SOURCE = "standing"
STANDING_CREATOR = "policy"
# Expired grants older than this get no "expired" notice: a first start must not replay history.
EXPIRED_NOTICE_WINDOW = timedelta(days=1)
_REMOVED = "removed from the policy"


class RequestConflict(StoreError):
    """The request changed state under us (decided by someone else, or lapsed)."""


@dataclass(frozen=True, slots=True)
class NewGrant:
    """What to grant when a request is approved; the clock starts at the approval."""

    source: str
    created_by: str


@dataclass(frozen=True, slots=True)
class ApprovalResult:
    request: AccessRequest
    counted: bool  # False: this approver had already approved (each approver counts once)
    grant: Grant | None  # set when this approval was the last one needed
    more: tuple[Grant, ...] = ()  # a bundle's other grants, made with `grant`


@dataclass(frozen=True, slots=True)
class StandingEntry:
    principal: str
    bucket: str
    prefix: str
    actions: frozenset[Action]


def new_request_id() -> str:
    return "r_" + secrets.token_urlsafe(9)


class WorkflowStore:
    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._engine = store.engine
        self._writer = write_engine(store.engine)

    # --- requests ---

    async def insert_request(self, request: AccessRequest, grant: NewGrant | None = None) -> AccessRequest:
        """Store a new request; with `grant`, it is approved at once and its grant created with it."""
        require_aware(request.created_at, request.expires_at)
        async with self._writer.begin() as conn:
            made: list[Grant] = []
            if grant is not None:
                made = await _insert_grants(conn, request, grant, request.created_at)
                request = replace(request, grant_id=made[0].id, grant_ids=tuple(g.id for g in made))
            await conn.execute(insert(access_requests).values(**_request_values(request)))
            if made:
                await bump_version(conn, [g.id for g in made])
        return request

    async def count_pending(self) -> int:
        """Access requests waiting for a decision (for the pending-requests gauge)."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                select(func.count()).select_from(access_requests).where(access_requests.c.status == "pending")
            )
        return int(found or 0)

    async def get_request(self, request_id: str) -> AccessRequest | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(access_requests).where(access_requests.c.id == request_id))
            ).first()
            if row is None:
                return None
            approvals = await _approvals(conn, [request_id])
        return _request(row, approvals.get(request_id, ()))

    async def list_requests(
        self,
        *,
        status: RequestStatus | None = None,
        requester: str | None = None,
        visible_to: tuple[str, Iterable[str]] | None = None,
        limit: int = 500,
    ) -> list[AccessRequest]:
        """Newest first. `visible_to=(name, resource names)`: only `name`'s own requests and those for
        the resources named."""
        query = select(access_requests).order_by(access_requests.c.created_at.desc(), access_requests.c.id)
        if status is not None:
            query = query.where(access_requests.c.status == status.value)
        if requester is not None:
            query = query.where(access_requests.c.requester == requester)
        if visible_to is not None:
            name, resources = visible_to
            query = query.where(
                or_(
                    access_requests.c.requester == name,
                    access_requests.c.resource_name.in_(sorted(set(resources))),
                )
            )
        async with self._engine.connect() as conn:
            rows = list(await conn.execute(query.limit(limit)))
            approvals = await _approvals(conn, [row.id for row in rows])
        return [_request(row, approvals.get(row.id, ())) for row in rows]

    async def approve(
        self, request_id: str, approver: str, comment: str, *, now: datetime, required: int, grant: NewGrant
    ) -> ApprovalResult:
        """Record one approval; the one that reaches `required` distinct approvals creates the grant.

        The request row is locked first (PostgreSQL `FOR UPDATE`; SQLite's write transaction is
        exclusive), so concurrent approvals are counted one after the other and exactly one of them
        finds the request still pending with enough approvals.
        """
        require_aware(now)
        async with self._writer.begin() as conn:
            row = (
                await conn.execute(
                    select(access_requests).where(access_requests.c.id == request_id).with_for_update()
                )
            ).first()
            if row is None:
                raise RequestConflict(f"unknown request {request_id!r}")
            _require_pending(row, now)
            stmt = insert_ignoring_conflict(conn, request_approvals, "request_id", "approver").values(
                request_id=request_id, approver=approver, decided_at=now, comment=comment
            )
            counted = (await conn.execute(stmt)).rowcount == 1
            count = await conn.scalar(
                select(func.count())
                .select_from(request_approvals)
                .where(request_approvals.c.request_id == request_id)
            )
            made: Grant | None = None
            every: list[Grant] = []
            if counted and int(count or 0) >= required:
                current = _request(row, ())
                # A bundle's grants are made in this one transaction: together or not at all.
                every = await _insert_grants(conn, current, grant, now, approvals=int(count or 0))
                made = every[0]
                await conn.execute(
                    _while_pending(request_id).values(
                        status=RequestStatus.APPROVED.value,
                        decided_by=approver,
                        decided_at=now,
                        decision_comment=comment,
                        grant_id=made.id,
                        grant_ids=[g.id for g in every],
                    )
                )
                await bump_version(conn, [g.id for g in every])
            row = (
                await conn.execute(select(access_requests).where(access_requests.c.id == request_id))
            ).one()
            approvals = await _approvals(conn, [request_id])
        return ApprovalResult(_request(row, approvals.get(request_id, ())), counted, made, tuple(every[1:]))

    async def close_request(
        self, request_id: str, status: RequestStatus, *, actor: str, comment: str, now: datetime
    ) -> AccessRequest:
        """pending -> denied | cancelled, only if still pending and not lapsed."""
        require_aware(now)
        async with self._writer.begin() as conn:
            result = await conn.execute(
                _while_pending(request_id)
                .where(access_requests.c.expires_at > now)
                .values(status=status.value, decided_by=actor, decided_at=now, decision_comment=comment)
            )
            if result.rowcount != 1:
                row = (
                    await conn.execute(select(access_requests).where(access_requests.c.id == request_id))
                ).first()
                if row is None:
                    raise RequestConflict(f"unknown request {request_id!r}")
                _require_pending(row, now)
        found = await self.get_request(request_id)
        assert found is not None
        return found

    async def expire_pending(self, now: datetime, *, limit: int = 1000) -> list[AccessRequest]:
        """Move lapsed pending requests to `expired`; returns only those this call moved."""
        require_aware(now)
        async with self._writer.begin() as conn:
            ids = list(
                await conn.scalars(
                    select(access_requests.c.id)
                    .where(
                        access_requests.c.status == RequestStatus.PENDING.value,
                        access_requests.c.expires_at <= now,
                    )
                    .limit(limit)
                )
            )
            moved: list[str] = []
            for request_id in ids:
                result = await conn.execute(
                    _while_pending(request_id).values(
                        status=RequestStatus.EXPIRED.value,
                        decided_by="system",
                        decided_at=now,
                        decision_comment="no decision before the request lapsed",
                    )
                )
                if result.rowcount == 1:
                    moved.append(request_id)
        found = [await self.get_request(i) for i in moved]
        return [r for r in found if r is not None]

    async def review(self, request_id: str, *, reviewer: str, comment: str, now: datetime) -> AccessRequest:
        require_aware(now)
        async with self._writer.begin() as conn:
            result = await conn.execute(
                update(access_requests)
                .where(
                    access_requests.c.id == request_id,
                    access_requests.c.break_glass.is_(True),
                    access_requests.c.reviewed_at.is_(None),
                )
                .values(reviewed_by=reviewer, reviewed_at=now, review_comment=comment)
            )
        if result.rowcount != 1:
            raise RequestConflict(f"request {request_id} is not an unreviewed break-glass request")
        found = await self.get_request(request_id)
        assert found is not None
        return found

    # --- API tokens ---

    async def create_token(
        self, principal: str, *, now: datetime, description: str = ""
    ) -> tuple[ApiToken, str]:
        """A new token for an existing principal, and the token string: shown once, only its hash kept."""
        require_aware(now)
        token_id, token = new_token()
        parsed = parse_token(token)
        assert parsed is not None
        async with self._writer.begin() as conn:
            known = await conn.scalar(select(principals.c.name).where(principals.c.name == principal))
            if known is None:
                raise StoreError(f"unknown principal {principal!r}")
            await conn.execute(
                insert(api_tokens).values(
                    id=token_id,
                    principal=principal,
                    token_hash=hash_secret(parsed[1]),
                    description=description,
                    created_at=now,
                    revoked_at=None,
                )
            )
        return ApiToken(token_id, principal, now, None, description), token

    async def principal_for_token(self, token: str) -> Principal | None:
        """The principal (with its groups as they are now) a valid, unrevoked token belongs to."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        token_id, secret = parsed
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(api_tokens.c.token_hash, principals.c.name, principals.c.groups)
                    .join(principals, principals.c.name == api_tokens.c.principal)
                    .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                )
            ).first()
        if row is None or not secret_matches(secret, row.token_hash):
            return None
        return Principal(row.name, frozenset(row.groups))

    async def list_tokens(self, principal: str | None = None) -> list[ApiToken]:
        query = select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.id)
        if principal is not None:
            query = query.where(api_tokens.c.principal == principal)
        async with self._engine.connect() as conn:
            return [
                ApiToken(row.id, row.principal, row.created_at, row.revoked_at, row.description)
                for row in await conn.execute(query)
            ]

    async def revoke_token(self, token_id: str, *, now: datetime) -> bool:
        """True if the token exists (revoking twice keeps the first time)."""
        require_aware(now)
        async with self._writer.begin() as conn:
            await conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            found = await conn.scalar(select(api_tokens.c.id).where(api_tokens.c.id == token_id))
        return found is not None

    # --- standing access ---

    async def sync_standing(
        self, wanted: Sequence[StandingEntry], *, now: datetime
    ) -> tuple[list[Grant], list[Grant]]:
        """Make the policy's standing grants exist, and revoke those the policy no longer lists.

        Only grants this sync created (source "standing", created by "policy") are touched. Returns
        (created, revoked).
        """
        require_aware(now)
        for entry in wanted:
            check_name(entry.principal, "principal")
        async with self._writer.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_STANDING_LOCK})
            rows = await conn.execute(
                select(grants).where(
                    grants.c.source == STANDING_SOURCE,
                    grants.c.created_by == STANDING_CREATOR,
                    grant_active(now),
                )
            )
            existing = {_standing_key(g): g for g in (grant_of_row(row) for row in rows)}
            keep = {(e.principal, e.bucket, e.prefix, frozenset(e.actions)) for e in wanted}
            created: list[Grant] = []
            revoked: list[Grant] = []
            for key, grant in existing.items():
                if key not in keep:
                    await conn.execute(
                        update(grants)
                        .where(grants.c.id == grant.id, grants.c.revoked_at.is_(None))
                        .values(
                            revoked_at=now,
                            revoked_by=STANDING_CREATOR,
                            revoke_reason=_REMOVED,
                        )
                    )
                    revoked.append(
                        replace(
                            grant,
                            revoked_at=now,
                            extra={**grant.extra, "revoked_by": STANDING_CREATOR, "revoke_reason": _REMOVED},
                        )
                    )
            for principal, bucket, prefix, actions in sorted(keep - existing.keys(), key=str):
                grant = Grant(
                    id=new_grant_id(),
                    principal=principal,
                    bucket=bucket,
                    prefix=prefix,
                    actions=actions,
                    created_at=now,
                    expires_at=None,
                    source=STANDING_SOURCE,
                    extra={"created_by": STANDING_CREATOR, "revoked_by": "", "revoke_reason": ""},
                )
                await conn.execute(insert(grants).values(**_grant_values(grant, STANDING_CREATOR)))
                created.append(grant)
            if created or revoked:
                await bump_version(conn, [g.id for g in (*created, *revoked)])
        return created, revoked

    # --- expiry notices ---

    async def claim_expiring(self, now: datetime, warning: timedelta) -> list[Grant]:
        """Active grants ending within `warning` that nobody has warned about yet; claimed for the caller."""
        require_aware(now)
        condition = and_(grant_active(now), grants.c.expires_at <= now + warning)
        return await self._claim("expiring", condition, now)

    async def claim_expired(self, now: datetime) -> list[Grant]:
        """Grants that reached their expiry unrevoked (recently) and were not reported yet."""
        require_aware(now)
        condition = and_(
            grants.c.expires_at <= now,
            grants.c.expires_at > now - EXPIRED_NOTICE_WINDOW,
            or_(grants.c.revoked_at.is_(None), grants.c.revoked_at > grants.c.expires_at),
        )
        return await self._claim("expired", condition, now)

    async def _claim(self, kind: str, condition: Any, now: datetime) -> list[Grant]:
        noticed = select(grant_notices.c.grant_id).where(grant_notices.c.kind == kind)
        async with self._writer.begin() as conn:
            rows = list(
                await conn.execute(select(grants).where(condition, grants.c.id.not_in(noticed)).limit(1000))
            )
            claimed: list[Grant] = []
            for row in rows:
                stmt = insert_ignoring_conflict(conn, grant_notices, "grant_id", "kind").values(
                    grant_id=row.id, kind=kind, sent_at=now
                )
                if (await conn.execute(stmt)).rowcount == 1:
                    claimed.append(grant_of_row(row))
        return claimed


# --- helpers ------------------------------------------------------------------------------------------


def _while_pending(request_id: str) -> Update:
    """An UPDATE of one request that matches only while it is still pending: a concurrent decision wins."""
    return update(access_requests).where(
        access_requests.c.id == request_id, access_requests.c.status == RequestStatus.PENDING.value
    )


def _require_pending(row: Row[Any], now: datetime) -> None:
    if row.status != RequestStatus.PENDING.value:
        raise RequestConflict(f"request {row.id} is already {row.status}")
    if row.expires_at <= now:
        raise RequestConflict(f"request {row.id} has expired without enough approvals")


async def _insert_grants(
    conn: AsyncConnection, request: AccessRequest, spec: NewGrant, now: datetime, *, approvals: int = 0
) -> list[Grant]:
    """The grant of each resource the request asks for (one, or a bundle's), in its order; `approvals`:
    how many distinct people approved it (protected resources need two)."""
    return [await _insert_grant(conn, part, spec, now, approvals=approvals) for part in request.parts()]


async def _insert_grant(
    conn: AsyncConnection, request: AccessRequest, spec: NewGrant, now: datetime, *, approvals: int = 0
) -> Grant:
    starts_at, expires_at = request.window(now)  # the clock starts when access is granted, or scheduled
    grant = Grant(
        id=new_grant_id(),
        principal=request.requester,
        bucket=request.bucket,
        prefix=request.prefix,
        actions=request.actions,
        created_at=now,
        expires_at=expires_at,
        source=spec.source,
        request_id=request.id,
        extra={"created_by": spec.created_by, "revoked_by": "", "revoke_reason": ""},
        starts_at=starts_at,
        budget=request.budget,
        approvals=approvals,
        terms=request.terms,
    )
    await conn.execute(insert(grants).values(**_grant_values(grant, spec.created_by)))
    return grant


def _grant_values(grant: Grant, created_by: str) -> dict[str, Any]:
    return {
        "id": grant.id,
        "principal": grant.principal,
        "bucket": grant.bucket,
        "prefix": grant.prefix,
        "actions": actions_text(grant.actions),
        "created_at": grant.created_at,
        "expires_at": grant.expires_at,
        "revoked_at": None,
        "revoked_by": "",
        "revoke_reason": "",
        "source": grant.source,
        "request_id": grant.request_id,
        "created_by": created_by,
        "starts_at": grant.starts_at,
        "approvals": grant.approvals,
        "terms_accepted": grant.terms.as_dict() if grant.terms is not None else None,
        **budget_values(grant.budget),
    }


def _standing_key(grant: Grant) -> tuple[str, str, str, frozenset[Action]]:
    return (grant.principal, grant.bucket, grant.prefix, frozenset(grant.actions))


def _request_values(request: AccessRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "requester": request.requester,
        "resource_name": request.resource_name,
        "bucket": request.bucket,
        "prefix": request.prefix,
        "actions": actions_text(request.actions),
        "duration_seconds": int(request.duration.total_seconds()),
        "justification": request.justification,
        "status": request.status.value,
        "created_at": request.created_at,
        "expires_at": request.expires_at,
        "approvals_required": request.approvals_required,
        "break_glass": request.break_glass,
        "decided_by": request.decided_by,
        "decided_at": request.decided_at,
        "decision_comment": request.decision_comment,
        "grant_id": request.grant_id,
        "source_cidrs": list(request.source_cidrs),
        "reviewed_by": request.reviewed_by,
        "reviewed_at": request.reviewed_at,
        "review_comment": request.review_comment,
        "starts_at": request.starts_at,
        "ticket": request.ticket,
        "extends_grant": request.extends,
        "bundle": [
            {"resource_name": p.resource_name, "bucket": p.bucket, "prefix": p.prefix} for p in request.bundle
        ]
        or None,
        "grant_ids": list(request.grant_ids) or None,
        "budget": request.budget.as_dict() if request.budget is not None else None,
        "protected": request.protected,
        "terms_accepted": request.terms.as_dict() if request.terms is not None else None,
    }


async def _approvals(conn: AsyncConnection, request_ids: list[str]) -> dict[str, tuple[Approval, ...]]:
    if not request_ids:
        return {}
    rows = await conn.execute(
        select(request_approvals)
        .where(request_approvals.c.request_id.in_(request_ids))
        .order_by(request_approvals.c.decided_at, request_approvals.c.approver)
    )
    out: dict[str, list[Approval]] = {}
    for row in rows:
        out.setdefault(row.request_id, []).append(Approval(row.approver, row.decided_at, row.comment))
    return {k: tuple(v) for k, v in out.items()}


def _request(row: Row[Any], approvals: tuple[Approval, ...]) -> AccessRequest:
    return AccessRequest(
        id=row.id,
        requester=row.requester,
        resource_name=row.resource_name,
        bucket=row.bucket,
        prefix=row.prefix,
        actions=parse_actions(row.actions),
        duration=timedelta(seconds=row.duration_seconds),
        justification=row.justification,
        status=RequestStatus(row.status),
        created_at=row.created_at,
        expires_at=row.expires_at,
        approvals_required=row.approvals_required,
        approvals=approvals,
        break_glass=bool(row.break_glass),
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        decision_comment=row.decision_comment,
        grant_id=row.grant_id,
        source_cidrs=tuple(row.source_cidrs or ()),
        reviewed_by=row.reviewed_by,
        reviewed_at=row.reviewed_at,
        review_comment=row.review_comment,
        starts_at=row.starts_at,
        ticket=row.ticket,
        extends=row.extends_grant,
        bundle=tuple(BundlePart(p["resource_name"], p["bucket"], p["prefix"]) for p in row.bundle or ()),
        grant_ids=tuple(row.grant_ids or ()),
        budget=Budget.from_dict(row.budget),
        protected=bool(row.protected),
        terms=TermsAcceptance.from_dict(row.terms_accepted),
    )
