"""Ended jobs are announced with their state: a waiting request learns it without a query

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_FUNCTION = """
    CREATE OR REPLACE FUNCTION murmur_job_ended() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.status IN ('done', 'failed') AND OLD.status IS DISTINCT FROM NEW.status THEN
            PERFORM pg_notify('murmur_job_ended', {payload});
        END IF;
        RETURN NEW;
    END $$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FUNCTION.format(payload="NEW.id || ' ' || NEW.status"))  # "<job id> <state>"


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FUNCTION.format(payload="NEW.id"))
