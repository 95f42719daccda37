"""Where each access request's Slack message lives, in the store every gateway shares.

The gateway that posts a request's message is rarely the one that decides it: an approval arrives at
whichever replica the load balancer picks, from Slack, the web pages, the API or the CLI, perhaps after
a restart. Kept in one process's memory, the message would keep offering its buttons after the decision.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select

from proxy.store.engine import insert_ignoring_conflict, write_engine
from proxy.store.schema import slack_messages
from proxy.store.sql import SqlStore


class SlackMessages:
    def __init__(self, store: SqlStore) -> None:
        self._engine = store.engine
        self._writer = write_engine(store.engine)

    async def remember(self, request_id: str, channel: str, ts: str) -> None:
        """Record where the request's message is; the first place recorded stays."""
        async with self._writer.begin() as conn:
            await conn.execute(
                insert_ignoring_conflict(conn, slack_messages, "request_id").values(
                    request_id=request_id, channel=channel, ts=ts, posted_at=datetime.now(UTC)
                )
            )

    async def find(self, request_id: str) -> tuple[str, str] | None:
        """(channel, ts) of the request's message, or None if none was posted (or it is settled)."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(slack_messages.c.channel, slack_messages.c.ts).where(
                        slack_messages.c.request_id == request_id
                    )
                )
            ).first()
        return None if row is None else (row.channel, row.ts)

    async def forget(self, request_id: str) -> None:
        """The request is settled and its message says so for good: nothing will update it again."""
        async with self._writer.begin() as conn:
            await conn.execute(delete(slack_messages).where(slack_messages.c.request_id == request_id))
