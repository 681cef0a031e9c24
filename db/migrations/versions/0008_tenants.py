"""Tenants: a retried submission finds its job (request_key), a key's own webhook secret and the most urgent priority it may ask

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("request_key", sa.String(300), nullable=True))
    op.create_index("uq_jobs_request_key", "jobs", ["request_key"], unique=True)
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.String(64), nullable=True))
        batch.add_column(sa.Column("top_priority", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("top_priority")
        batch.drop_column("webhook_secret")
    op.drop_index("uq_jobs_request_key", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("request_key")
