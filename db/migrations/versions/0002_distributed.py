"""the distributed pipeline: a job's webhook and priority, the worker that decoded a chunk

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("callback_url", sa.Text()))
        batch.add_column(sa.Column("priority", sa.Integer()))
    with op.batch_alter_table("chunks") as batch:
        batch.add_column(sa.Column("worker", sa.String(255)))


def downgrade() -> None:
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("worker")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("priority")
        batch.drop_column("callback_url")
