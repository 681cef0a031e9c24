"""A failed job records the class of its failure, so nothing parses its reason back

Revision ID: 0007
Revises: 0006
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# How the exporter sorted reasons before this revision, kept here only to classify the rows
# failed before it: from now on the code that fails a job says the class.
_CLASSES_BEFORE = (
    ("gave_up", r"MURMUR_MAX_ATTEMPTS"),
    ("limit", r"MURMUR_MAX_DURATION|MURMUR_MAX_BYTES|longer than|larger than"),
    ("forbidden", r"MURMUR_ALLOWED_ROOTS|MURMUR_MODEL_DIRS|not allowed|not a public address"),
    ("source", r"no such file|not found|cannot (read|open|download|reach)|denied|s3://"),
    ("input", r"not a readable audio|invalid|unknown (option|language|model)|must be|no audio|not a|expected"),
)


def _class_before(error: str | None) -> str:
    if error == "cancelled":
        return "cancelled"
    for name, pattern in _CLASSES_BEFORE:
        if error and re.search(pattern, error, flags=re.IGNORECASE):
            return name
    return "internal"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("failure", sa.String(16), nullable=True))
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("status", sa.String), sa.column("error", sa.Text),
                    sa.column("failure", sa.String))
    bind = op.get_bind()
    failed = bind.execute(sa.select(jobs.c.id, jobs.c.error).where(jobs.c.status == "failed")).all()
    for job_id, error in failed:
        bind.execute(jobs.update().where(jobs.c.id == job_id).values(failure=_class_before(error)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("failure")
