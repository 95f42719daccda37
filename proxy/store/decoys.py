"""The record of planted decoys: one row per object `grantgate decoys plant` wrote."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select

from proxy.store.engine import require_aware, write_engine
from proxy.store.schema import decoys
from proxy.store.sql import SqlStore


@dataclass(frozen=True, slots=True)
class PlantedDecoy:
    bucket: str
    key: str
    resource: str
    format: str
    size: int
    sha256: str
    planted_at: datetime
    planted_by: str

    def as_dict(self) -> dict[str, object]:
        return {
            "uri": f"s3://{self.bucket}/{self.key}",
            "resource": self.resource,
            "format": self.format,
            "size": self.size,
            "sha256": self.sha256,
            "planted_at": self.planted_at.isoformat(),
            "planted_by": self.planted_by,
        }


class DecoyStore:
    def __init__(self, store: SqlStore) -> None:
        self._engine = store.engine
        self._writer = write_engine(store.engine)

    async def record(self, planted: PlantedDecoy) -> None:
        """Record (or re-record, when planted again) one decoy."""
        require_aware(planted.planted_at)
        async with self._writer.begin() as conn:
            await conn.execute(
                delete(decoys).where(decoys.c.bucket == planted.bucket, decoys.c.key == planted.key)
            )
            await conn.execute(insert(decoys).values(**_columns(planted)))

    async def list(self) -> list[PlantedDecoy]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(decoys).order_by(decoys.c.bucket, decoys.c.key))
            return [PlantedDecoy(**row._mapping) for row in rows]


def _columns(planted: PlantedDecoy) -> dict[str, object]:
    return {name: getattr(planted, name) for name in PlantedDecoy.__slots__}
