"""Access policy: named resources, who may request them and how requests are decided (pure).

Every function here is a decision over values: no clock reads (callers pass `now`), no I/O. The
workflow service applies the decisions; the config module builds the `Policy`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from proxy.access.budgets import Budget, exceeds, tighter
from proxy.access.durations import format_duration
from proxy.access.grants import PROTECTED_APPROVALS, Action, Grant, Scope, Target
from proxy.access.requests import AccessRequest, RequestStatus
from proxy.identity.principals import Principal

ANYONE = "*"  # in a group list: every authenticated principal
# Requests for these on a protected resource need PROTECTED_APPROVALS, whatever the rule says, and are
# never granted instantly.
PROTECTED_ACTIONS = frozenset({Action.WRITE, Action.DELETE, Action.ADMIN})
MAX_JUSTIFICATION = 2000
MAX_TICKET = 200


@dataclass(frozen=True, slots=True)
class ResourcePath:
    """One `s3://bucket/prefix` of a resource, with S3's string-prefix semantics."""

    bucket: str
    prefix: str

    def contains(self, bucket: str, prefix: str) -> bool:
        return bucket == self.bucket and prefix.startswith(self.prefix)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True, slots=True)
class ReviewSchedule:
    """A resource's periodic review of long-held access (proxy/access/reviews.py)."""

    every: timedelta
    grace: timedelta
    reviewer_groups: frozenset[str] = frozenset()  # empty: the approvers of the resource's rules
    # Access that resumes within this long of ending counts as held on (daily re-requests add up).
    gap: timedelta = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Resource:
    """A named protected area (e.g. `models`): one or more paths."""

    name: str
    paths: tuple[ResourcePath, ...]
    description: str = ""
    protected: bool = False  # overwriting or deleting under it needs two distinct approvals
    terms: str = ""  # dataset terms a requester must acknowledge (proxy/access/terms.py)
    review: ReviewSchedule | None = None  # long-held access is reviewed every period

    def path_for(self, bucket: str, prefix: str) -> ResourcePath | None:
        """The most specific of this resource's paths that contains `s3://bucket/prefix`."""
        inside = [p for p in self.paths if p.contains(bucket, prefix)]
        return max(inside, key=lambda p: len(p.prefix)) if inside else None


def in_groups(principal: Principal, groups: frozenset[str]) -> bool:
    return ANYONE in groups or not groups.isdisjoint(principal.groups)


@dataclass(frozen=True, slots=True)
class Rule:
    """How one resource may be requested, and by whom."""

    resource: str
    requester_groups: frozenset[str] = frozenset({ANYONE})
    actions: frozenset[Action] = frozenset({Action.READ, Action.LIST})
    default_duration: timedelta = timedelta(hours=1)
    max_duration: timedelta = timedelta(hours=8)
    justification_required: bool = True
    justification_min_length: int = 10
    instant_groups: frozenset[str] = frozenset()
    approver_groups: frozenset[str] = frozenset()
    approvals_required: int = 1
    source_cidrs: tuple[str, ...] = ()
    break_glass: bool = False
    # A reference in the team's tracker: asked for (shown to approvers, kept in the audit), required,
    # and checked against `ticket_pattern` (a regular expression the whole reference must match).
    ticket_required: bool = False
    ticket_pattern: str = ""
    # A PagerDuty service id: whoever is on call for it is approved at once (looked up by the workflow,
    # see proxy/workflow/oncall.py; unreachable means normal approval).
    oncall_service: str = ""
    budget: Budget | None = None  # given to grants whose request names none
    max_budget: Budget | None = None  # the loosest budget a request may ask for

    def admits(self, principal: Principal) -> bool:
        return in_groups(principal, self.requester_groups)

    def is_approver(self, principal: Principal) -> bool:
        return not self.approver_groups.isdisjoint(principal.groups)


@dataclass(frozen=True, slots=True)
class StandingAccess:
    """Access a service principal always has (e.g. an inference server reading `models/`)."""

    principal: str
    resource: str
    actions: frozenset[Action]


