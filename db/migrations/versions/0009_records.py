"""A year of records costs nothing: what the fleet asks on every tick reads a few thousand rows, not a million

Partial indexes on the jobs still queued or running, the chunks still pending, the ended jobs by when
they ended and the webhooks still to send; the key's jobs by age for paging; and on Postgres the
totals the exporter serves (audio done, failures by class, stage times, re-drives), kept by a trigger
as jobs end instead of summed over every row on each scrape.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UNENDED = "status IN ('queued', 'running')"
ENDED = "status IN ('done', 'failed')"
STAGES = ("prepare", "detect", "decode")
BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))  # tasks.operations.exporter's
FAILURES = ("input", "source", "forbidden", "limit", "gave_up", "cancelled", "internal")

_TOTALS = """
CREATE OR REPLACE FUNCTION murmur_job_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        IF NEW.status = 'done' THEN
            UPDATE job_totals SET value = value + CASE name
                    WHEN 'audio_done' THEN coalesce(NEW.duration, 0)
                    WHEN 'stage:prepare:sum' THEN NEW.prepare_seconds
                    WHEN 'stage:detect:sum' THEN NEW.detect_seconds
                    WHEN 'stage:decode:sum' THEN NEW.decode_seconds
                    ELSE 1 END
                WHERE name IN ('audio_done', 'done', 'stage:prepare:sum', 'stage:detect:sum', 'stage:decode:sum');
            UPDATE stage_buckets SET count = count + 1
                WHERE (stage = 'prepare' AND le >= NEW.prepare_seconds) OR (stage = 'detect' AND le >= NEW.detect_seconds)
                   OR (stage = 'decode' AND le >= NEW.decode_seconds);
        ELSIF NEW.status = 'failed' THEN
            UPDATE job_totals SET value = value + 1 WHERE name = 'failed:' || coalesce(NEW.failure, 'internal');
        END IF;
    END IF;
    IF NEW.attempts > OLD.attempts THEN
        UPDATE job_totals SET value = value + (NEW.attempts - OLD.attempts) WHERE name = 'redrives';
    END IF;
    RETURN NEW;
END $$"""


_CHUNK_TOTALS = """
CREATE OR REPLACE FUNCTION murmur_chunk_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.attempts > OLD.attempts THEN
        UPDATE job_totals SET value = value + (NEW.attempts - OLD.attempts) WHERE name = 'redrives';
    END IF;
    RETURN NEW;
END $$"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    where = {"postgresql_where": sa.text(UNENDED), "sqlite_where": sa.text(UNENDED)}
    op.create_index("ix_jobs_unended", "jobs", ["owner", "created_at"], **where)
    op.create_index("ix_jobs_ended", "jobs", ["finished_at"], postgresql_where=sa.text(ENDED), sqlite_where=sa.text(ENDED))
    pending_hook = "callback_state = 'pending'"
    op.create_index("ix_jobs_hooks_due", "jobs", ["progress_at"], postgresql_where=sa.text(pending_hook),
                    sqlite_where=sa.text(pending_hook))
    op.create_index("ix_jobs_owner_created", "jobs", ["owner", "created_at", "id"])
    op.drop_index("ix_jobs_owner", "jobs")
    op.drop_index("ix_jobs_progress_at", "jobs")
    pending = "status = 'pending'"
    op.create_index("ix_chunks_pending", "chunks", ["job_id"], postgresql_where=sa.text(pending), sqlite_where=sa.text(pending))
    op.create_table("job_totals", sa.Column("name", sa.String(64), primary_key=True),
                    sa.Column("value", sa.Float(), nullable=False))
    op.create_table("stage_buckets", sa.Column("stage", sa.String(16), primary_key=True),
                    sa.Column("le", sa.Float(), primary_key=True), sa.Column("count", sa.Integer(), nullable=False))
    if not postgres:
        return  # the exporter, which reads the totals, serves a fleet: Postgres
    # the totals of the jobs that ended before this revision, once
    op.execute("INSERT INTO job_totals (name, value) SELECT 'audio_done', coalesce(sum(duration), 0) FROM jobs WHERE status = 'done'")
    op.execute("INSERT INTO job_totals (name, value) SELECT 'done', count(*) FROM jobs WHERE status = 'done'")
    for stage in STAGES:
        op.execute(f"INSERT INTO job_totals (name, value) SELECT 'stage:{stage}:sum', coalesce(sum({stage}_seconds), 0) "
                   "FROM jobs WHERE status = 'done'")
        for le in BUCKETS:
            bound = "'Infinity'" if le == float("inf") else repr(float(le))
            op.execute(f"INSERT INTO stage_buckets (stage, le, count) SELECT '{stage}', {bound}, count(*) FROM jobs "
                       f"WHERE status = 'done' AND {stage}_seconds <= {bound}")
    for failure in FAILURES:
        op.execute(f"INSERT INTO job_totals (name, value) SELECT 'failed:{failure}', count(*) FROM jobs "
                   f"WHERE status = 'failed' AND coalesce(failure, 'internal') = '{failure}'")
    op.execute("INSERT INTO job_totals (name, value) SELECT 'redrives', (SELECT coalesce(sum(attempts), 0) FROM jobs) "
               "+ (SELECT coalesce(sum(attempts), 0) FROM chunks)")
    op.execute(_TOTALS)
    op.execute(_CHUNK_TOTALS)
    op.execute("CREATE TRIGGER murmur_job_totals AFTER UPDATE OF status, attempts ON jobs "
               "FOR EACH ROW EXECUTE FUNCTION murmur_job_totals()")
    op.execute("CREATE TRIGGER murmur_chunk_totals AFTER UPDATE OF attempts ON chunks "
               "FOR EACH ROW EXECUTE FUNCTION murmur_chunk_totals()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS murmur_chunk_totals ON chunks")
        op.execute("DROP TRIGGER IF EXISTS murmur_job_totals ON jobs")
        op.execute("DROP FUNCTION IF EXISTS murmur_job_totals()")
        op.execute("DROP FUNCTION IF EXISTS murmur_chunk_totals()")
    op.drop_table("stage_buckets")
    op.drop_table("job_totals")
    op.drop_index("ix_chunks_pending", "chunks")
    op.create_index("ix_jobs_progress_at", "jobs", ["progress_at"])
    op.create_index("ix_jobs_owner", "jobs", ["owner"])
    op.drop_index("ix_jobs_owner_created", "jobs")
    op.drop_index("ix_jobs_hooks_due", "jobs")
    op.drop_index("ix_jobs_ended", "jobs")
    op.drop_index("ix_jobs_unended", "jobs")
