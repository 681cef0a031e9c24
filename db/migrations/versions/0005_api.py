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
    if op.get_bind().dialect.name == "postgresql":
        # `murmur serve` LISTENs: a waiting request hears of its job's end with the commit, with no polling
        op.execute("""
            CREATE FUNCTION murmur_job_ended() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.status IN ('done', 'failed') AND OLD.status IS DISTINCT FROM NEW.status THEN
                    PERFORM pg_notify('murmur_job_ended', NEW.id);
                END IF;
                RETURN NEW;
            END $$""")
        op.execute("CREATE TRIGGER murmur_job_ended AFTER UPDATE OF status ON jobs "
                   "FOR EACH ROW EXECUTE FUNCTION murmur_job_ended()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS murmur_job_ended ON jobs")
        op.execute("DROP FUNCTION IF EXISTS murmur_job_ended()")
    op.drop_index("ix_jobs_owner", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("owner")
    op.drop_table("api_keys")
