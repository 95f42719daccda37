"""Periodic reviews of long-held access: opening the reviews that fell due, reminding, revoking what was
missed (the sweep), and the reviewers' confirm / revoke. The rules are pure, in proxy/access/review_rules.py;
each transition is claimed in the store (proxy/store/reviews.py), so any number of gateways may sweep."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from proxy.access import review_rules as rules
from proxy.access.durations import iso
from proxy.access.events import GrantRevoked, ReviewDecided, ReviewDue
from proxy.access.grants import Grant
from proxy.access.reviews import MISSED_REASON, AccessReview, Decision, ReviewStatus, parse_decision
from proxy.audit.records import Usage
from proxy.audit.store import AuditStore
from proxy.identity.principals import Principal
from proxy.store.reviews import Closed, ReviewStore
from proxy.workflow.context import SYSTEM, WorkflowContext
from proxy.workflow.errors import Conflict, Forbidden, Invalid, NotFound


@dataclass(frozen=True, slots=True)
class ReviewSweep:
    opened: tuple[AccessReview, ...] = ()
    reminded: tuple[AccessReview, ...] = ()
    missed: tuple[AccessReview, ...] = ()


@dataclass(frozen=True, slots=True)
class ReviewUse:
    """A holder's use of the access under review over the period reviewed (from its start until the
    decision, or now), through every grant of the run it was held through; `partial`: more records than
    were read, so the figures are a floor."""

    totals: Usage
    grants: tuple[str, ...]
    partial: bool = False

    @property
    def used_in_period(self) -> bool:
        return self.totals.requests > 0

    def as_dict(self) -> dict[str, Any]:
        t = self.totals
        return {
            "requests": t.requests,
            "objects_read": t.objects_read,
            "bytes_read": t.bytes_read,
            "bytes_written": t.bytes_written,
            "first_used_at": iso(t.first_used_at),
            "last_used_at": iso(t.last_used_at),
            "used_in_period": self.used_in_period,
            "grants": list(self.grants),
            "partial": self.partial,
        }


@dataclass(slots=True)
class Reviews:
    ctx: WorkflowContext
    store: ReviewStore = field(init=False)
    audit: AuditStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = ReviewStore(self.ctx.store)
        self.audit = AuditStore(self.ctx.store)

    # --- the sweep -----------------------------------------------------------------------------------

    async def sweep(self) -> ReviewSweep:
        """Open the reviews that fell due, send the last reminders, and revoke the grants whose review was
        missed. Each step is claimed in the store: with several gateways sweeping, each happens once."""
        ctx = self.ctx
        now = ctx.now()
        reviewing = any(r.review is not None for r in ctx.policy.resources)
        active = await ctx.store.list_grants(active_at=now) if reviewing else []
        reviewed = [g for g in active if rules.reviewed_resource(ctx.policy, g) is not None]
        opened: list[AccessReview] = []
        if reviewed:
            known = await self.store.of_grants(g.id for g in reviewed)
            waiting = {r.grant_id for r in known if r.status is ReviewStatus.OPEN}
            for grant in reviewed:
                if grant.id not in waiting and (review := await self._open_if_due(grant)) is not None:
                    opened.append(review)
        reminded = await self.store.claim_reminders(now)
        for review in reminded:
            ctx.emit(await self._due(review, final=True))
        # Reviews of grants that ended (expired, revoked, extended into a new grant), or of resources the
        # policy no longer reviews, wait for nothing; a suspended grant is still reviewed, and revoked if
        # its review is missed.
        waiting_reviews = await self.store.find(status=ReviewStatus.OPEN)
        ended = {r.grant_id for r in waiting_reviews if await self._moot(r, now)}
        closed = await self.store.claim_missed(now, ended, reason=MISSED_REASON)
        await self._announce(closed, SYSTEM, MISSED_REASON)
        stale = [r.id for r in waiting_reviews if r.grant_id in ended and r.deadline > now]
        if stale:
            await self.store.close_lapsed(stale, now=now)
        missed = tuple(c.review for c in closed if c.review.status is ReviewStatus.MISSED)
        return ReviewSweep(tuple(opened), tuple(reminded), missed)

    async def _moot(self, review: AccessReview, now: datetime) -> bool:
        resource = self.ctx.policy.resource(review.resource_name)
        if resource is None or resource.review is None:
            return True
        grant = await self.ctx.store.get_grant(review.grant_id)
        return grant is None or rules.ended(grant, now)

    async def _run(self, grant: Grant) -> list[Grant]:
        """The run of the holder's grants on the resource that access to `grant` was held on through."""
        resource = rules.reviewed_resource(self.ctx.policy, grant)
        if resource is None or resource.review is None:
            return [grant]
        theirs = [
            g
            for g in await self.ctx.store.list_grants(principal=grant.principal)
            if (matched := self.ctx.policy.match(g.bucket, g.prefix)) and matched[0].name == resource.name
        ]
        return rules.held_run(grant, theirs, resource.review.gap)

    async def _open_if_due(self, grant: Grant) -> AccessReview | None:
        run = await self._run(grant)
        earlier = await self.store.of_grants(g.id for g in run)
        # Any decision starts a new period: a confirmation, or a revocation the holder asked back from.
        decided = [
            r.decided_at
            for r in earlier
            if r.decided_at is not None
            and r.status in (ReviewStatus.CONFIRMED, ReviewStatus.REVOKED, ReviewStatus.MISSED)
        ]
        now = self.ctx.now()
        anchor = rules.period_anchor(rules.run_start(run), decided)
        # The same period's review of an earlier grant of the run (an extension's): its deadline carries over.
        carried = [r.deadline for r in earlier if r.period_start == anchor and r.grant_id != grant.id]
        due = rules.due(self.ctx.policy, grant, anchor, now, min(carried, default=None))
        if due is None:
            return None
        review = await self.store.open(due, now=now)
        if review is not None:
            self.ctx.emit(await self._due(review, final=False))
        return review

    async def _due(self, review: AccessReview, *, final: bool) -> ReviewDue:
        left = review.deadline.isoformat(timespec="minutes")
        reason = f"confirm or revoke by {left}, or the access is revoked"
        use = (await self.usage(review)).totals
        return ReviewDue(self.ctx.now(), SYSTEM, reason, review, self.reviewer_groups(review), final, use)

    def reviewer_groups(self, review: AccessReview) -> tuple[str, ...]:
        resource = self.ctx.policy.resource(review.resource_name)
        return tuple(sorted(rules.reviewer_groups(self.ctx.policy, resource))) if resource else ()

    async def _announce(self, closed: list[Closed], actor: str, reason: str) -> None:
        if any(c.revoked for c in closed):
            await self.ctx.settled()
        now = self.ctx.now()
        for done in closed:
            if done.review.status is ReviewStatus.LAPSED:
                continue
            for grant in done.revoked:
                self.ctx.emit(GrantRevoked(now, actor, reason, grant))
            self.ctx.emit(ReviewDecided(now, actor, reason, done.review))

    # --- reviewers -----------------------------------------------------------------------------------

    async def list_reviews(
        self, viewer: Principal, *, status: ReviewStatus | None = ReviewStatus.OPEN
    ) -> list[AccessReview]:
        """Reviews `viewer` may see: their own access, and the resources they review (all, as an admin)."""
        found = await self.store.find(status=status)
        return [r for r in found if rules.may_see(self.ctx.policy, r, viewer)]

    async def get_review(self, review_id: str, viewer: Principal) -> AccessReview:
        review = await self.store.get(review_id)
        if review is None or not rules.may_see(self.ctx.policy, review, viewer):
            raise NotFound("not_found", f"no review {review_id}")
        return review

    def may_decide(self, review: AccessReview, viewer: Principal) -> bool:
        return review.status is ReviewStatus.OPEN and rules.may_decide(self.ctx.policy, review, viewer)

    async def decide(
        self, review_id: str, actor: Principal, decision: Decision | str, comment: str = ""
    ) -> AccessReview:
        """Confirm (the grant continues until the next review) or revoke (it ends now)."""
        chosen = decision if isinstance(decision, Decision) else parse_decision(decision)
        if chosen is None:
            raise Invalid("invalid_decision", 'decision must be "confirm" or "revoke"')
        review = await self.get_review(review_id, actor)
        now = self.ctx.now()
        current = await self.ctx.principal(actor.name) or actor
        refused = rules.check_decision(self.ctx.policy, review, current, now)
        if refused is not None:
            if refused.code in ("self_review", "not_a_reviewer"):
                raise Forbidden(refused.code, refused.message)
            raise Conflict(refused.code, refused.message)
        status = ReviewStatus.CONFIRMED if chosen is Decision.CONFIRM else ReviewStatus.REVOKED
        text = comment.strip()
        reason = f"revoked in review{': ' + text if text else ''}"
        closed = await self.store.decide(
            review.id, status, actor=current.name, comment=text, now=now, reason=reason
        )
        if closed is None:
            again = await self.store.get(review.id)
            state = again.status.value if again else "gone"
            raise Conflict("already_decided", f"review {review.id} is already {state}")
        await self._announce([closed], current.name, text if chosen is Decision.CONFIRM else reason)
        return closed.review

    async def usage(self, review: AccessReview) -> ReviewUse:
        """What the holder did with this access over the period reviewed: the records of the run of
        grants it was held through, from the period's start until the decision (or now)."""
        grant = await self.ctx.store.get_grant(review.grant_id)
        run = await self._run(grant) if grant is not None else []
        ids = tuple(g.id for g in run)
        found, partial = await self.audit.usages_since(ids, review.period_start, review.decided_at)
        total = Usage(review.grant_id, review.principal)
        for part in found.values():
            total.add(part)
        return ReviewUse(total, ids, partial)
