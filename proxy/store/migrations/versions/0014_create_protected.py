"""Protected resources: a grant records how many distinct people approved the request it came from, so
the gateway can tell a grant that may overwrite or delete under a protected resource (two or more); a
request records that it asks for that, for approvers' cards and pages.

(The `create` action needs no schema change: actions are stored as text.)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("approvals", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("access_requests") as batch:
        batch.add_column(sa.Column("protected", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("access_requests") as batch:
        batch.drop_column("protected")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("approvals")