@dataclass(frozen=True, slots=True)
class Policy:
    resources: tuple[Resource, ...] = ()
    rules: tuple[Rule, ...] = ()
    standing: tuple[StandingAccess, ...] = ()
    pending_ttl: timedelta = timedelta(hours=24)
    expiry_warning: timedelta = timedelta(minutes=15)
    admin_groups: frozenset[str] = frozenset()
    _by_name: dict[str, Resource] = field(default_factory=dict, init=False, repr=False, compare=False)
    _protected: list[ResourcePath] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update((r.name, r) for r in self.resources)
        self._protected.extend(p for r in self.resources if r.protected for p in r.paths)

    def resource(self, name: str) -> Resource | None:
        return self._by_name.get(name)

    def match(self, bucket: str, prefix: str) -> tuple[Resource, ResourcePath] | None:
        """The resource whose path most specifically contains `s3://bucket/prefix`."""
        found = [(r, p) for r in self.resources if (p := r.path_for(bucket, prefix)) is not None]
        return max(found, key=lambda rp: len(rp[1].prefix)) if found else None

    def canonical_prefix(self, bucket: str, prefix: str) -> str:
        """`models` -> `models/` when `models/` is a resource path and nothing contains `models` itself.

        People often leave out the trailing slash; granting the bare `models` would also open
        `models-old/`, so the request is read as the resource's own, narrower prefix.
        """
        if prefix.endswith("/") or self.match(bucket, prefix) is not None:
            return prefix
        slashed = prefix + "/"
        if any(p.bucket == bucket and p.prefix == slashed for r in self.resources for p in r.paths):
            return slashed
        return prefix

    def protects(self, target: Target) -> bool:
        """Whether `target` can overwrite or delete something under a protected resource.

        A listing-style target (a bucket's configuration, prefix "") reaches everything below it, so it
        is protected when a protected path lies inside it."""
        for path in self._protected:
            if path.bucket != target.bucket:
                continue
            if target.key.startswith(path.prefix):
                return True
            if target.scope is Scope.PREFIX and path.prefix.startswith(target.key):
                return True
        return False

    def rules_for(self, resource: str) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.resource == resource)

    def is_admin(self, principal: Principal) -> bool:
        return not self.admin_groups.isdisjoint(principal.groups)

    def is_approver_of(self, principal: Principal, resource: str) -> bool:
        return any(rule.is_approver(principal) for rule in self.rules_for(resource))

    def allowed_networks(self) -> dict[str, list[str]]:
        """resource name -> the source networks its grants may be used from (rules that set any)."""
        out: dict[str, list[str]] = {}
        for rule in self.rules:
            if rule.source_cidrs:
                out.setdefault(rule.resource, [])
                out[rule.resource].extend(c for c in rule.source_cidrs if c not in out[rule.resource])
        return out

    def requestable_by(self, principal: Principal) -> tuple[tuple[Resource, Rule], ...]:
        """What `principal` may ask for: the first admitting rule of each resource (config order)."""
        out: list[tuple[Resource, Rule]] = []
        for resource in self.resources:
            rule = next((r for r in self.rules_for(resource.name) if r.admits(principal)), None)
            if rule is not None:
                out.append((resource, rule))
        return tuple(out)


# --- evaluating a new request ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ask:
    """A request as someone typed it, before the policy has looked at it."""

    requester: Principal
    bucket: str
    prefix: str
    actions: frozenset[Action]
    duration: timedelta | None  # None: the rule's default
    justification: str
    break_glass: bool = False
    ticket: str = ""
    budget: Budget | None = None  # None: the rule's default budget
    # Keyword-only, so that positional construction never shifts onto it.
    on_call: bool = field(default=False, kw_only=True)  # on call for the rule's oncall_service


@dataclass(frozen=True, slots=True)
class Instant:
    """Granted at once. `why`: "instant_group", "no_approval_required", "on_call" or "break_glass"."""

    resource: Resource
    rule: Rule
    duration: timedelta
    why: str


@dataclass(frozen=True, slots=True)
class NeedsApproval:
    resource: Resource
    rule: Rule
    duration: timedelta
    approvals_required: int
    protected: bool = False  # overwrites or deletes under a protected resource: two approvals at least


@dataclass(frozen=True, slots=True)
class Rejected:
    """Refused; `code` is stable for programs, `message` is meant for the person who asked."""

    code: str
    message: str


Evaluation = Instant | NeedsApproval | Rejected

# Codes that mean "you may not", as opposed to "what you asked for is malformed or too much".
FORBIDDEN_CODES = frozenset(
    {"not_a_requester", "break_glass_not_allowed", "self_approval", "not_an_approver", "not_allowed"}
)


