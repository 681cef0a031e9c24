"""The HTTP API: its keys (hashed) and the key that owns each job

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("max_jobs", sa.Integer()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner", sa.String(32)))
    op.create_index("ix_jobs_owner", "jobs", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("owner")
    op.drop_table("api_keys")
