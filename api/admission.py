"""Admission: what a request must pass before murmur takes its bytes or makes a job of it.

From where: a keyless server (loopback only) answers only loopback host names,
so a web page cannot reach it through a DNS name rebound to 127.0.0.1, and no
server takes a browser's cross-site request, so a page cannot submit jobs in
its visitor's name. How much: a JSON body is capped, an upload that sends
nothing for MURMUR_UPLOAD_TIMEOUT is cut off, a key holds no more uploads and
jobs together than its job limit, nor more than a few event streams, and an
upload needs room on the disk. Sent before: a request with an `Idempotency-Key`
finds the job the first one made.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import Headers

from murmur.api.errors import ApiError, bad_request

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]"}
MAX_JSON_BYTES = 64 * 1024  # a JSON job names its options and an s3:// source: a few hundred bytes
MAX_IDEMPOTENCY_KEY = 255
MAX_STREAMS = 8  # event streams one key may hold open at once


def check_origin(headers: Headers, keyless: bool) -> None:
    """403 for a request from another site's page; on a keyless server, also for a host name that is
    not loopback's (a DNS name rebound to 127.0.0.1 would let any page read every transcript)."""
    host = headers.get("host", "")
    if keyless and _hostname(host) not in LOOPBACK_HOSTS:
        raise ApiError(403, "this server has no API key and answers only as localhost, 127.0.0.1 or [::1]",
                       "permission_error", "host_not_allowed")
    origin = headers.get("origin")
    cross = headers.get("sec-fetch-site") == "cross-site" or (
        origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host.lower()))
    if cross:
        raise ApiError(403, "requests from another site's pages are refused: call the API from a program, "
                       "or from murmur's own page", "permission_error", "cross_site")


def _hostname(host: str) -> str:
    """The name in a Host header, without its port."""
    host = host.strip().lower()
    return host[: host.index("]") + 1] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]


async def json_body(stream: AsyncIterator[bytes], declared: str | None) -> bytes:
    """The whole JSON body, refused (413) as soon as it is known to pass MAX_JSON_BYTES: by its declared
    length before a byte is read, else as it arrives; it is never held past the cap."""
    if declared and declared.isdigit() and int(declared) > MAX_JSON_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise _too_large()
    return bytes(body)


def _too_large() -> ApiError:
    return ApiError(413, f"a JSON job is at most {MAX_JSON_BYTES} bytes: upload audio as multipart/form-data",
                    code="body_too_large")


async def with_deadline(chunks: AsyncIterator[bytes], idle_seconds: float) -> AsyncIterator[bytes]:
    """The body's chunks, cut off (408) when none arrives for `idle_seconds`: a client that stalls an
    upload does not hold a connection and a half-written file for ever."""
    iterator = chunks.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), idle_seconds)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise ApiError(408, f"the upload sent nothing for {idle_seconds:g} s (MURMUR_UPLOAD_TIMEOUT)",
                           code="upload_timeout") from None
        yield chunk


def check_room(directory: Path, needed: int, keep_free: int) -> None:
    """507 unless the disk holding `directory` has room for `needed` bytes with `keep_free` to spare."""
    if shutil.disk_usage(directory).free - needed < keep_free:
        raise ApiError(507, "the server has no room for this upload now: try again later",
                       "server_error", "insufficient_storage")


class Slots:
    """What each key holds open in this server (uploads being received, event streams), counted so that
    one key cannot take more than its share; the event loop's thread is the only one to touch them."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str | None], int] = {}

    def take(self, what: str, owner: str | None, limit: int, busy: int = 0) -> Callable[[], None]:
        """One more `what` for `owner`, or 429 when `busy` (held elsewhere: its queued and running jobs)
        and those held here already reach `limit`; call what it returns to give it back."""
        key = (what, owner)
        held = self._held.get(key, 0)
        if busy + held >= limit:
            raise ApiError(429, f"this key holds {busy + held} {what} at once (at most {limit}): wait for one to end",
                           "rate_limit_exceeded", f"too_many_{what.replace(' ', '_')}")
        self._held[key] = held + 1
        given = []

        def give_back() -> None:  # once, however many ways the holder ends
            if given:
                return
            given.append(True)
            self._held[key] -= 1
            if not self._held[key]:
                del self._held[key]

        return give_back

    @contextmanager
    def hold(self, what: str, owner: str | None, limit: int, busy: int = 0) -> Iterator[None]:
        give_back = self.take(what, owner, limit, busy)
        try:
            yield
        finally:
            give_back()


def request_key(headers: Headers, owner: str | None) -> str | None:
    """The job's record of an `Idempotency-Key` header, per key (400 for one that is too long to keep)."""
    key = headers.get("idempotency-key")
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise bad_request(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters", "invalid_idempotency_key")
    return f"{owner or '-'}:{key}"
