"""The access reviews table: opening a review, claiming its reminder, deciding it and missing it.

Every transition is a conditional insert or update, so several gateways sweeping at once open each
review once, send each reminder once and revoke each missed grant once; a decision and the revocation it
implies commit together.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.access.grants import Grant
from proxy.access.requests import RequestStatus
from proxy.access.review_rules import DueReview
from proxy.access.reviews import AccessReview, ReviewStatus
from proxy.store.engine import insert_ignoring_conflict, require_aware, write_engine
from proxy.store.schema import access_requests
from proxy.store.schema import access_reviews as reviews
from proxy.store.sql import SqlStore, revoke_in

SYSTEM = "system"
_MAX_EXTENSIONS = 100


@dataclass(frozen=True, slots=True)
class Closed:
    """A review that left `open`, and the grants this very change revoked: its grant, and the extensions
    already approved to carry it on (revoking access in a review ends it, not just its current grant)."""

    review: AccessReview
    revoked: tuple[Grant, ...] = ()


def new_review_id() -> str:
    return "v_" + secrets.token_urlsafe(9)


class ReviewStore:
    def __init__(self, store: SqlStore) -> None:
        self._engine = store.engine
        self._writer = write_engine(store.engine)

    async def get(self, review_id: str) -> AccessReview | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(reviews).where(reviews.c.id == review_id))).first()
        return None if row is None else _review(row)

    async def find(self, *, status: ReviewStatus | None = None, limit: int = 500) -> list[AccessReview]:
        """Soonest deadline first."""
        query = select(reviews).order_by(reviews.c.deadline, reviews.c.id).limit(limit)
        if status is not None:
            query = query.where(reviews.c.status == status.value)
        async with self._engine.connect() as conn:
            return [_review(row) for row in await conn.execute(query)]

    async def of_grants(self, grant_ids: Iterable[str]) -> list[AccessReview]:
        ids = sorted(set(grant_ids))
        if not ids:
            return []
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(reviews).where(reviews.c.grant_id.in_(ids)))
            return [_review(row) for row in rows]

    async def open(self, due: DueReview, *, now: datetime) -> AccessReview | None:
        """Open the review `due` describes; None if another gateway opened it first."""
        require_aware(now)
        review = AccessReview(
            id=new_review_id(),
            grant_id=due.grant.id,
            principal=due.grant.principal,
            resource_name=due.resource.name,
            bucket=due.grant.bucket,
            prefix=due.grant.prefix,
            period_start=due.period_start,
            due_at=due.due_at,
            deadline=due.deadline,
            remind_at=due.remind_at,
            created_at=now,
        )
        async with self._writer.begin() as conn:
            stmt = insert_ignoring_conflict(conn, reviews, "grant_id", "due_at").values(**_values(review))
            if (await conn.execute(stmt)).rowcount == 1:
                return review
            # This period's review lapsed while the resource was not reviewed: it opens again, once.
            again = await conn.execute(
                update(reviews)
                .where(
                    reviews.c.grant_id == review.grant_id,
                    reviews.c.due_at == review.due_at,
                    reviews.c.status == ReviewStatus.LAPSED.value,
                )
                .values(
                    status=ReviewStatus.OPEN.value,
                    deadline=review.deadline,
                    remind_at=review.remind_at,
                    reminded_at=None,
                    decided_by="",
                    decided_at=None,
                    comment="",
                )
                .returning(reviews)
            )
            row = again.first()
        return None if row is None else _review(row)

    async def claim_reminders(self, now: datetime) -> list[AccessReview]:
        """Open reviews whose last reminder is due and not sent yet; each is claimed by one caller."""
        require_aware(now)
        claimed: list[AccessReview] = []
        async with self._writer.begin() as conn:
            ids = list(
                await conn.scalars(
                    select(reviews.c.id)
                    .where(
                        reviews.c.status == ReviewStatus.OPEN.value,
                        reviews.c.remind_at <= now,
                        reviews.c.deadline > now,
                        reviews.c.reminded_at.is_(None),
                    )
                    .order_by(reviews.c.id)  # one lock order for every gateway: no deadlock
                )
            )
            for review_id in ids:
                taken = await conn.execute(
                    update(reviews)
                    .where(reviews.c.id == review_id, reviews.c.reminded_at.is_(None))
                    .values(reminded_at=now)
                    .returning(reviews)
                )
                row = taken.first()
                if row is not None:
                    claimed.append(_review(row))
        return claimed

    async def decide(
        self, review_id: str, status: ReviewStatus, *, actor: str, comment: str, now: datetime, reason: str
    ) -> Closed | None:
        """open -> `status` (confirmed, revoked) while still open; a revocation revokes the grant in the
        same transaction. None: no longer open (someone else decided, or the sweep missed it)."""
        require_aware(now)
        async with self._writer.begin() as conn:
            return await _close(conn, review_id, status, actor=actor, comment=comment, now=now, reason=reason)

    async def claim_missed(self, now: datetime, ended: Iterable[str], *, reason: str) -> list[Closed]:
        """Close open reviews past their deadline: `missed` (grant revoked), or `lapsed` when the grant is
        in `ended` (ids of grants that ended by themselves). Each review is closed by exactly one caller."""
        require_aware(now)
        gone = set(ended)
        closed: list[Closed] = []
        async with self._writer.begin() as conn:
            rows = list(
                await conn.execute(
                    select(reviews.c.id, reviews.c.grant_id)
                    .where(reviews.c.status == ReviewStatus.OPEN.value, reviews.c.deadline <= now)
                    .order_by(reviews.c.id)
                )
            )
            for row in rows:
                missed = row.grant_id not in gone
                status = ReviewStatus.MISSED if missed else ReviewStatus.LAPSED
                done = await _close(
                    conn, row.id, status, actor=SYSTEM, comment="", now=now, reason=reason if missed else ""
                )
                if done is not None:
                    closed.append(done)
        return closed

    async def close_lapsed(self, review_ids: Iterable[str], *, now: datetime) -> None:
        """Open reviews whose grant ended before the deadline: nothing left to decide."""
        async with self._writer.begin() as conn:
            for review_id in review_ids:
                await _close(
                    conn, review_id, ReviewStatus.LAPSED, actor=SYSTEM, comment="", now=now, reason=""
                )


async def _close(
    conn: AsyncConnection,
    review_id: str,
    status: ReviewStatus,
    *,
    actor: str,
    comment: str,
    now: datetime,
    reason: str,
) -> Closed | None:
    changed = await conn.execute(
        update(reviews)
        .where(reviews.c.id == review_id, reviews.c.status == ReviewStatus.OPEN.value)
        .values(status=status.value, decided_by=actor, decided_at=now, comment=comment)
        .returning(reviews)
    )
    row = changed.first()
    if row is None:
        return None
    review = _review(row)
    if status not in (ReviewStatus.REVOKED, ReviewStatus.MISSED):
        return Closed(review)
    revoked: list[Grant] = []
    for grant_id in [review.grant_id, *await _extensions(conn, review.grant_id)]:
        changed_now, grant = await revoke_in(conn, grant_id, now=now, actor=actor, reason=reason)
        if changed_now and grant is not None:
            revoked.append(grant)
    return Closed(review, tuple(revoked))


async def _extensions(conn: AsyncConnection, grant_id: str) -> list[str]:
    """The grants of approved extensions of `grant_id`, and of theirs, and so on (bounded)."""
    found: list[str] = []
    frontier = [grant_id]
    while frontier and len(found) < _MAX_EXTENSIONS:
        rows = await conn.execute(
            select(access_requests.c.grant_id, access_requests.c.grant_ids).where(
                access_requests.c.extends_grant.in_(frontier),
                access_requests.c.status == RequestStatus.APPROVED.value,
            )
        )
        frontier = [g for row in rows for g in (row.grant_ids or [row.grant_id]) if g and g not in found]
        found.extend(frontier)
    return found


def _values(review: AccessReview) -> dict[str, Any]:
    return {
        "id": review.id,
        "grant_id": review.grant_id,
        "principal": review.principal,
        "resource_name": review.resource_name,
        "bucket": review.bucket,
        "prefix": review.prefix,
        "period_start": review.period_start,
        "due_at": review.due_at,
        "deadline": review.deadline,
        "remind_at": review.remind_at,
        "created_at": review.created_at,
        "status": review.status.value,
        "reminded_at": review.reminded_at,
        "decided_by": review.decided_by,
        "decided_at": review.decided_at,
        "comment": review.comment,
    }


def _review(row: Row[Any]) -> AccessReview:
    return AccessReview(
        id=row.id,
        grant_id=row.grant_id,
        principal=row.principal,
        resource_name=row.resource_name,
        bucket=row.bucket,
        prefix=row.prefix,
        period_start=row.period_start,
        due_at=row.due_at,
        deadline=row.deadline,
        remind_at=row.remind_at,
        created_at=row.created_at,
        status=ReviewStatus(row.status),
        reminded_at=row.reminded_at,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        comment=row.comment,
    )