def _actions_text(actions: Iterable[Action]) -> str:
    return ",".join(sorted(a.value for a in actions))


def select_rule(
    policy: Policy, resource: Resource, requester: Principal, actions: frozenset[Action]
) -> Rule | Rejected:
    """The first rule of `resource` (config order) that admits `requester` and allows every action."""
    rules = policy.rules_for(resource.name)
    if not rules:
        return Rejected(
            "not_requestable", f"{resource.name} cannot be requested: the policy has no rule for it"
        )
    admitting = [r for r in rules if r.admits(requester)]
    if not admitting:
        groups = sorted({g for r in rules for g in r.requester_groups})
        return Rejected(
            "not_a_requester",
            f"{requester.name} may not request {resource.name}: only members of {', '.join(groups)} may",
        )
    for rule in admitting:
        if actions <= rule.actions:
            return rule
    allowed = sorted({a.value for r in admitting for a in r.actions})
    return Rejected(
        "action_not_requestable",
        f"{_actions_text(actions)} on {resource.name} cannot be requested; requestable: {', '.join(allowed)}",
    )


def oncall_service(policy: Policy, ask: Ask) -> str:
    """The PagerDuty service whose on-call the rule for `ask` approves at once ("" when none)."""
    matched = policy.match(ask.bucket, ask.prefix)
    if matched is None:
        return ""
    rule = select_rule(policy, matched[0], ask.requester, ask.actions)
    return "" if isinstance(rule, Rejected) else rule.oncall_service


def evaluate(policy: Policy, ask: Ask) -> Evaluation:
    """Decide a new request: granted at once, waiting for approvals, or rejected with a reason."""
    matched = policy.match(ask.bucket, ask.prefix)
    where = f"s3://{ask.bucket}/{ask.prefix}"
    if matched is None:
        return Rejected("unknown_resource", f"no resource in the access policy contains {where}")
    resource, _path = matched
    if not ask.actions:
        return Rejected("no_actions", "name at least one action (read, list, write, delete, admin)")
    rule = select_rule(policy, resource, ask.requester, ask.actions)
    if isinstance(rule, Rejected):
        return rule
    duration = rule.default_duration if ask.duration is None else ask.duration
    if duration <= timedelta(0):
        return Rejected("invalid_duration", "the duration must be longer than zero")
    if duration > rule.max_duration:
        return Rejected(
            "duration_too_long",
            f"{format_duration(duration)} is longer than the maximum of "
            f"{format_duration(rule.max_duration)} for {resource.name}; ask for less, and ask again later "
            "to extend",
        )
    problem = _justification_problem(rule, ask) or ticket_problem(rule, ask.ticket)
    if problem is not None:
        return problem
    too_loose = exceeds(ask.budget, rule.max_budget) if ask.budget is not None else None
    if too_loose is not None:
        return Rejected(
            "budget_too_large", f"the budget asked for is too large for {resource.name}: {too_loose}"
        )
    guarded = resource.protected and not PROTECTED_ACTIONS.isdisjoint(ask.actions)
    if ask.break_glass:
        if not rule.break_glass:
            return Rejected(
                "break_glass_not_allowed", f"break-glass access is not allowed on {resource.name}"
            )
        if guarded:
            return Rejected(
                "protected_resource",
                f"{resource.name} is protected: {_actions_text(ask.actions & PROTECTED_ACTIONS)} there needs "
                f"{PROTECTED_APPROVALS} approvals, which break-glass skips; ask for read, list or create",
            )
        return Instant(resource, rule, duration, "break_glass")
    if guarded:
        if not rule.approver_groups:
            return Rejected(
                "protected_resource",
                f"{resource.name} is protected: {_actions_text(ask.actions & PROTECTED_ACTIONS)} there needs "
                f"{PROTECTED_APPROVALS} approvals, and its rule names no approver group",
            )
        return NeedsApproval(resource, rule, duration, approvals_needed(resource, rule, ask.actions), True)
    if in_groups(ask.requester, rule.instant_groups):
        return Instant(resource, rule, duration, "instant_group")
    if rule.approvals_required == 0:
        return Instant(resource, rule, duration, "no_approval_required")
    if rule.oncall_service and ask.on_call:
        return Instant(resource, rule, duration, "on_call")
    return NeedsApproval(resource, rule, duration, rule.approvals_required)


