"""The store: principals, access keys and grants in SQLite or PostgreSQL, through SQLAlchemy Core (async).

Every write bumps the `version` row in its own transaction, so gateways can poll one cheap value and reload
a consistent snapshot only when something changed.
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Row, and_, exists, insert, not_, or_, select, text, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from proxy.access.budgets import Budget
from proxy.access.grants import Action, Grant, parse_actions
from proxy.access.terms import TermsAcceptance
from proxy.grant_source import Snapshot
from proxy.identity.keys import AccessKey, derive_secret, new_access_key_id
from proxy.identity.principals import Principal
from proxy.store.engine import (
    StoreError,
    create_engine_for,
    insert_ignoring_conflict,
    require_aware,
    write_engine,
)
from proxy.store.notify import NOTIFY_SQL, listen_for_changes
from proxy.store.schema import (
    VERSION_ROW,
    access_keys,
    grant_suspensions,
    grants,
    principals,
    store_state,
)
from proxy.store.sessions import cut_off_sessions, end_sessions_of, load_cutoffs

_ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
# Rows of a snapshot converted per turn of the event loop (about 10 ms of work).
SNAPSHOT_SLICE = 1000
# Serialises concurrent `upgrade` runs on PostgreSQL (two gateways starting at once).
_PG_MIGRATION_LOCK = 0x6772616E74  # "grant"
_NAME = re.compile(r"[^\s\x00-\x1f\x7f]{1,200}")


# --- engines and migrations -------------------------------------------------------------------------


def _alembic_config() -> Config:
    return Config(str(_ALEMBIC_INI))


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "the migrations directory has no revisions"
    return head


def _current_revision_sync(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _upgrade_sync(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    config = _alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, "head")


async def _upgrade_engine(engine: AsyncEngine) -> None:
    writer = write_engine(engine)
    async with writer.begin() as conn:
        await conn.run_sync(_upgrade_sync)


async def _current_revision_engine(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current_revision_sync)


def _display_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


@asynccontextmanager
async def _engine_for(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine_for(url)
    try:
        yield engine
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"database {_display_url(url)}: {_first_line(exc)}") from exc
    finally:
        await engine.dispose()


async def upgrade_database(url: str) -> str:
    """Apply the migrations up to head; returns the revision the database is now at."""
    async with _engine_for(url) as engine:
        await _upgrade_engine(engine)
        revision = await _current_revision_engine(engine)
    assert revision is not None
    return revision


async def database_revision(url: str) -> str | None:
    """The revision the database is at; None for an empty database."""
    async with _engine_for(url) as engine:
        return await _current_revision_engine(engine)


def _first_line(exc: BaseException) -> str:
    message = str(getattr(exc, "orig", None) or exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


# --- the store --------------------------------------------------------------------------------------


class SqlStore:
    """Principals, access keys and grants; one instance per process, safe for concurrent coroutines."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = write_engine(engine)
        # PostgreSQL reads each statement at its own snapshot unless told otherwise; SQLite's explicit
        # BEGIN already gives one snapshot per transaction.
        self._reader = (
            engine
            if engine.dialect.name == "sqlite"
            else engine.execution_options(isolation_level="REPEATABLE READ")
        )

    @classmethod
    async def open(cls, url: str, *, upgrade: bool = False) -> SqlStore:
        """Connect; with `upgrade`, migrate to head first, otherwise refuse a database not at head."""
        engine = create_engine_for(url)
        try:
            if upgrade:
                await _upgrade_engine(engine)
            current = await _current_revision_engine(engine)
            expected = head_revision()
            if current != expected:
                at = current or "no revision (empty database)"
                raise StoreError(
                    f"database schema is at {at}, expected {expected}: run `grantgate db upgrade`"
                )
        except StoreError:
            await engine.dispose()
            raise
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            raise StoreError(f"cannot open database {_display_url(url)}: {_first_line(exc)}") from exc
        return cls(engine)

    async def close(self) -> None:
        await self._engine.dispose()

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    def listen_for_changes(self, on_change: Callable[[], None]) -> asyncio.Task[None] | None:
        """On PostgreSQL, call `on_change` on every change notification, until the task is cancelled;
        None on SQLite, which has no notifications (its readers rely on polling)."""
        if self.dialect != "postgresql":
            return None
        return asyncio.create_task(listen_for_changes(self._engine, on_change), name="state-listen")

    async def upgrade(self) -> None:
        await _upgrade_engine(self._engine)

    async def current_revision(self) -> str | None:
        return await _current_revision_engine(self._engine)

    # --- principals ---

    async def ensure_principal(
        self, name: str, groups: Iterable[str] | None = None, *, now: datetime | None = None
    ) -> Principal:
        """Create the principal if it is new; when `groups` is given, it replaces the stored groups."""
        check_name(name, "principal")
        wanted = None if groups is None else sorted({check_name(g, "group") for g in groups})
        created = now or datetime.now(UTC)
        require_aware(created)
        async with self._writer.begin() as conn:
            row = await _principal_row(conn, name)
            if row is None:
                stmt = insert_ignoring_conflict(conn, principals, "name").values(
                    name=name, groups=wanted or [], created_at=created
                )
                result = await conn.execute(stmt)
                if result.rowcount == 1:
                    await bump_version(conn, principals_changed=[name])
                    return Principal(name, frozenset(wanted or ()))
                row = await _principal_row(conn, name)  # created concurrently by someone else
                assert row is not None
            if wanted is not None and sorted(row.groups) != wanted:
                await conn.execute(update(principals).where(principals.c.name == name).values(groups=wanted))
                await bump_version(conn, principals_changed=[name])
                return Principal(name, frozenset(wanted))
            return _principal(row)

    async def get_principal(self, name: str) -> Principal | None:
        async with self._engine.connect() as conn:
            row = await _principal_row(conn, name)
        return None if row is None else _principal(row)

    async def list_principals(self) -> list[Principal]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(principals).order_by(principals.c.name))
            return [_principal(row) for row in rows]

    # --- access keys ---

    async def create_access_key(
        self, principal: str, server_key: bytes, *, now: datetime, description: str = ""
    ) -> tuple[AccessKey, str]:
        """A new key for an existing principal, and its secret: shown once, never stored."""
        require_aware(now)
        key = AccessKey(new_access_key_id(), principal, now, None, description)
        secret = derive_secret(server_key, key.access_key_id)
        async with self._writer.begin() as conn:
            if await _principal_row(conn, principal) is None:
                raise StoreError(f"unknown principal {principal!r}")
            await conn.execute(
                insert(access_keys).values(
                    access_key_id=key.access_key_id,
                    principal=principal,
                    description=description,
                    created_at=now,
                    revoked_at=None,
                )
            )
            await bump_version(conn, keys_changed=[key.access_key_id])
        return key, secret

    async def list_access_keys(self, principal: str | None = None) -> list[AccessKey]:
        query = select(access_keys).order_by(access_keys.c.created_at, access_keys.c.access_key_id)
        if principal is not None:
            query = query.where(access_keys.c.principal == principal)
        async with self._engine.connect() as conn:
            return [_access_key(row) for row in await conn.execute(query)]

    async def revoke_access_key(self, access_key_id: str, *, now: datetime) -> bool:
        """Revoke a key; True if the key exists (revoking twice keeps the first time), False if unknown."""
        require_aware(now)
        async with self._writer.begin() as conn:
            holder: str | None = await conn.scalar(
                update(access_keys)
                .where(access_keys.c.access_key_id == access_key_id, access_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
                .returning(access_keys.c.principal)
            )
            if holder is not None:
                await bump_version(conn, keys_changed=[access_key_id])
                # A revoked key means the person's standing is in doubt: their web sessions end too.
                await end_sessions_of(conn, holder, now)
                return True
            found = await conn.scalar(
                select(access_keys.c.access_key_id).where(access_keys.c.access_key_id == access_key_id)
            )
            return found is not None

    # --- grants ---

    async def add_grant(
        self,
        principal: str,
        bucket: str,
        prefix: str,
        actions: frozenset[Action],
        *,
        now: datetime,
        expires_at: datetime | None,
        source: str = "cli",
        created_by: str = "",
        request_id: str | None = None,
        budget: Budget | None = None,
    ) -> Grant:
        check_name(principal, "principal")
        require_aware(now, expires_at)
        if not bucket:
            raise ValueError("a grant needs a bucket")
        if not actions:
            raise ValueError("a grant needs at least one action")
        if expires_at is not None and expires_at <= now:
            raise ValueError("a grant must expire after it is created")
        grant = Grant(
            id=new_grant_id(),
            principal=principal,
            bucket=bucket,
            prefix=prefix,
            actions=frozenset(actions),
            created_at=now,
            expires_at=expires_at,
            source=source,
            request_id=request_id,
            extra={"created_by": created_by, "revoked_by": "", "revoke_reason": ""},
            budget=budget if budget is not None and budget.limited else None,
        )
        async with self._writer.begin() as conn:
            await conn.execute(
                insert(grants).values(
                    **budget_values(grant.budget),
                    id=grant.id,
                    principal=principal,
                    bucket=bucket,
                    prefix=prefix,
                    actions=actions_text(grant.actions),
                    created_at=now,
                    expires_at=expires_at,
                    revoked_at=None,
                    revoked_by="",
                    revoke_reason="",
                    source=source,
                    request_id=request_id,
                    created_by=created_by,
                )
            )
            await bump_version(conn, [grant.id])
        return grant

    async def get_grant(self, grant_id: str) -> Grant | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(grants).where(grants.c.id == grant_id))).first()
        return None if row is None else grant_of_row(row)

    async def list_grants(
        self, *, principal: str | None = None, active_at: datetime | None = None
    ) -> list[Grant]:
        """Grants, oldest first; with `active_at`, only those neither expired nor revoked at that time."""
        query = select(grants).order_by(grants.c.created_at, grants.c.id)
        if principal is not None:
            query = query.where(grants.c.principal == principal)
        if active_at is not None:
            require_aware(active_at)
            query = query.where(grant_active(active_at))
        async with self._engine.connect() as conn:
            return [grant_of_row(row) for row in await conn.execute(query)]

    async def revoke_grant(
        self, grant_id: str, *, now: datetime, actor: str, reason: str = ""
    ) -> Grant | None:
        """Revoke a grant; None if unknown. A grant already revoked is returned as it was (idempotent)."""
        require_aware(now)
        async with self._writer.begin() as conn:
            _, grant = await revoke_in(conn, grant_id, now=now, actor=actor, reason=reason)
        return grant

    # --- what gateways poll and load ---

    async def snapshot(self, now: datetime, *, since: int | None = None) -> Snapshot:
        """Every grant in force at `now` and every active key; with `since`, only what changed after
        that version (see Snapshot)."""
        require_aware(now)
        async with self._reader.connect() as conn, conn.begin():
            # Read first: every grant stamped with this version or an earlier one is committed already.
            version = await _version(conn)
            if since is None:
                in_force = await _load_grants(conn, grant_active(now))
                retired: list[Grant] = []
                keys = await _load_keys(conn, access_keys.c.revoked_at.is_(None))
            else:
                changed = grants.c.changed_in > since
                in_force = await _load_grants(conn, and_(changed, grant_active(now)))
                retired = await _load_grants(conn, and_(changed, not_(grant_active(now))))
                # Revoked keys included: the gateway drops them.
                keys = await _load_keys(
                    conn, or_(access_keys.c.changed_in > since, principals.c.changed_in > since)
                )
            cutoffs = await load_cutoffs(conn)
        return Snapshot(version, tuple(in_force), keys, cutoffs, since, tuple(retired))

    async def version(self) -> int:
        async with self._engine.connect() as conn:
            return await _version(conn)


