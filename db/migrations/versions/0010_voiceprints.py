"""Voiceprints: a diarized job's speaker embeddings (from prepare) and its speaker turns (from assembly)

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "voiceprints",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("prints", sa.LargeBinary(), nullable=False),
        sa.Column("turns", sa.JSON(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("voiceprints")
