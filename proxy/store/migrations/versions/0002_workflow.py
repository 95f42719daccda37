"""Access requests, their approvals, API tokens and sent expiry notices.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_requests",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("requester", sa.String(200), nullable=False),
        sa.Column("resource_name", sa.String(64), nullable=False),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("actions", sa.String(100), nullable=False),
        sa.Column("duration_seconds", sa.BigInteger(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approvals_required", sa.Integer(), nullable=False),
        sa.Column("break_glass", sa.Boolean(), nullable=False),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_comment", sa.Text(), nullable=False),
        sa.Column("grant_id", sa.String(32), nullable=True),
        sa.Column("source_cidrs", sa.JSON(), nullable=False),
        sa.Column("reviewed_by", sa.String(200), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_comment", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_access_requests"),
    )
    op.create_index("ix_access_requests_status", "access_requests", ["status"])
    op.create_index("ix_access_requests_requester", "access_requests", ["requester"])
    op.create_table(
        "request_approvals",
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("approver", sa.String(200), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "approver", name="pk_request_approvals"),
        sa.ForeignKeyConstraint(
            ["request_id"], ["access_requests.id"], name="fk_request_approvals_request_id_access_requests"
        ),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.ForeignKeyConstraint(
            ["principal"], ["principals.name"], name="fk_api_tokens_principal_principals"
        ),
    )
    op.create_index("ix_api_tokens_principal", "api_tokens", ["principal"])
    op.create_table(
        "grant_notices",
        sa.Column("grant_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("grant_id", "kind", name="pk_grant_notices"),
    )


def downgrade() -> None:
    op.drop_table("grant_notices")
    op.drop_index("ix_api_tokens_principal", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("request_approvals")
    op.drop_index("ix_access_requests_requester", table_name="access_requests")
    op.drop_index("ix_access_requests_status", table_name="access_requests")
    op.drop_table("access_requests")