def approvals_needed(resource: Resource, rule: Rule, actions: frozenset[Action]) -> int:
    """Distinct approvals a request needs: the rule's, and at least two for overwriting or deleting
    under a protected resource."""
    needed = max(rule.approvals_required, 1)
    if resource.protected and not PROTECTED_ACTIONS.isdisjoint(actions):
        return max(needed, PROTECTED_APPROVALS)
    return needed


def granted_budget(rule: Rule, asked: Budget | None) -> Budget | None:
    """A grant's budget under `rule`: the one asked for, else the rule's default, within its maximum."""
    return tighter(asked, rule.budget, rule.max_budget)


def _justification_problem(rule: Rule, ask: Ask) -> Rejected | None:
    text = ask.justification.strip()
    if len(text) > MAX_JUSTIFICATION:
        return Rejected(
            "justification_too_long", f"keep the justification under {MAX_JUSTIFICATION} characters"
        )
    # Break-glass always needs a reason: it skips every approver, so the reason is all a reviewer has.
    required = rule.justification_required or ask.break_glass
    minimum = max(rule.justification_min_length, 1) if required else 0
    if required and not text:
        what = "a break-glass reason" if ask.break_glass else "a justification"
        return Rejected("justification_missing", f"{rule.resource} requires {what}: say why you need access")
    if len(text) < minimum:
        return Rejected(
            "justification_too_short",
            f"the justification for {rule.resource} must be at least {minimum} characters",
        )
    return None


def ticket_problem(rule: Rule, ticket: str) -> Rejected | None:
    """A ticket reference the rule requires, or one that does not match its pattern."""
    text = ticket.strip()
    if len(text) > MAX_TICKET:
        return Rejected("invalid_ticket", f"keep the ticket reference under {MAX_TICKET} characters")
    if not text:
        if rule.ticket_required:
            example = f" matching {rule.ticket_pattern}" if rule.ticket_pattern else ""
            return Rejected("ticket_missing", f"{rule.resource} requires a ticket reference{example}")
        return None
    if rule.ticket_pattern and re.fullmatch(rule.ticket_pattern, text) is None:
        return Rejected(
            "invalid_ticket",
            f"ticket {text!r} does not match {rule.ticket_pattern} (required for {rule.resource})",
        )
    return None


# --- approvals, denials, revocations --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Approve:
    """An approval that counts: `complete` when it is the last one needed."""

    approvals: int  # distinct approvals including this one
    required: int

    @property
    def complete(self) -> bool:
        return self.approvals >= self.required


def _pending_problem(request: AccessRequest, now: datetime) -> Rejected | None:
    if request.status is not RequestStatus.PENDING:
        return Rejected("not_pending", f"request {request.id} is already {request.status.value}")
    if now >= request.expires_at:
        return Rejected("not_pending", f"request {request.id} has expired without enough approvals")
    if request.starts_at is not None and now >= request.starts_at + request.duration:
        return Rejected("not_pending", f"the window request {request.id} asked for has already ended")
    return None


def check_approval(
    policy: Policy, request: AccessRequest, requester: Principal, approver: Principal, now: datetime
) -> Approve | Rejected:
    """May `approver` approve `request` now, and does that complete it?

    Judged against the policy and group memberships as they are now: an approver who left the
    security team no longer approves, and a requester who left the team can no longer be approved.
    A bundle needs every part's rule satisfied: an approver of each resource, and the most approvals
    any of them requires.
    """
    parts = request.parts()
    judged = [p for p in parts if len(parts) == 1 or not _granted_without_approval(policy, p, requester)]
    verdicts = [_check_part_approval(policy, part, requester, approver, now) for part in judged or parts[:1]]
    for verdict in verdicts:
        if isinstance(verdict, Rejected):
            return verdict
    return max(verdicts, key=lambda v: v.required)  # type: ignore[union-attr]


def _granted_without_approval(policy: Policy, part: AccessRequest, requester: Principal) -> bool:
    """A bundle's part that on its own would be granted at once needs no approver of its resource."""
    resource = policy.resource(part.resource_name)
    rule = select_rule(policy, resource, requester, part.actions) if resource is not None else None
    if rule is None or isinstance(rule, Rejected):
        return False
    return rule.approvals_required == 0 or not rule.instant_groups.isdisjoint(requester.groups)