# --- helpers ------------------------------------------------------------------------------------------


# Ids per UPDATE when stamping: far below any driver's limit on bound parameters.
_STAMP_SLICE = 500


async def revoke_in(
    conn: AsyncConnection, grant_id: str, *, now: datetime, actor: str, reason: str
) -> tuple[bool, Grant | None]:
    """Revoke a grant inside the caller's transaction: (whether this call revoked it, the grant as it is
    now; None if unknown)."""
    result = await conn.execute(
        update(grants)
        .where(grants.c.id == grant_id, grants.c.revoked_at.is_(None))
        .values(revoked_at=now, revoked_by=actor, revoke_reason=reason)
    )
    if result.rowcount:
        await bump_version(conn, [grant_id])
    row = (await conn.execute(select(grants).where(grants.c.id == grant_id))).first()
    if result.rowcount and row is not None:
        await cut_off_sessions(conn, row.principal, now)
    return bool(result.rowcount), None if row is None else grant_of_row(row)


def new_grant_id() -> str:
    return "g_" + secrets.token_urlsafe(9)  # 12 url-safe characters, 72 random bits


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            f"invalid {what} name {value!r}: 1 to 200 characters, no spaces or control characters"
        )
    return value


def actions_text(actions: Iterable[Action]) -> str:
    return ",".join(sorted(a.value for a in actions))


