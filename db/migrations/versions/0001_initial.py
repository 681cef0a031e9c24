"""jobs, chunks, segments

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("language", sa.String(16)),
        sa.Column("language_probability", sa.Float()),
        sa.Column("spoken_languages", sa.JSON()),
        sa.Column("duration", sa.Float()),
        sa.Column("n_chunks", sa.Integer()),
        sa.Column("chunks_done", sa.Integer(), nullable=False),
        sa.Column("prepare_seconds", sa.Float(), nullable=False),
        sa.Column("detect_seconds", sa.Float(), nullable=False),
        sa.Column("decode_seconds", sa.Float(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "chunks",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("idx", sa.Integer(), primary_key=True),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("spans", sa.JSON(), nullable=False),
        sa.Column("language", sa.String(16)),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("chunk_idx", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("language", sa.String(16)),
        sa.Column("avg_logprob", sa.Float(), nullable=False),
        sa.Column("no_speech_prob", sa.Float(), nullable=False),
        sa.Column("compression_ratio", sa.Float(), nullable=False),
        sa.Column("words", sa.JSON()),
        sa.UniqueConstraint("job_id", "chunk_idx", "idx", name="uq_segment_position"),
    )
    op.create_index("ix_segments_job_id", "segments", ["job_id"])


def downgrade() -> None:
    op.drop_table("segments")
    op.drop_table("chunks")
    op.drop_index("ix_jobs_status", "jobs")
    op.drop_table("jobs")
