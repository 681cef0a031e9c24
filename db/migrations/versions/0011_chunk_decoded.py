"""Decoded chunks are announced: a job's event stream releases their segments without waiting for its next read

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION murmur_chunk_decoded() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.status = 'decoded' AND OLD.status IS DISTINCT FROM NEW.status THEN
                    PERFORM pg_notify('murmur_chunk_decoded', NEW.job_id);
                END IF;
                RETURN NEW;
            END $$""")
        op.execute("CREATE TRIGGER murmur_chunk_decoded AFTER UPDATE OF status ON chunks "
                   "FOR EACH ROW EXECUTE FUNCTION murmur_chunk_decoded()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS murmur_chunk_decoded ON chunks")
        op.execute("DROP FUNCTION IF EXISTS murmur_chunk_decoded()")