def grant_active(now: datetime) -> ColumnElement[bool]:
    # The same rule as Grant.is_active, in SQL; a grant suspended by an anomaly rule is out of service
    # until an approver re-confirms it.
    return and_(
        or_(grants.c.revoked_at.is_(None), grants.c.revoked_at > now),
        or_(grants.c.expires_at.is_(None), grants.c.expires_at > now),
        ~exists().where(grant_suspensions.c.grant_id == grants.c.id, grant_suspensions.c.lifted_at.is_(None)),
    )


async def bump_version(
    conn: AsyncConnection,
    grants_changed: Iterable[str] = (),
    *,
    keys_changed: Iterable[str] = (),
    principals_changed: Iterable[str] = (),
) -> None:
    """Move the store version on; stamp what this transaction changed with it.

    Every write that creates a grant or changes whether one is in force must name it here, and so must
    every write that creates or revokes a key or changes a principal's groups: gateways reload only what
    is stamped after the version they hold, so anything left out would keep its old standing there until
    the next full reload. The version row stays locked until commit, so versions are committed in order
    and a reader that sees version N sees everything stamped N or less.
    """
    await conn.execute(
        update(store_state).where(store_state.c.name == VERSION_ROW).values(value=store_state.c.value + 1)
    )
    version = await _version(conn)
    await _stamp(conn, grants.c.id, grants_changed, version)
    await _stamp(conn, access_keys.c.access_key_id, keys_changed, version)
    await _stamp(conn, principals.c.name, principals_changed, version)
    if conn.dialect.name == "postgresql":  # delivered at commit, so listeners never see a rolled-back change
        await conn.execute(text(NOTIFY_SQL))


