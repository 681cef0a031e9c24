"""What goes with a deleted job (its upload, its transcript files in S3), and pruning the jobs that ended long ago.

Every way a job is removed comes here: `DELETE /v1/jobs/{id}`, `murmur prune`,
the reconciler's and `murmur serve --embedded`'s pruning past MURMUR_RETENTION.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from murmur.db import queries
from murmur.settings import Settings
from murmur.tasks.outputs.s3 import delete_outputs
from murmur.tasks.outputs.uploads import discard_uploads

log = logging.getLogger("murmur")


def forget(settings: Settings, removed: Sequence[tuple[str, str]]) -> None:
    """Remove what the deleted jobs (id, source) left outside the database."""
    discard_uploads(settings, [source for _, source in removed])
    if settings.output_uri and removed:
        try:
            delete_outputs(settings.output_uri, [job_id for job_id, _ in removed])
        except Exception as exc:  # noqa: BLE001 - the rows are gone either way; say what was left
            log.warning("could not delete the transcript files of %d deleted job(s) from %s: %s", len(removed),
                        settings.output_uri, exc)


def prune(db: sessionmaker[Session], settings: Settings, older_than: timedelta) -> int:
    """Delete the jobs that ended more than `older_than` ago, with everything they left; how many went."""
    removed = queries.prune(db, older_than)
    forget(settings, removed)
    return len(removed)
