"""Initial schema: principals, access keys, grants and the store version row.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_principals"),
    )
    op.create_table(
        "access_keys",
        sa.Column("access_key_id", sa.String(32), nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("access_key_id", name="pk_access_keys"),
        sa.ForeignKeyConstraint(
            ["principal"], ["principals.name"], name="fk_access_keys_principal_principals"
        ),
    )
    op.create_index("ix_access_keys_principal", "access_keys", ["principal"])
    op.create_table(
        "grants",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("actions", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(200), nullable=False),
        sa.Column("revoke_reason", sa.Text(), nullable=False),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_grants"),
    )
    op.create_index("ix_grants_principal", "grants", ["principal"])
    store_state = op.create_table(
        "store_state",
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_store_state"),
    )
    op.bulk_insert(store_state, [{"name": "version", "value": 0}])


def downgrade() -> None:
    op.drop_table("store_state")
    op.drop_index("ix_grants_principal", table_name="grants")
    op.drop_table("grants")
    op.drop_index("ix_access_keys_principal", table_name="access_keys")
    op.drop_table("access_keys")
    op.drop_table("principals")
