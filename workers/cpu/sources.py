"""Where a job's audio comes from: a local path inside the allowed roots, or an object of an allowed S3 bucket.

Workers read whatever a producer names with their own rights, so the
deployment fences them in: the allowed roots (MURMUR_ALLOWED_ROOTS; none allows
any local path) and the allowed buckets (MURMUR_S3_ALLOW, "bucket" or
"bucket/prefix"; None allows any), passed in by the caller. An object that is
missing and one the workers may not read are refused alike, so a job cannot
learn which objects exist.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from murmur.workers.errors import AudioError, ForbiddenError, LimitError, SourceError


def check_source(source: str, allowed_roots: tuple[Path, ...] = (), s3_allow: tuple[str, ...] | None = None) -> None:
    """Reject what a worker must not or cannot read, before any work is queued.

    Empty `allowed_roots` allows any absolute path; `s3_allow` None, any bucket.
    """
    if not isinstance(source, str) or not source:
        raise AudioError("the job names no source: give a file path or an s3:// URI")
    if "\x00" in source:
        raise AudioError("the source contains a NUL byte: give a file path or an s3:// URI")
    if source.startswith("s3://"):
        bucket, key = _s3_object(source)
        if s3_allow is not None and not any(_within(bucket, key, entry) for entry in s3_allow):
            raise ForbiddenError(f"{source} is outside MURMUR_S3_ALLOW")
        return
    if "://" in source:
        raise AudioError(f"unsupported source {source!r}: give a local file path or an s3:// URI")
    path = Path(source)
    if not path.is_absolute():
        raise AudioError(f"source path {source!r} is relative: workers need an absolute path")
    resolved = path.resolve()
    if allowed_roots and not any(resolved.is_relative_to(root) for root in allowed_roots):
        raise ForbiddenError(f"{source} is outside MURMUR_ALLOWED_ROOTS")  # where the roots are is the server's own


@contextmanager
def local_file(source: str, allowed_roots: tuple[Path, ...] = (), max_bytes: int | None = None,
               s3_allow: tuple[str, ...] | None = None) -> Iterator[str]:
    """A path PyAV can open: the file itself (resolved, as it was checked: a link swapped in after the
    check is not followed), or a temporary download of an s3:// object; at most `max_bytes`
    (MURMUR_MAX_BYTES) either way."""
    check_source(source, allowed_roots, s3_allow)
    limit = max_bytes if max_bytes is not None else float("inf")
    if not source.startswith("s3://"):
        path = Path(source).resolve()
        if path.is_file() and path.stat().st_size > limit:
            raise LimitError(f"{path.name} is larger than the limit of {_size(limit)} (MURMUR_MAX_BYTES)")
        yield str(path)
        return
    bucket, key = _s3_object(source)
    try:
        import boto3
    except ImportError:
        raise SourceError("reading s3:// sources needs boto3: pip install 'murmur[s3]'") from None
    with tempfile.NamedTemporaryFile(suffix=Path(key).suffix) as tmp:
        try:
            client = boto3.client("s3")
            if client.head_object(Bucket=bucket, Key=key)["ContentLength"] > limit:
                raise _TooLarge
            client.download_fileobj(bucket, key, _Capped(tmp, limit))
        except _TooLarge:
            raise LimitError(f"{source} is larger than the limit of {_size(limit)} (MURMUR_MAX_BYTES)") from None
        except Exception as exc:  # botocore raises many kinds; the job needs the reason, not the type
            if _error_code(exc) in _MISSING_OR_DENIED:
                raise SourceError(f"cannot read {source}: it does not exist, or the workers may not read it") from None
            raise SourceError(f"cannot download {source}: {exc}") from None
        tmp.flush()
        yield tmp.name


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URI; the key may be empty (a prefix). ValueError if it is not one."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError("an s3://bucket/key URI")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError("an s3://bucket/key URI")
    return bucket, key


def _within(bucket: str, key: str, entry: str) -> bool:
    """Whether s3://bucket/key is inside a MURMUR_S3_ALLOW entry: the same bucket, and the key under its prefix."""
    allowed_bucket, _, prefix = entry.partition("/")
    return bucket == allowed_bucket and key.startswith(prefix)


# S3's answers for an object that is not there and one that may not be read: told apart, they would
# let a job probe which objects exist
_MISSING_OR_DENIED = {"404", "NoSuchKey", "NoSuchBucket", "NotFound", "403", "AccessDenied", "Forbidden"}


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    return (response or {}).get("Error", {}).get("Code") if isinstance(response, dict) else None


class _TooLarge(Exception):
    pass


class _Capped:
    """A file that refuses to grow past `limit` bytes: the object may change after its size was read."""

    def __init__(self, file, limit: float) -> None:
        self._file, self._limit, self._written = file, limit, 0

    def write(self, data: bytes) -> int:
        self._written += len(data)
        if self._written > self._limit:
            raise _TooLarge
        return self._file.write(data)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.4g} {unit}"
        n /= 1024
    return f"{n} B"


def _s3_object(source: str) -> tuple[str, str]:
    try:
        bucket, key = split_s3(source)
    except ValueError:
        key = ""
    if not key:
        raise AudioError(f"invalid S3 URI {source!r}: use s3://bucket/key")
    return bucket, key
