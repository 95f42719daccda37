"""Grant change stamps: the store version that last changed each grant, so gateways reload only changes.

Existing grants get 0: a gateway's first load reads every grant in force anyway.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("changed_in", sa.BigInteger(), nullable=False, server_default="0"))
        batch.create_index("ix_grants_changed_in", ["changed_in"])


def downgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.drop_index("ix_grants_changed_in")
        batch.drop_column("changed_in")
