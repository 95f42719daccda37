"""Grants and what they cover: the values the authorization decision is made of.

Everything here is pure: no clock reads (callers pass `now`), no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from proxy.access.budgets import Budget
from proxy.access.terms import TermsAcceptance

# Overwriting or deleting under a protected resource needs a grant approved by this many distinct people.
PROTECTED_APPROVALS = 2


class Action(StrEnum):
    READ = "read"
    LIST = "list"
    WRITE = "write"
    CREATE = "create"  # write new objects only: never replace one (the gateway sends If-None-Match: *)
    DELETE = "delete"
    ADMIN = "admin"


class Scope(StrEnum):
    """How a target's key is matched against a grant's prefix."""

    OBJECT = "object"  # one object key: the key must start with the grant's prefix
    PREFIX = "prefix"  # a listing under a prefix: the listed prefix must start with the grant's prefix
    BUCKET = "bucket"  # bucket metadata (HeadBucket, GetBucketLocation): any grant on the bucket will do


class Overwrite(StrEnum):
    """Whether a write target can replace an existing object (what a `create` grant may do about it)."""

    MAY = "may"  # it may replace one and nothing the gateway adds prevents it: `write` is needed
    GUARDABLE = "guardable"  # it replaces one unless sent with If-None-Match: * (PUT, copy, completion)
    NEVER = "never"  # it never replaces an object (starting, uploading or aborting a multipart upload)


@dataclass(frozen=True, slots=True)
class Target:
    """One thing an S3 operation touches, and the action it needs on it."""

    action: Action
    bucket: str
    key: str = ""
    scope: Scope = Scope.OBJECT
    overwrite: Overwrite = Overwrite.MAY  # write targets only: see Overwrite

    @property
    def overwrites(self) -> bool:
        """Can replace or remove data: a delete, an admin change, or a write nothing guards."""
        if self.action is Action.WRITE:
            return self.overwrite is Overwrite.MAY
        return self.action in (Action.DELETE, Action.ADMIN)

    def describe(self) -> str:
        if self.scope is Scope.BUCKET:
            return f"s3://{self.bucket}"
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission for one principal to do `actions` under `s3://bucket/prefix` until `expires_at`.

    `prefix` is S3's own string prefix: `models/` covers `models/a.gguf` but not `models-old/x`;
    `models` (no slash) would cover both, exactly as S3's ListObjects prefix does.
    """

    id: str
    principal: str
    bucket: str
    prefix: str
    actions: frozenset[Action]
    created_at: datetime
    expires_at: datetime | None = None  # None: standing access, still audited
    revoked_at: datetime | None = None
    source: str = "cli"
    request_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    starts_at: datetime | None = None  # scheduled access: not in force before this moment
    budget: Budget | None = None  # what the grant may move in all (proxy/access/budgets.py)
    spent: bool = False  # its byte budget is used up: it reads nothing more
    approvals: int = 0  # distinct people who approved the request it came from (0: instant, admin, standing)
    terms: TermsAcceptance | None = None  # the dataset terms its requester accepted, if the resource has any

    def covers_unspent(self, target: Target) -> bool:
        """Covers `target` and, for reads, still has budget left."""
        return self.covers(target) and not (
            self.spent and target.action is Action.READ and target.scope is Scope.OBJECT
        )

    @property
    def resource(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def two_person(self) -> bool:
        """Approved by enough distinct people to overwrite or delete under a protected resource."""
        return self.approvals >= PROTECTED_APPROVALS

    def is_active(self, now: datetime) -> bool:
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        if self.starts_at is not None and now < self.starts_at:
            return False
        return self.expires_at is None or now < self.expires_at

    def is_scheduled(self, now: datetime) -> bool:
        """Approved for a window that has not begun yet."""
        return self.starts_at is not None and now < self.starts_at and self.revoked_at is None

    def covers(self, target: Target) -> bool:
        if target.bucket != self.bucket:
            return False
        if target.scope is Scope.BUCKET:
            return True
        return target.key.startswith(self.prefix) and (target.action in self.actions or self.creates(target))

    def creates(self, target: Target) -> bool:
        """A `create` grant covers a write that cannot replace an object, or one the gateway guards."""
        return (
            target.action is Action.WRITE
            and target.overwrite is not Overwrite.MAY
            and Action.CREATE in self.actions
        )


def parse_resource(resource: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix). Raises ValueError on anything else."""
    if not resource.startswith("s3://"):
        raise ValueError(f"resource must look like s3://bucket/prefix, got {resource!r}")
    rest = resource[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket or any(c in bucket for c in " \t\r\n*?"):
        raise ValueError(f"invalid bucket in resource {resource!r}")
    return bucket, prefix


def parse_actions(values: str | list[str] | tuple[str, ...]) -> frozenset[Action]:
    """`"read,list"` or `["read", "list"]` -> {Action.READ, Action.LIST}; unknown names raise ValueError."""
    items = values.split(",") if isinstance(values, str) else list(values)
    names = [v.strip().lower() for v in items if v.strip()]
    if not names:
        raise ValueError("at least one action is required")
    try:
        return frozenset(Action(n) for n in names)
    except ValueError:
        known = ", ".join(a.value for a in Action)
        raise ValueError(f"unknown action in {names!r}; known actions: {known}") from None
