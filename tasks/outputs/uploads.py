"""Files uploaded through the HTTP API: where they go, and their removal with their job.

An upload is stored as `<MURMUR_UPLOAD_DIR>/<job id>.<suffix>`, a directory the
workers read like any other local source; only files there are ever deleted. A
job's known speakers' reference clips, sent with the upload, lie beside it as
`<job id>-ref<n>.<suffix>` and go with it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

from murmur.settings import Settings

log = logging.getLogger("murmur")


def upload_path(settings: Settings, job_id: str, filename: str | None) -> Path:
    """The upload's path; the client's file name only lends its suffix (decoders sniff the format anyway)."""
    suffix = Path(filename or "").suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
        suffix = ".bin"
    return settings.uploads / f"{job_id}{suffix}"


def reference_path(settings: Settings, job_id: str, n: int, media_type: str) -> Path:
    """Where the job's n-th reference clip goes: beside its upload, so that it goes when the upload goes."""
    subtype = media_type.partition("/")[2].lower()
    suffix = {"mpeg": ".mp3", "x-wav": ".wav", "wave": ".wav", "mp4": ".m4a"}.get(subtype, f".{subtype}")
    if not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
        suffix = ".bin"
    return settings.uploads / f"{job_id}-ref{n}{suffix}"


def is_upload(settings: Settings, source: str) -> bool:
    path = Path(source)
    return path.is_absolute() and path.parent == settings.uploads


def uploaded_file(settings: Settings, source: str) -> Path | None:
    """The job's uploaded file, if its source is one that is still there (to play it back); else None."""
    path = Path(source)
    return path if is_upload(settings, source) and path.is_file() and not path.is_symlink() else None


def discard_uploads(settings: Settings, sources: Iterable[str]) -> int:
    """Delete the sources that are uploads; how many files went."""
    removed = 0
    for source in sources:
        if is_upload(settings, source):
            path = Path(source)
            for file in [path, *path.parent.glob(f"{path.stem}-ref*")]:
                try:
                    file.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning("could not delete the upload %s: %s", file, exc)
    return removed
