"""The job's webhook: its URL checked at submit, one POST when the job ends."""

from __future__ import annotations

import json
import logging
import urllib.request

from murmur.db.models import Job
from murmur.workers.errors import MurmurError

log = logging.getLogger("murmur")


def check_callback_url(url) -> None:
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise MurmurError(f"invalid callback URL {url!r}: use an http:// or https:// URL")


def notify(job: Job | None) -> None:
    """POST the job's outcome to its callback URL; a dead hook never fails the job."""
    if not job or not job.callback_url:
        return
    body = json.dumps({"job_id": job.id, "status": job.status, "error": job.error, "language": job.language,
                       "duration": job.duration, "n_chunks": job.n_chunks}).encode()
    request = urllib.request.Request(job.callback_url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except Exception as exc:  # noqa: BLE001 - any failure of someone else's server
        log.warning("job %s: callback to %s failed: %s", job.id, job.callback_url, exc)
