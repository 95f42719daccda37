"""The store's tables (SQLAlchemy Core), shared by the queries in sql.py and the Alembic environment."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
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
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData(naming_convention=NAMING_CONVENTION)

principals = Table(
    "principals",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("groups", JSON, nullable=False),  # sorted list of group names
    Column("created_at", UtcDateTime, nullable=False),
)

access_keys = Table(
    "access_keys",
    metadata,
    Column("access_key_id", String(32), primary_key=True),
    Column("principal", String(200), ForeignKey("principals.name"), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Index("ix_access_keys_principal", "principal"),
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
    Index("ix_grants_principal", "principal"),
)

# One row, "version", bumped in the transaction of every write: gateways poll it to know when to reload.
store_state = Table(
    "store_state",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