def _check_part_approval(
    policy: Policy, request: AccessRequest, requester: Principal, approver: Principal, now: datetime
) -> Approve | Rejected:
    problem = _pending_problem(request, now)
    if problem is not None:
        return problem
    if approver.name == request.requester:
        return Rejected("self_approval", "nobody approves their own request")
    resource = policy.resource(request.resource_name)
    if resource is None:
        return Rejected("not_requestable", f"resource {request.resource_name} is no longer in the policy")
    rule = select_rule(policy, resource, requester, request.actions)
    if isinstance(rule, Rejected):
        return Rejected(rule.code, f"the policy no longer allows this request: {rule.message}")
    if not rule.is_approver(approver):
        groups = ", ".join(sorted(rule.approver_groups)) or "no group"
        return Rejected(
            "not_an_approver",
            f"{approver.name} is not in an approver group for {resource.name} (approvers: {groups})",
        )
    if approver.name in request.approvers:
        return Rejected(
            "already_approved",
            f"{approver.name} has already approved {request.id}; each approver counts once "
            f"({len(request.approvers)} of {approvals_needed(resource, rule, request.actions)})",
        )
    required = approvals_needed(resource, rule, request.actions)
    return Approve(len(request.approvers) + 1, required)


def check_denial(policy: Policy, request: AccessRequest, actor: Principal, now: datetime) -> Rejected | None:
    """An approver of the resource or an admin may deny; a requester cancels instead."""
    problem = _pending_problem(request, now)
    if problem is not None:
        return problem
    if actor.name == request.requester:
        return Rejected("self_approval", "you cannot deny your own request: cancel it instead")
    if policy.is_admin(actor) or any(policy.is_approver_of(actor, p.resource_name) for p in request.parts()):
        return None
    return Rejected("not_an_approver", f"{actor.name} may not decide requests for {request.resource_name}")


def check_cancel(request: AccessRequest, actor: Principal, now: datetime) -> Rejected | None:
    problem = _pending_problem(request, now)
    if problem is not None:
        return problem
    if actor.name != request.requester:
        return Rejected("not_allowed", "only the requester can cancel a request")
    return None


def check_review(policy: Policy, request: AccessRequest, actor: Principal) -> Rejected | None:
    """After-the-fact review of a break-glass request, by an approver of the resource or an admin."""
    if not request.break_glass:
        return Rejected("not_break_glass", f"request {request.id} was not a break-glass request")
    if request.reviewed_at is not None:
        return Rejected(
            "already_reviewed", f"request {request.id} was already reviewed by {request.reviewed_by}"
        )
    if actor.name == request.requester:
        return Rejected("self_approval", "nobody reviews their own break-glass access")
    if policy.is_admin(actor) or any(policy.is_approver_of(actor, p.resource_name) for p in request.parts()):
        return None
    return Rejected("not_an_approver", f"{actor.name} may not review requests for {request.resource_name}")


def resource_of_grant(policy: Policy, grant: Grant) -> Resource | None:
    matched = policy.match(grant.bucket, grant.prefix)
    return matched[0] if matched else None


def may_revoke(policy: Policy, grant: Grant, actor: Principal) -> bool:
    """The grant's holder, an approver of its resource, or an admin."""
    if actor.name == grant.principal or policy.is_admin(actor):
        return True
    resource = resource_of_grant(policy, grant)
    return resource is not None and policy.is_approver_of(actor, resource.name)


def may_view_request(policy: Policy, request: AccessRequest, actor: Principal) -> bool:
    return (
        actor.name == request.requester
        or policy.is_admin(actor)
        or any(policy.is_approver_of(actor, part.resource_name) for part in request.parts())
    )


def may_view_grant(policy: Policy, grant: Grant, actor: Principal) -> bool:
    return may_revoke(policy, grant, actor)


def may_approve_now(
    policy: Policy, request: AccessRequest, requester: Principal, approver: Principal, now: datetime
) -> bool:
    """For inboxes: would an approval by `approver` be accepted right now?"""
    return isinstance(check_approval(policy, request, requester, approver, now), Approve)


def covering_grants(
    grants: Iterable[Grant],
    principal: str,
    bucket: str,
    prefix: str,
    actions: frozenset[Action],
    now: datetime,
) -> tuple[Grant, ...]:
    """Active grants of `principal` that already cover all of `s3://bucket/prefix` for every action."""
    return tuple(
        g
        for g in grants
        if g.principal == principal
        and g.bucket == bucket
        and prefix.startswith(g.prefix)
        and actions <= g.actions
        and g.is_active(now)
    )
