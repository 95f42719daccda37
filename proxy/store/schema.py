"""The store's tables (SQLAlchemy Core), shared by the queries in sql.py and the Alembic environment."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)

# Named constraints, so later migrations can alter them by name on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

VERSION_ROW = "version"


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in Python on every backend.

    SQLite keeps no zone: values are converted to UTC before they are written and read back as UTC.
    Naive datetimes are refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"timestamps must be timezone-aware datetimes, got {value!r}")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stored: datetime = value  # the DateTime impl has made it one already
        if stored.tzinfo is None:
            return stored.replace(tzinfo=UTC)
        return stored.astimezone(UTC)


metadata = MetaData(naming_convention=NAMING_CONVENTION)

principals = Table(
    "principals",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("groups", JSON, nullable=False),  # sorted list of group names
    Column("created_at", UtcDateTime, nullable=False),
    # The store version that last changed the principal's groups (see grants.changed_in).
    Column("changed_in", BigInteger, nullable=False, server_default="0"),
    Index("ix_principals_changed_in", "changed_in"),
)

access_keys = Table(
    "access_keys",
    metadata,
    Column("access_key_id", String(32), primary_key=True),
    Column("principal", String(200), ForeignKey("principals.name"), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    # The store version that created or revoked the key (see grants.changed_in).
    Column("changed_in", BigInteger, nullable=False, server_default="0"),
    Index("ix_access_keys_principal", "principal"),
    Index("ix_access_keys_changed_in", "changed_in"),
)

grants = Table(
    "grants",
    metadata,
    Column("id", String(32), primary_key=True),
    # No foreign key on purpose: a grant may name a principal before it has any key (e.g. from an SSO
    # group sync) and outlives the key it was first used with.
    Column("principal", String(200), nullable=False),
    Column("bucket", String(255), nullable=False),
    Column("prefix", Text, nullable=False),
    Column("actions", String(100), nullable=False),  # comma-separated, sorted
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("revoked_by", String(200), nullable=False, default=""),
    Column("revoke_reason", Text, nullable=False, default=""),
    Column("source", String(50), nullable=False),
    Column("request_id", String(64), nullable=True),
    Column("created_by", String(200), nullable=False, default=""),
    # The store version whose transaction last changed whether this grant is in force (created, revoked,
    # suspended, re-confirmed): a gateway reads only the grants changed since the version it holds.
    Column("changed_in", BigInteger, nullable=False, server_default="0"),
    # Scheduled access (migration 0010): not in force before this moment.
    Column("starts_at", UtcDateTime, nullable=True),
    # Budgets (migration 0011): None when the grant has no limit of that kind; `spent_at` once its
    # byte budget is used up (stamped like a revocation, so every gateway stops its reads).
    Column("max_bytes", BigInteger, nullable=True),
    Column("max_objects", BigInteger, nullable=True),
    Column("single_use", Boolean, nullable=False, server_default=false()),
    Column("spent_at", UtcDateTime, nullable=True),
    # Protected resources (migration 0014): distinct people who approved the request it came from.
    Column("approvals", Integer, nullable=False, server_default="0"),
    # Migration 0015: the dataset terms accepted, {"by", "sha256", "text", "at"}, or None.
    Column("terms_accepted", JSON, nullable=True),
    Index("ix_grants_principal", "principal"),
    Index("ix_grants_changed_in", "changed_in"),
    Index("ix_grants_bucket", "bucket"),  # migration 0016
)

# One row, "version", bumped in the transaction of every write: gateways poll it to know when to reload.
store_state = Table(
    "store_state",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# --- access requests and API tokens (migration 0002) ---

access_requests = Table(
    "access_requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("requester", String(200), nullable=False),
    Column("resource_name", String(64), nullable=False),  # the policy resource it was matched to
    Column("bucket", String(255), nullable=False),
    Column("prefix", Text, nullable=False),
    Column("actions", String(100), nullable=False),  # comma-separated, sorted
    Column("duration_seconds", BigInteger, nullable=False),
    Column("justification", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),  # when it lapses if still pending
    Column("approvals_required", Integer, nullable=False),
    Column("break_glass", Boolean, nullable=False),
    Column("decided_by", String(200), nullable=True),
    Column("decided_at", UtcDateTime, nullable=True),
    Column("decision_comment", Text, nullable=False),
    Column("grant_id", String(32), nullable=True),
    Column("source_cidrs", JSON, nullable=False),
    Column("reviewed_by", String(200), nullable=True),
    Column("reviewed_at", UtcDateTime, nullable=True),
    Column("review_comment", Text, nullable=False),
    # Migration 0010: when the asked-for window starts (None: at approval), and a ticket reference.
    Column("starts_at", UtcDateTime, nullable=True),
    Column("ticket", String(200), nullable=False, server_default=""),
    # Migration 0013: the grant an extension extends; a bundle's other parts ([{resource_name, bucket,
    # prefix}], the first part is the row's own) and every grant its approval made, in part order.
    Column("extends_grant", String(32), nullable=True),
    Column("bundle", JSON, nullable=True),
    Column("grant_ids", JSON, nullable=True),
    # Migration 0011: the budget asked for, {"max_bytes", "max_objects", "single_use"}, or None.
    Column("budget", JSON, nullable=True),
    # Migration 0014: asks to overwrite or delete under a protected resource.
    Column("protected", Boolean, nullable=False, server_default=false()),
    # Migration 0015: the dataset terms accepted, {"by", "sha256", "text", "at"}, or None.
    Column("terms_accepted", JSON, nullable=True),
    Index("ix_access_requests_status", "status"),
    Index("ix_access_requests_requester", "requester"),
)

# The primary key makes "the same approver twice counts once" a property of the data, not of the code.
request_approvals = Table(
    "request_approvals",
    metadata,
    Column("request_id", String(32), ForeignKey("access_requests.id"), primary_key=True),
    Column("approver", String(200), primary_key=True),
    Column("decided_at", UtcDateTime, nullable=False),
    Column("comment", Text, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("principal", String(200), ForeignKey("principals.name"), nullable=False),
    Column("token_hash", String(64), nullable=False),  # SHA-256 of the secret part, hex
    Column("description", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Index("ix_api_tokens_principal", "principal"),
)

# Which expiry notices were sent: several gateways sweep, the primary key lets exactly one send each.
grant_notices = Table(
    "grant_notices",
    metadata,
    Column("grant_id", String(32), primary_key=True),
    Column("kind", String(20), primary_key=True),  # "expiring" | "expired"
    Column("sent_at", UtcDateTime, nullable=False),
)

# --- access reviews (migration 0018) ---

# One periodic review of one long-held grant (proxy/access/reviews.py). (grant_id, due_at) is unique and
# due_at follows from the stored history alone, so two gateways opening the same review open one row.
access_reviews = Table(
    "access_reviews",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("grant_id", String(32), nullable=False),
    Column("principal", String(200), nullable=False),
    Column("resource_name", String(64), nullable=False),
    Column("bucket", String(255), nullable=False),
    Column("prefix", Text, nullable=False),
    Column("period_start", UtcDateTime, nullable=False),
    Column("due_at", UtcDateTime, nullable=False),
    Column("deadline", UtcDateTime, nullable=False),
    Column("remind_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reminded_at", UtcDateTime, nullable=True),
    Column("decided_by", String(200), nullable=False),
    Column("decided_at", UtcDateTime, nullable=True),
    Column("comment", Text, nullable=False),
    UniqueConstraint("grant_id", "due_at", name="uq_access_reviews_grant_id"),
    Index("ix_access_reviews_status", "status"),
)

# --- Slack messages (migration 0006) ---

# Where each pending access request's Slack message was posted, so whichever gateway decides the request
# (through Slack, the web pages, the API or the CLI; after a restart too) updates that message in place.
slack_messages = Table(
    "slack_messages",
    metadata,
    Column("request_id", String(32), primary_key=True),
    Column("channel", String(64), nullable=False),
    Column("ts", String(32), nullable=False),
    Column("posted_at", UtcDateTime, nullable=False),
)

# --- webhook outbox (migration 0007) ---

# Webhook deliveries not yet done. A gateway holds each row it is delivering or waiting to retry through
# a lease it keeps renewing; a row whose lease ran out (its process stopped or died) is claimed by the
# next sweep of any gateway, so deliveries outlive the process that queued them.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("hook", String(64), nullable=False),  # SHA-256 of the hook's URL: URLs may carry tokens
    Column("event", String(64), nullable=False),
    Column("event_id", String(32), nullable=False),
    Column("body", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("due_at", UtcDateTime, nullable=False),
    Column("lease_until", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_webhook_deliveries_lease_until", "lease_until"),
)

# --- session cut-offs (migration 0004) ---

# Per principal: session tokens issued before `not_before` are refused. Moved forward whenever one of
# the principal's grants is revoked, so sessions (checked without a lookup) die with the access they had.
# No foreign key: workload principals from STS exist only in their tokens and their grants.
session_cutoffs = Table(
    "session_cutoffs",
    metadata,
    Column("principal", String(200), primary_key=True),
    Column("not_before", UtcDateTime, nullable=False),
)

# --- web sessions (migration 0009) ---

# One row per signed-in web session; the cookie names its `id`. A cookie whose row is ended (signed out,
# or the principal's key revoked) or missing no longer signs anyone in, however long it has left.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("principal", String(200), nullable=False, index=True),
    Column("via", String(20), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime, nullable=True),
)

# --- budgets (migration 0011) ---

# What each budgeted grant has moved: bytes served or reserved by a transfer in flight, and distinct
# objects read. Every gateway draws on the same row (locked per draw), so a budget holds across workers
# and replicas.
grant_usage = Table(
    "grant_usage",
    metadata,
    Column("grant_id", String(32), primary_key=True),
    Column("bytes", BigInteger, nullable=False),
    Column("objects", BigInteger, nullable=False),
)

# The objects a budgeted grant has read, and for single-use grants the byte ranges served (or claimed
# by a transfer in flight) of each, as [[start, end), ...].
grant_objects = Table(
    "grant_objects",
    metadata,
    Column("grant_id", String(32), primary_key=True),
    Column("object", String(64), primary_key=True),  # SHA-256 of bucket and key: keys may be 1 KiB long
    Column("ranges", JSON, nullable=False),
    Column("first_at", UtcDateTime, nullable=False),
)

# --- audit (revision 0003) ---------------------------------------------------------------------------

# The tamper-evident trail: `seq` orders the chain, and each row's hash covers the previous row's hash,
# its `seq` and its canonical JSON `body`. The other columns are copies of body fields, for queries.
audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", UtcDateTime, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("plane", String(16), nullable=False),
    Column("principal", String(200), nullable=True),
    Column("resource", String(255), nullable=True),
    Column("target", Text, nullable=True),
    Column("grant_id", String(64), nullable=True),
    Column("decision", String(32), nullable=True),
    Column("body", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_events_at", "at"),
    # Migration 0016: each ends in `seq`, so the newest matches come straight off the index.
    Index("ix_audit_events_principal_seq", "principal", "seq"),
    Index("ix_audit_events_grant_id_seq", "grant_id", "seq"),
    Index("ix_audit_events_resource_seq", "resource", "seq"),
    # Migration 0019: a grant's records in a time range (a review's use over its period).
    Index("ix_audit_events_grant_id_at", "grant_id", "at"),
)

# One row, "head": the last link of the chain. Appending locks it, so every gateway replica writing to
# one database extends a single chain; it also proves that no latest event was removed.
audit_chain = Table(
    "audit_chain",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# What was done under each grant, summed by the audit writer whatever `[audit] data_plane` says.
audit_grant_usage = Table(
    "audit_grant_usage",
    metadata,
    Column("grant_id", String(64), primary_key=True),
    Column("principal", String(200), nullable=True),
    Column("requests", BigInteger, nullable=False),
    Column("objects_read", BigInteger, nullable=False),
    Column("bytes_read", BigInteger, nullable=False),
    Column("objects_written", BigInteger, nullable=False),
    Column("bytes_written", BigInteger, nullable=False),
    Column("first_used_at", UtcDateTime, nullable=True),
    Column("last_used_at", UtcDateTime, nullable=True),
)

# Which groups have read each resource: the memory of the "new group reader" anomaly rule.
audit_resource_readers = Table(
    "audit_resource_readers",
    metadata,
    Column("resource", String(255), primary_key=True),
    Column("group_name", String(200), primary_key=True),
    Column("principal", String(200), nullable=False),
    Column("first_at", UtcDateTime, nullable=False),
)

# Grants taken out of service by an anomaly rule until an approver re-confirms them. A suspension
# hides the grant from the gateways' snapshot exactly as a revocation does.
grant_suspensions = Table(
    "grant_suspensions",
    metadata,
    Column("grant_id", String(64), primary_key=True),
    Column("suspended_at", UtcDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Column("lifted_at", UtcDateTime, nullable=True),
    Column("lifted_by", String(200), nullable=False, default=""),
)

# Decoy objects `grantgate decoys plant` wrote into the bucket (migration 0012). Which keys are decoys
# is the config's to say; this records what was planted, when and by whom, for the admins.
decoys = Table(
    "decoys",
    metadata,
    Column("bucket", String(255), primary_key=True),
    Column("key", String(1024), primary_key=True),
    Column("resource", String(200), nullable=False),
    Column("format", String(20), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("planted_at", UtcDateTime, nullable=False),
    Column("planted_by", String(200), nullable=False),
)

# --- whole-model pulls across replicas (migration 0017) ---

# The byte ranges of model shards each principal read, as each gateway flushes them (every second, not
# per request): the whole_model rule sums one principal's pull over every replica from these rows.
# Rows older than the rule's window are pruned.
model_reads = Table(
    "model_reads",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("principal", String(200), nullable=False),
    Column("model", Text, nullable=False),  # s3://bucket/prefix/
    Column("shard", Text, nullable=False),  # the object key
    Column("first_byte", BigInteger, nullable=False),
    Column("end_byte", BigInteger, nullable=False),  # exclusive
    Column("grant_ids", JSON, nullable=False),
    Column("read_at", UtcDateTime, nullable=False),
    Index("ix_model_reads_principal", "principal", "read_at"),
)

# One row per (rule, subject) that fired: the replica whose insert (or take-over of a row older than the
# rule's window) succeeds raises the alert, so a pull seen by several replicas fires once.
anomaly_claims = Table(
    "anomaly_claims",
    metadata,
    Column("kind", String(50), primary_key=True),
    Column("subject", String(1024), primary_key=True),
    Column("fired_at", UtcDateTime, nullable=False),
)
