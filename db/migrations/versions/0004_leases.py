"""Postgres as the record: leases, attempts, progress times and the webhook's state

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("progress_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("lease_worker", sa.String(255)))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("callback_state", sa.String(16)))
        batch.add_column(sa.Column("callback_attempts", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_jobs_progress_at", "jobs", ["progress_at"])
    with op.batch_alter_table("chunks") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("lease_worker", sa.String(255)))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("chunks") as batch:
        for column in ("lease_until", "lease_worker", "attempts"):
            batch.drop_column(column)
    op.drop_index("ix_jobs_progress_at", "jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in ("callback_attempts", "callback_state", "lease_until", "lease_worker", "progress_at", "attempts"):
            batch.drop_column(column)