async def _stamp(conn: AsyncConnection, key: Column[Any], ids: Iterable[str], version: int) -> None:
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), _STAMP_SLICE):
        batch = unique[start : start + _STAMP_SLICE]
        await conn.execute(update(key.table).where(key.in_(batch)).values(changed_in=version))


async def _load_grants(conn: AsyncConnection, where: ColumnElement[bool]) -> list[Grant]:
    rows = await conn.execute(select(grants).where(where).order_by(grants.c.created_at, grants.c.id))
    # Converted a slice at a time, handing the loop back in between: 100 000 rows never hold up the
    # requests this gateway is serving for more than a slice's worth.
    loaded: list[Grant] = []
    while part := rows.fetchmany(SNAPSHOT_SLICE):
        loaded.extend(grant_of_row(row) for row in part)
        await asyncio.sleep(0)
    return loaded


async def _load_keys(
    conn: AsyncConnection, where: ColumnElement[bool]
) -> tuple[tuple[AccessKey, Principal], ...]:
    rows = await conn.execute(
        select(access_keys, principals.c.groups)
        .join(principals, principals.c.name == access_keys.c.principal)
        .where(where)
        .order_by(access_keys.c.access_key_id)
    )
    return tuple((_access_key(row), Principal(row.principal, frozenset(row.groups))) for row in rows)


async def _version(conn: AsyncConnection) -> int:
    value = await conn.scalar(select(store_state.c.value).where(store_state.c.name == VERSION_ROW))
    return int(value or 0)


async def _principal_row(conn: AsyncConnection, name: str) -> Row[Any] | None:
    return (await conn.execute(select(principals).where(principals.c.name == name))).first()


def _principal(row: Row[Any]) -> Principal:
    return Principal(row.name, frozenset(row.groups))


def _access_key(row: Row[Any]) -> AccessKey:
    return AccessKey(
        access_key_id=row.access_key_id,
        principal=row.principal,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        description=row.description,
    )


@functools.lru_cache(maxsize=256)
def _stored_actions(column: str) -> frozenset[Action]:
    # A store holds a handful of distinct action lists across all its grants: parse each once and
    # share the set, rather than 100 000 equal sets on every snapshot.
    return parse_actions(column)


def budget_values(budget: Budget | None) -> dict[str, Any]:
    """A grant's budget as its columns."""
    if budget is None:
        return {"max_bytes": None, "max_objects": None, "single_use": False}
    return {"max_bytes": budget.max_bytes, "max_objects": budget.max_objects, "single_use": budget.single_use}


def _budget_of(m: Any) -> Budget | None:
    if m["max_bytes"] is None and m["max_objects"] is None and not m["single_use"]:
        return None  # most grants: no Budget object built per row of a snapshot
    return Budget(m["max_bytes"], m["max_objects"], bool(m["single_use"]))


def grant_of_row(row: Row[Any]) -> Grant:
    # By name through the mapping: a third of the cost of row attributes, which a snapshot of
    # 100 000 grants feels.
    m = row._mapping
    return Grant(
        id=m["id"],
        principal=m["principal"],
        bucket=m["bucket"],
        prefix=m["prefix"],
        actions=_stored_actions(m["actions"]),
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        source=m["source"],
        request_id=m["request_id"],
        extra={key: m[key] for key in ("created_by", "revoked_by", "revoke_reason")},
        starts_at=m["starts_at"],
        budget=_budget_of(m),
        spent=m["spent_at"] is not None,
        approvals=m["approvals"],
        terms=TermsAcceptance.from_dict(m["terms_accepted"]),
    )
